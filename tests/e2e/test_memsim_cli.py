"""memsim up -d, cat, status, down: as a user types them."""

from __future__ import annotations

import signal
import time

from tests.e2e.harness import Cli

# x86_32 with 1 GiB: DMA 0-16 MiB is 4 blocks of order 10, Normal 16-896 MiB is
# 220, HighMem 896-1024 MiB is 32; nothing else free. Kernel format, byte for byte.
BOOT_BUDDYINFO = (
    "Node 0, zone      DMA" + "      0" * 10 + "      4 \n"
    "Node 0, zone   Normal" + "      0" * 10 + "    220 \n"
    "Node 0, zone  HighMem" + "      0" * 10 + "     32 \n"
)


def test_up_cat_status_down_leaves_nothing_behind(cli: Cli) -> None:
    up = cli.run("up", "-d", "--ephemeral-ports")
    assert up.returncode == 0, up.stderr
    assert "x86_32 (1G, 4K pages, MAX_ORDER 11) is up" in up.stdout
    pids = cli.recorded_pids()
    assert len(pids) == 1
    assert all(cli.pid_alive(p) for p in pids)

    cat = cli.run("cat", "/proc/buddyinfo")
    assert cat.returncode == 0, cat.stderr
    assert cat.stdout == BOOT_BUDDYINFO

    status = cli.run("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "buddy" in status.stdout
    assert "SERVING" in status.stdout

    extfrag = cli.run("cat", "/sys/kernel/debug/extfrag/extfrag_index")
    assert extfrag.returncode == 0
    assert extfrag.stdout.splitlines()[0] == "Node 0, zone      DMA" + " -1.000" * 11 + " "

    down = cli.run("down")
    assert down.returncode == 0, down.stderr
    assert f"buddy: stopped pid {pids[0]}" in down.stdout
    assert not any(cli.pid_alive(p) for p in pids)
    assert not (cli.run_dir / "machine.json").exists()

    after = cli.run("cat", "/proc/buddyinfo")
    assert after.returncode == 1
    assert "no machine is running" in after.stderr


def test_profile_options_change_the_machine(cli: Cli) -> None:
    up = cli.run("up", "-d", "--ephemeral-ports", "--mem", "64M", "--max-order", "5")
    assert up.returncode == 0, up.stderr
    try:
        cat = cli.run("cat", "/proc/buddyinfo")
        # 64 MiB: DMA 4096 pages and Normal 12288 pages in order-4 blocks (64 pages);
        # no HighMem zone at all.
        assert cat.stdout == (
            "Node 0, zone      DMA" + "      0" * 4 + "    256 \n"
            "Node 0, zone   Normal" + "      0" * 4 + "    768 \n"
        )
    finally:
        assert cli.run("down").returncode == 0


def test_second_up_is_refused_while_one_runs(cli: Cli) -> None:
    assert cli.run("up", "-d", "--ephemeral-ports").returncode == 0
    try:
        pids = cli.recorded_pids()
        again = cli.run("up", "-d", "--ephemeral-ports")
        assert again.returncode == 1
        assert "already running" in again.stderr
        assert cli.recorded_pids() == pids
        assert all(cli.pid_alive(p) for p in pids)
    finally:
        assert cli.run("down").returncode == 0


def test_bad_options_are_refused_and_start_nothing(cli: Cli) -> None:
    for args, message in [
        (("--profile", "vax"), "no profile 'vax'"),
        (("--mem", "lots"), "not a size"),
        (("--page-size", "3K"), "page size 3K is not one of"),
        (("--max-order", "0"), "MAX_ORDER 0 is outside"),
    ]:
        result = cli.run("up", "-d", "--ephemeral-ports", *args)
        assert result.returncode == 1, args
        assert message in result.stderr, (args, result.stderr)
        assert not (cli.run_dir / "machine.json").exists()
    unknown = cli.run("cat", "/proc/meminfo")
    assert unknown.returncode == 1
    assert "No such file" in unknown.stderr
    assert cli.run("down").stdout.strip() == "memsim: no machine is running"


def test_foreground_up_stops_everything_on_ctrl_c(cli: Cli) -> None:
    process = cli.start("up", "--ephemeral-ports", "--demo")
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 60
        lines = []
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            lines.append(line)
            if "Press Ctrl-C" in line or not line:
                break
        output = "".join(lines)
        assert "every buddy merged back" in output
        assert "every invariant holds" in output
        pids = cli.recorded_pids()
        assert pids
        assert all(cli.pid_alive(p) for p in pids)
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=30)
        assert process.returncode == 0
        assert "stopped pid" in rest
        assert not any(cli.pid_alive(p) for p in pids)
        assert not (cli.run_dir / "machine.json").exists()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_foreground_up_ends_quietly_when_memsim_down_stops_it(cli: Cli) -> None:
    process = cli.start("up", "--ephemeral-ports")
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if "Press Ctrl-C" in line or not line:
                break
        pids = cli.recorded_pids()
        assert pids
        down = cli.run("down")
        assert down.returncode == 0
        rest, _ = process.communicate(timeout=30)
        assert process.returncode == 0
        assert "stopped by `memsim down`" in rest
        assert not any(cli.pid_alive(p) for p in pids)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
