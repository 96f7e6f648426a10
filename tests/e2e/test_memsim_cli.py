"""memsim up -d, cat, status, down: as a user types them."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import pytest

from memsim.clients.process.errors import OutOfMemory
from memsim.clients.process.process import Process
from memsim.procfs.buddyinfo import format_buddyinfo
from memsim.profiles.loader import MachineProfile, load_profile
from memsim.runtime.channel import open_channel
from memsim.services.buddy.arena import Arena, ArenaSpec
from memsim.services.zone.machine import Machine
from tests.e2e.harness import Cli

# x86_32 with 1 GiB, checked by hand. The zone's reserved pages sit at its
# bottom: DMA keeps 4096 - 32 (memmap) - 1024 (kernel at 1-5 MiB) = 3040 pages
# from pfn 1056: blocks of order 5 (1056), 6 (1088), 7 (1152), 8 (1280),
# 9 (1536) and two of order 10 (2048, 3072).
DMA_AT_BOOT = "Node 0, zone      DMA" + "      0" * 5 + "      1" * 5 + "      2 \n"


def expected_buddyinfo(profile: MachineProfile) -> str:
    """What buddy holds at boot: each zone's managed pages, carved (the oracle)."""
    machine = Machine(profile)
    return format_buddyinfo(
        (
            z.node,
            z.name,
            Arena(
                ArenaSpec(z.node, z.name, z.arena_start_pfn, z.managed, profile.max_order)
            ).nr_free(),
        )
        for z in sorted(machine.zones.values(), key=lambda z: (z.node, z.start_pfn))
        if z.managed
    )


# What the MMU takes at boot for init: one per-CPU list refill (pcp batch, at
# most 31 pages) from the zone it allocates in, of which init keeps its pgd.
BOOT_PCP_SLACK_PAGES = 64


def zone_free_pages(line: str) -> tuple[str, int]:
    """A /proc/buddyinfo line -> ("Node 0, zone   Normal", free pages in buddy)."""
    label, _, counts = line.partition("zone")
    name, *nr_free = counts.split()
    pages = sum(n << order for order, n in enumerate(map(int, nr_free)))
    return f"{label}zone {name:>8}", pages


def assert_buddyinfo_at_boot(actual: str, profile: MachineProfile) -> None:
    """buddy's lists as the oracle carves them, less what booting init took:
    one pcp refill of order-0 pages from one zone (the lists hold it)."""
    expected = expected_buddyinfo(profile)
    got, want = actual.splitlines(), expected.splitlines()
    assert [zone_free_pages(line)[0] for line in got] == [zone_free_pages(line)[0] for line in want]
    changed = [(g, w) for g, w in zip(got, want, strict=True) if g != w]
    assert len(changed) <= 1, (actual, expected)
    for g, w in changed:
        taken = zone_free_pages(w)[1] - zone_free_pages(g)[1]
        assert 0 < taken <= BOOT_PCP_SLACK_PAGES, (actual, expected)


def test_up_cat_status_down_leaves_nothing_behind(cli: Cli) -> None:
    up = cli.run("up", "-d", "--ephemeral-ports")
    assert up.returncode == 0, up.stderr
    assert "x86_32 (1G, 4K pages, MAX_ORDER 11) is up" in up.stdout
    pids = cli.recorded_pids()
    assert len(pids) == 5  # buddy, policy, zone, slab, mmu
    assert all(cli.pid_alive(p) for p in pids)

    cat = cli.run("cat", "/proc/buddyinfo")
    assert cat.returncode == 0, cat.stderr
    assert cat.stdout.startswith(DMA_AT_BOOT)
    assert_buddyinfo_at_boot(cat.stdout, load_profile("x86_32"))

    status = cli.run("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "buddy" in status.stdout
    assert "SERVING" in status.stdout

    extfrag = cli.run("cat", "/sys/kernel/debug/extfrag/extfrag_index")
    assert extfrag.returncode == 0
    assert extfrag.stdout.splitlines()[0] == "Node 0, zone      DMA" + " -1.000" * 11 + " "

    down = cli.run("down")
    assert down.returncode == 0, down.stderr
    for name, pid in zip(("buddy", "policy", "zone", "slab", "mmu"), pids, strict=True):
        assert f"{name}: stopped pid {pid}" in down.stdout
    assert not any(cli.pid_alive(p) for p in pids)
    assert not (cli.run_dir / "machine.json").exists()
    assert not (cli.run_dir / "admin_token").exists()

    after = cli.run("cat", "/proc/buddyinfo")
    assert after.returncode == 1
    assert "no machine is running" in after.stderr


@pytest.mark.parametrize(
    ("profile", "options"),
    [
        ("x86_32", ("--mem", "64M", "--max-order", "5")),
        ("x86_64", ()),
        ("x86_64", ("--mem", "1T")),
        ("numa", ()),
        ("ppc", ("--page-size", "64K")),
        ("nommu", ()),
    ],
    ids=["x86_32-64M", "x86_64", "x86_64-1T", "numa", "ppc-64K", "nommu"],
)
def test_every_profile_boots_and_serves_its_proc_files(
    cli: Cli, profile: str, options: tuple[str, ...]
) -> None:
    up = cli.run("up", "-d", "--ephemeral-ports", "--profile", profile, *options)
    assert up.returncode == 0, up.stderr
    try:
        mem = dict(zip(options[::2], options[1::2], strict=True))
        machine = load_profile(
            profile,
            mem=mem.get("--mem"),
            page_size=mem.get("--page-size"),
            max_order=int(mem["--max-order"]) if "--max-order" in mem else None,
        )
        buddyinfo = cli.run("cat", "/proc/buddyinfo")
        assert_buddyinfo_at_boot(buddyinfo.stdout, machine)
        zoneinfo = cli.run("cat", "/proc/zoneinfo")
        assert zoneinfo.returncode == 0, zoneinfo.stderr
        for zone in Machine(machine).zones.values():
            assert f"Node {zone.node}, zone {zone.name:>8}\n" in zoneinfo.stdout
            assert f"        present  {zone.present}\n" in zoneinfo.stdout
        vmstat = cli.run("cat", "/proc/vmstat")
        assert vmstat.stdout.startswith("nr_free_pages ")
        free = cli.run("free")
        total_kb = sum(z.managed for z in Machine(machine).zones.values()) * (
            machine.page_size // 1024
        )
        assert free.stdout.splitlines()[1].split()[:2] == ["Mem:", str(total_kb)]
        # The MMU boots init on every profile, nommu too; swap is half of RAM
        # (none without an MMU).
        swap_kb = machine.mem_bytes // 2 // 1024 if machine.mmu else 0
        meminfo = cli.run("cat", "/proc/meminfo")
        assert meminfo.returncode == 0, meminfo.stderr
        assert f"{'MemTotal:':<14}{total_kb:>8} kB\n" in meminfo.stdout
        assert f"{'SwapTotal:':<14}{swap_kb:>8} kB\n" in meminfo.stdout
        if (profile, bool(options)) not in {("x86_32", True), ("x86_64", False)}:
            return  # /proc/PID/maps of a 32-bit and of a 64-bit kernel is enough
        maps = cli.run("cat", "/proc/1/maps")
        assert maps.returncode == 0, maps.stderr
        stack = [line for line in maps.stdout.splitlines() if line.endswith("[stack]")]
        assert len(stack) == 1
        # pad_len_spaces: names after 25 + 6 * sizeof(void *) characters (32 or 64 bits).
        assert stack[0].index("[stack]") == (49 if profile in ("x86_32", "nommu") else 73)
    finally:
        assert cli.run("down").returncode == 0


def test_processes_proc_files_free_and_kill(cli: Cli) -> None:
    up = cli.run("up", "-d", "--ephemeral-ports", "--swap", "256M")
    assert up.returncode == 0, up.stderr
    assert "swap     256M" in up.stdout
    try:
        ps = cli.run("ps")
        assert ps.returncode == 0, ps.stderr
        header, *rows = ps.stdout.splitlines()
        assert header.split() == ["PID", "USER", "VSZ", "RSS", "%MEM", "COMMAND"]
        assert [row.split()[0::5] for row in rows] == [["1", "init"]]
        assert rows[0].split()[1] == "root"

        status = cli.run("cat", "/proc/1/status")
        assert status.returncode == 0, status.stderr
        assert status.stdout.startswith("Name:\tinit\nState:\tR (running)\n")
        assert "\nVmStk:\t     128 kB\n" in status.stdout
        assert "\nVmSwap:\t       0 kB\n" in status.stdout

        maps = cli.run("cat", "/proc/1/maps")
        assert maps.returncode == 0, maps.stderr
        assert any(line.endswith(" [stack]") for line in maps.stdout.splitlines())

        total_kb = sum(z.managed for z in Machine(load_profile("x86_32")).zones.values()) * 4
        meminfo = cli.run("cat", "/proc/meminfo").stdout
        assert meminfo.startswith(f"{'MemTotal:':<14}{total_kb:>8} kB\n")
        assert "\nSwapTotal:      262144 kB\nSwapFree:       262144 kB\n" in meminfo
        assert "\nHighTotal:" in meminfo
        # CommitLimit: swap + RAM x overcommit_ratio (50) / 100; init's data
        # and stack are what is committed.
        commit_limit = 262144 + total_kb // 4 * 50 // 100 * 4
        assert f"\n{'CommitLimit:':<14}{commit_limit:>8} kB\n" in meminfo
        vm = {
            line.split(":")[0]: int(line.split()[1])
            for line in status.stdout.splitlines()
            if line.startswith(("VmData", "VmStk"))
        }
        committed = vm["VmData"] + vm["VmStk"]
        assert f"\n{'Committed_AS:':<14}{committed:>8} kB\n" in meminfo

        free = cli.run("free", "-m")
        assert free.returncode == 0, free.stderr
        lines = free.stdout.splitlines()
        assert lines[1].split()[:2] == ["Mem:", str(total_kb // 1024)]
        assert lines[3].split() == ["Swap:", "256", "0", "256"]

        init = cli.run("kill", "-9", "1")
        assert init.returncode == 1
        assert "init (pid 1) cannot be killed" in init.stderr
        nobody = cli.run("kill", "-KILL", "999")
        assert nobody.returncode == 1
        assert "no process with pid 999" in nobody.stderr
        term = cli.run("kill", "-TERM", "1")
        assert term.returncode == 1
        assert "memsim delivers KILL (9) and SEGV (11)" in term.stderr
        assert cli.run("ps").stdout == ps.stdout  # init lives on
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
    unknown = cli.run("cat", "/proc/kcore")
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
        assert "db-worker (pid 3) writes into the shared page; db reads 'hello from" in output
        assert "major faults (pages read back from swap)" in output
        assert "the pattern is intact" in output
        assert "every process gone, every buddy merged: the same as at boot" in output
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


def test_nommu_machine_fails_a_big_mapping_from_fragmentation(cli: Cli) -> None:
    """On uClinux a mapping is one contiguous block: with half the memory free
    in 64 KiB holes, 512 KiB cannot be had, and memsim says why. (Blocks of 64
    KiB are order 4, past PAGE_ALLOC_COSTLY_ORDER: when they run out the
    mapping fails with ENOMEM instead of waking the OOM killer.)"""
    up = cli.run("up", "-d", "--ephemeral-ports", "--profile", "nommu")
    assert up.returncode == 0, up.stderr
    try:
        state = json.loads((cli.run_dir / "machine.json").read_text())
        mmu_address = state["services"]["mmu"]["address"]

        async def fragment() -> str:
            async with open_channel(mmu_address) as channel:
                proc = await Process.spawn(channel, "frag")
                pages = []
                while True:  # every 64 KiB block there is, one mapping each
                    try:
                        pages.append(await proc.mmap(64 << 10))
                    except OutOfMemory:
                        break
                for address in pages[::2]:
                    await proc.munmap(address, 64 << 10)
                with pytest.raises(OutOfMemory) as refused:
                    await proc.mmap(512 << 10)
                return str(refused.value)

        message = asyncio.run(fragment())
        assert "needs 128 contiguous pages (order 7) without an MMU" in message
        assert "the free memory is fragmented (see /proc/buddyinfo)" in message
        (line,) = cli.run("cat", "/proc/buddyinfo").stdout.splitlines()
        counts = [int(n) for n in line.split()[4:]]
        assert sum(counts[:7]) > 0  # free memory, in small blocks only
        assert counts[7:] == [0, 0, 0, 0]
    finally:
        assert cli.run("down").returncode == 0


def test_slab_commands_show_the_kernel_objects_of_the_running_machine(cli: Cli) -> None:
    assert cli.run("up", "-d", "--ephemeral-ports").returncode == 0
    try:
        slabinfo = cli.run("cat", "/proc/slabinfo")
        assert slabinfo.returncode == 0, slabinfo.stderr
        lines = slabinfo.stdout.splitlines()
        assert lines[0] == "slabinfo - version: 2.1"
        rows = {line.split()[0]: line.split() for line in lines[2:]}
        for name in ("task_struct", "mm_struct", "vm_area_struct", "dentry", "size-32"):
            assert name in rows
        # init's task_struct is in use: the MMU took it from the slab.
        assert int(rows["task_struct"][1]) >= 1

        top = cli.run("slabtop", "-s", "c", "-n", "3")
        assert top.returncode == 0, top.stderr
        header = top.stdout.splitlines()
        assert header[0].startswith(" Active / Total Objects (% used)")
        table = header[header.index("") + 1 :]
        assert table[0].split()[-1] == "NAME"
        assert len(table) == 4  # the header and three caches, largest first
        sizes = [int(row.split()[-2].rstrip("K")) for row in table[1:]]
        assert sizes == sorted(sizes, reverse=True)
        assert sizes[0] > 0

        bad = cli.run("slabtop", "-s", "z")
        assert bad.returncode == 1
        assert "unknown sort key 'z'" in bad.stderr

        meminfo = cli.run("cat", "/proc/meminfo").stdout
        slab_kb = int(meminfo.split("\nSlab:")[1].split()[0])
        reclaimable = int(meminfo.split("\nSReclaimable:")[1].split()[0])
        unreclaimable = int(meminfo.split("\nSUnreclaim:")[1].split()[0])
        assert slab_kb == reclaimable + unreclaimable > 0
        assert "\nVmallocTotal:" in meminfo

        vmallocinfo = cli.run("cat", "/proc/vmallocinfo")
        assert vmallocinfo.returncode == 0, vmallocinfo.stderr
        assert cli.run("dmesg").returncode == 0
    finally:
        assert cli.run("down").returncode == 0
