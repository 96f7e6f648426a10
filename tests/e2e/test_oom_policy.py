"""The policy service end to end (issue 7): `memsim sysctl` as sysctl(8),
overcommit mode 2, the OOM killer choosing its victim, a panic and `memsim
reboot`, on small machines driven by the `memsim` command and the process
client library."""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import grpc
import pytest

from memsim.clients.process.errors import OutOfMemory, ProcessGone
from memsim.clients.process.process import Process
from memsim.runtime.channel import open_channel
from memsim.services.policy.client import PolicyClient
from tests.e2e.harness import Cli

MiB = 1 << 20
PAGE_KB = 4
T = TypeVar("T")

# The vm.* sysctls the issue names, with its defaults where it gives them.
ISSUE_DEFAULTS = {
    "vm.overcommit_memory": "0",
    "vm.overcommit_ratio": "50",
    "vm.oom_dump_tasks": "1",
    "vm.oom_kill_allocating_task": "0",
    "vm.panic_on_oom": "0",
    "vm.swappiness": "60",
    "vm.overcommit_kbytes": "0",
    # 2.6.24 sysctl_lowmem_reserve_ratio with CONFIG_HIGHMEM: DMA, Normal, HighMem.
    "vm.lowmem_reserve_ratio": "256\t32\t32",
}
ISSUE_SYSCTLS = {
    *ISSUE_DEFAULTS,
    "vm.min_free_kbytes",
    "vm.admin_reserve_kbytes",
    "vm.user_reserve_kbytes",
}
# panic("out of memory. panic_on_oom is selected\n") in 2.6.24's
# out_of_memory(), as panic() prints it.
PANIC_LINE = "Kernel panic - not syncing: out of memory. panic_on_oom is selected"
DUMP_HEADER = "[ pid ]   uid  tgid total_vm      rss cpu oom_adj name"
DUMP_LINE = re.compile(r"\[ *(\d+)\] +(\d+) +(\d+) +(\d+) +(\d+) +(\d+) +(-?\d+) (\S+)")


def boot(cli: Cli, mem: str = "64M", swap: str = "0") -> None:
    up = cli.run("up", "-d", "--ephemeral-ports", "--mem", mem, "--swap", swap)
    assert up.returncode == 0, up.stderr


def ok(cli: Cli, *args: str) -> str:
    result = cli.run(*args)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout


def with_policy(cli: Cli, use: Callable[[PolicyClient], Awaitable[T]]) -> T:
    """Runs use(a policy client) in this process: a quick look that needs no
    `memsim` start-up."""

    async def run() -> T:
        async with open_channel(cli.addresses()["policy"]) as channel:
            return await asyncio.wait_for(use(PolicyClient(channel)), timeout=30)

    return asyncio.run(run())


def sysctls_now(cli: Cli) -> dict[str, str]:
    """What `sysctl -a` would show, asked of the policy service directly."""

    async def listing(policy: PolicyClient) -> dict[str, str]:
        return dict(await policy.list_sysctls())

    return with_policy(cli, listing)


def meminfo_kb(cli: Cli) -> dict[str, int]:
    return {
        line.split(":")[0]: int(line.split()[1])
        for line in ok(cli, "cat", "/proc/meminfo").splitlines()
    }


def zone_fields(zoneinfo: str) -> dict[str, dict[str, int]]:
    """min, low, high and present of each zone of /proc/zoneinfo."""
    zones: dict[str, dict[str, int]] = {}
    current: dict[str, int] = {}
    for line in zoneinfo.splitlines():
        if line.startswith("Node "):
            current = zones.setdefault(line.split()[-1], {})
            continue
        words = line.split()
        if len(words) == 2 and words[0] in ("min", "low", "high", "present"):
            current[words[0]] = int(words[1])
    return zones


def expected_watermarks(
    min_free_kbytes: int, present: dict[str, int]
) -> dict[str, tuple[int, ...]]:
    """setup_per_zone_pages_min of 2.6.24 for lowmem zones, by hand: pages_min
    shared out by present pages, low = min + min/4, high = min + min/2."""
    pages_min = min_free_kbytes // PAGE_KB
    lowmem = sum(present.values())
    marks: dict[str, tuple[int, ...]] = {}
    for zone, pages in present.items():
        tmp = pages_min * pages // lowmem
        marks[zone] = (tmp, tmp + (tmp >> 2), tmp + (tmp >> 1))
    return marks


def with_mmu(cli: Cli, use: Callable[[grpc.aio.Channel], Awaitable[T]]) -> T:
    """Runs use(channel to the MMU) to its end, bounded in time."""

    async def run() -> T:
        async with open_channel(cli.addresses()["mmu"]) as channel:
            return await asyncio.wait_for(use(channel), timeout=30)

    return asyncio.run(run())


async def touch_in_chunks(proc: Process, address: int, length: int) -> None:
    """Faults length bytes in, a MiB a call (as a program's memset would go
    page by page): each call asks the zone for a bounded number of frames.
    (One call for tens of MiB is slow on a 64 MiB machine: past the bulk fast
    path the zone takes one buddy RPC per pcp batch, which is 1 page there.)"""
    for offset in range(0, length, MiB):
        await proc.touch(address + offset, min(MiB, length - offset))


# -- sysctl(8) --------------------------------------------------------------------


def test_sysctl_reads_writes_and_refuses_as_sysctl8_does(cli: Cli, tmp_path: Path) -> None:
    boot(cli)
    try:
        listing = ok(cli, "sysctl", "-a")
        boot_values = dict(line.split(" = ", 1) for line in listing.splitlines())
        assert listing == "".join(f"{n} = {v}\n" for n, v in sorted(boot_values.items()))
        assert boot_values.keys() >= ISSUE_SYSCTLS
        for name, value in ISSUE_DEFAULTS.items():
            assert boot_values[name] == value, name
        # init_per_zone_pages_min: int_sqrt(lowmem kB * 16), lowmem being the
        # present pages of DMA and Normal (64 MiB has no HighMem).
        zoneinfo = ok(cli, "cat", "/proc/zoneinfo")
        present = {z: f["present"] for z, f in zone_fields(zoneinfo).items()}
        assert set(present) == {"DMA", "Normal"}
        assert boot_values["vm.min_free_kbytes"] == str(
            math.isqrt(sum(present.values()) * PAGE_KB * 16)
        )
        # 3.10's init_admin_reserve / init_user_reserve: free memory / 32, capped.
        free_kb = meminfo_kb(cli)["MemTotal"]
        assert boot_values["vm.admin_reserve_kbytes"] == str(min(free_kb // 32, 8192))
        assert boot_values["vm.user_reserve_kbytes"] == str(min(free_kb // 32, 131072))

        assert ok(cli, "sysctl", "-n", "vm.overcommit_ratio") == "50\n"
        assert ok(cli, "sysctl", "vm.swappiness", "vm/panic_on_oom") == (
            "vm.swappiness = 60\nvm/panic_on_oom = 0\n"
        )
        assert ok(cli, "sysctl", "-w", "vm.overcommit_memory=2") == "vm.overcommit_memory = 2\n"
        assert ok(cli, "sysctl", "-n", "vm.overcommit_memory") == "2\n"

        conf = tmp_path / "sysctl.conf"
        conf.write_text(
            "# memsim test settings\n\n"
            "vm.overcommit_ratio = 80\n"
            "; a comment of procps' other kind\n"
            "   \n"
            "vm.swappiness=10\n"
            "vm/oom_dump_tasks = 0\n"
        )
        loaded = ok(cli, "sysctl", "-p", str(conf))
        for line in ("vm.overcommit_ratio = 80", "vm.swappiness = 10", "vm.oom_dump_tasks = 0"):
            assert line in loaded.splitlines(), loaded
        written = sysctls_now(cli)
        assert written == {
            **boot_values,
            "vm.overcommit_memory": "2",
            "vm.overcommit_ratio": "80",
            "vm.swappiness": "10",
            "vm.oom_dump_tasks": "0",
        }

        bad_conf = tmp_path / "bad.conf"
        bad_conf.write_text("vm.swappiness = 30\n# fine so far\nvm.panic_on_oom = 7\n")
        refusals: list[tuple[Cli, tuple[str, ...], str]] = [
            (
                cli,
                ("-w", "vm.nonesuch=1"),
                "sysctl: cannot stat /proc/sys/vm/nonesuch: No such file or directory",
            ),
            (cli, ("vm.nonesuch",), "cannot stat /proc/sys/vm/nonesuch"),
            (
                cli,
                ("-w", "vm.overcommit_memory=3"),
                'sysctl: setting key "vm.overcommit_memory": Invalid argument',
            ),
            (cli, ("-w", "vm.panic_on_oom=3"), 'setting key "vm.panic_on_oom": Invalid argument'),
            (
                cli,
                ("-w", "vm.min_free_kbytes=-1"),
                'setting key "vm.min_free_kbytes": Invalid argument',
            ),
            (cli, ("-w", "vm.swappiness=abc"), 'setting key "vm.swappiness": Invalid argument'),
            # All or none: the good first write is not kept.
            (
                cli,
                ("-w", "vm.swappiness=20", "vm.overcommit_memory=3"),
                '"vm.overcommit_memory": Invalid argument',
            ),
            (cli, ("-p", str(bad_conf)), f"{bad_conf}(3)"),
            (
                cli.with_env(MEMSIM_ADMIN_TOKEN="wrong"),
                ("-w", "vm.swappiness=20"),
                "sysctl: permission denied on key 'vm.swappiness'",
            ),
            (
                cli.with_env(MEMSIM_ADMIN_TOKEN="wrong"),
                ("-p", str(conf)),
                "sysctl: permission denied",
            ),
        ]
        for runner, args, message in refusals:
            refused = runner.run("sysctl", *args)
            assert refused.returncode == 1, (args, refused.stdout)
            assert message in refused.stderr, (args, refused.stderr)
            assert refused.stdout == "", args
            assert sysctls_now(cli) == written, args

        # Without the token file (a user who cannot read it): refused too.
        token_file = cli.run_dir / "admin_token"
        token = token_file.read_text()
        token_file.unlink()
        try:
            refused = cli.run("sysctl", "-w", "vm.swappiness=20")
            assert refused.returncode == 1
            assert "sysctl: permission denied on key 'vm.swappiness'" in refused.stderr
            assert sysctls_now(cli) == written
        finally:
            token_file.write_text(token)
            token_file.chmod(0o600)

        # min_free_kbytes reaches the zones' watermarks through the watch.
        assert ok(cli, "sysctl", "-w", "vm.min_free_kbytes=4096") == "vm.min_free_kbytes = 4096\n"
        want = expected_watermarks(4096, present)
        deadline = time.monotonic() + 10
        while True:
            zones = zone_fields(ok(cli, "cat", "/proc/zoneinfo"))
            got = {z: (f["min"], f["low"], f["high"]) for z, f in zones.items()}
            if got == want or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert got == want
        assert want["DMA"] == (256, 320, 384)  # 1024 pages x 4064 / 16256, by hand
    finally:
        assert cli.run("down").returncode == 0


# -- overcommit mode 2 ---------------------------------------------------------------


def test_overcommit_never_refuses_a_mapping_past_the_commit_limit(cli: Cli) -> None:
    boot(cli)
    try:
        assert ok(cli, "sysctl", "-w", "vm.overcommit_memory=2") == "vm.overcommit_memory = 2\n"
        at_boot = meminfo_kb(cli)
        # CommitLimit: swap (none) + RAM x overcommit_ratio / 100.
        assert at_boot["CommitLimit"] == at_boot["MemTotal"] // PAGE_KB * 50 // 100 * PAGE_KB
        seen: dict[str, object] = {}

        async def scenario(channel: grpc.aio.Channel) -> None:
            proc = await Process.spawn(channel, "greedy", uid=1000)
            base = meminfo_kb(cli)
            vm_before = (await proc.info()).vm_size_pages
            # Well inside the limit: charged to Committed_AS, page for page.
            length = 4 * MiB
            address = await proc.mmap(length)
            mapped = meminfo_kb(cli)
            assert mapped["Committed_AS"] == base["Committed_AS"] + length // 1024
            assert mapped["CommitLimit"] == base["CommitLimit"]
            vm_mapped = (await proc.info()).vm_size_pages
            assert vm_mapped == vm_before + length // (PAGE_KB * 1024)

            # Past what is left of the limit: ENOMEM, and nothing mapped.
            room_kb = mapped["CommitLimit"] - mapped["Committed_AS"]
            with pytest.raises(OutOfMemory) as refused:
                await proc.mmap(room_kb * 1024 + PAGE_KB * 1024)
            seen["refusal"] = refused.value
            assert (await proc.info()).vm_size_pages == vm_mapped
            assert meminfo_kb(cli)["Committed_AS"] == mapped["Committed_AS"]

            await proc.munmap(address, length)
            assert meminfo_kb(cli)["Committed_AS"] == base["Committed_AS"]
            assert (await proc.info()).vm_size_pages == vm_before

            # Mode 1 always says yes: the same mapping is had at once.
            assert ok(cli, "sysctl", "-w", "vm.overcommit_memory=1") == (
                "vm.overcommit_memory = 1\n"
            )
            big = room_kb * 1024 + PAGE_KB * 1024
            await proc.mmap(big)
            assert meminfo_kb(cli)["Committed_AS"] == base["Committed_AS"] + big // 1024
            await proc.exit()
            # exit gives the whole charge back.
            assert meminfo_kb(cli)["Committed_AS"] == at_boot["Committed_AS"]

        with_mmu(cli, scenario)
        refusal = seen["refusal"]
        assert isinstance(refusal, OutOfMemory)
        assert refusal.errno == 12  # ENOMEM
    finally:
        assert cli.run("down").returncode == 0


# -- the OOM killer --------------------------------------------------------------------


def test_oom_killer_kills_the_task_the_rules_predict_and_dumps_every_task(cli: Cli) -> None:
    """64 MiB, no swap, overcommit always: a hog touching 40 MiB runs the zone
    out of frames with 20 MiB in others' hands. Every task is a user's (uid
    1000), young and idle, so badness() is total_vm: the biggest mapping
    ("shield", 200 MiB) is OOM_DISABLE and skipped, and "fat" (100 MiB mapped,
    16 MiB touched) is killed, not the hog that asked."""
    boot(cli)
    try:
        ok(cli, "sysctl", "-w", "vm.overcommit_memory=1")
        token = cli.admin_token()
        procs: dict[str, Process] = {}
        total_vm: dict[str, int] = {}
        scores_before: dict[str, int] = {}
        addresses: dict[str, int] = {}
        victim_error: list[BaseException] = []

        async def scenario(channel: grpc.aio.Channel) -> None:
            async with open_channel(cli.addresses()["policy"]) as policy_channel:
                policy = PolicyClient(policy_channel)
                for name, mapped, touched in (
                    ("small", 4, 4),
                    ("shield", 200, 0),
                    ("fat", 100, 16),
                    ("hog", 48, 0),
                ):
                    proc = await Process.spawn(channel, name, uid=1000)
                    address = await proc.mmap(mapped * MiB)
                    await touch_in_chunks(proc, address, touched * MiB)
                    procs[name] = proc
                    addresses[name] = address
                    total_vm[name] = (await proc.info()).vm_size_pages
                assert await policy.write_oom_adj(
                    procs["shield"].pid, "-17", admin_token=token
                ) == (-17, -1000)
                for name in ("small", "shield", "fat", "hog"):
                    scores_before[name] = await policy.oom_score(procs[name].pid)

                # The hog's touch is served once the victim's frames are back.
                await touch_in_chunks(procs["hog"], addresses["hog"], 40 * MiB)
                with pytest.raises(ProcessGone) as gone:
                    await procs["fat"].touch(addresses["fat"], MiB)
                victim_error.append(gone.value)

        with_mmu(cli, scenario)
        pid = {name: procs[name].pid for name in ("small", "shield", "fat", "hog")}
        # oom_score before the kill: badness() = total_vm for these tasks;
        # OOM_DISABLE shifts shield's right by 17.
        assert scores_before == {
            "small": total_vm["small"],
            "shield": total_vm["shield"] >> 17,
            "fat": total_vm["fat"],
            "hog": total_vm["hog"],
        }
        assert total_vm["shield"] > total_vm["fat"] > total_vm["hog"] > total_vm["small"]
        assert "killed by signal 9" in str(victim_error[0])

        ps_pids = [int(row.split()[0]) for row in ok(cli, "ps").splitlines()[1:]]
        assert ps_pids == [1, pid["small"], pid["shield"], pid["hog"]]

        log = ok(cli, "dmesg").splitlines()
        invoked = [i for i, line in enumerate(log) if "invoked oom-killer" in line]
        assert len(invoked) == 1, log  # one kill was enough
        start = invoked[0]
        assert log[start].startswith("hog invoked oom-killer: gfp_mask=0x"), log[start]
        assert log[start].endswith(", order=0, oomkilladj=0")
        assert log[start + 1] == DUMP_HEADER
        dump = []
        for line in log[start + 2 :]:
            match = DUMP_LINE.fullmatch(line)
            if match is None:
                break
            dump.append(match.groups())
        # Every task with an mm, init first, in the order of the task list.
        assert [(int(d[0]), d[7]) for d in dump] == [
            (1, "init"),
            (pid["small"], "small"),
            (pid["shield"], "shield"),
            (pid["fat"], "fat"),
            (pid["hog"], "hog"),
        ]
        by_name = {d[7]: d for d in dump}
        for name in ("small", "shield", "fat", "hog"):
            _, uid, tgid, vm, _, _, adj, _ = by_name[name]
            assert (uid, int(tgid), int(vm)) == ("1000", pid[name], total_vm[name])
            assert adj == ("-17" if name == "shield" else "0")
        assert int(by_name["fat"][4]) == 16 * MiB // (PAGE_KB * 1024)  # rss
        rest = log[start + 2 + len(dump) :]
        assert rest[:2] == [
            f"Out of memory: kill process {pid['fat']} (fat) score {total_vm['fat']} or a child",
            f"Killed process {pid['fat']} (fat)",
        ]

        # The survivors' scores as /proc shows them, the same as before.
        for name in ("small", "shield", "hog"):
            score = ok(cli, "cat", f"/proc/{pid[name]}/oom_score")
            assert score == f"{scores_before[name]}\n", (name, score)
        assert ok(cli, "cat", f"/proc/{pid['shield']}/oom_adj") == "-17\n"
    finally:
        assert cli.run("down").returncode == 0


# -- panic and reboot ------------------------------------------------------------------


async def exhaust(proc: Process, mib: int) -> BaseException:
    """Touches a mapping of mib MiB a MiB at a time until a call fails."""
    address = await proc.mmap(mib * MiB)
    try:
        await touch_in_chunks(proc, address, mib * MiB)
    except Exception as exc:
        return exc
    raise AssertionError(f"{mib} MiB were touched on a 64 MiB machine without swap")


def test_panic_on_oom_halts_the_machine_until_reboot(cli: Cli) -> None:
    boot(cli)
    try:
        ok(cli, "sysctl", "-w", "vm.overcommit_memory=1", "vm.panic_on_oom=1")
        refusals: dict[str, str] = {}

        async def scenario(channel: grpc.aio.Channel) -> None:
            bystander = await Process.spawn(channel, "bystander", uid=1000)
            spare = await bystander.mmap(MiB)
            hog = await Process.spawn(channel, "hog", uid=1000)
            await exhaust(hog, 80)
            # Every mutating call of every service is refused now.
            calls: dict[str, Callable[[], Awaitable[object]]] = {
                "touch": lambda: bystander.touch(spare, MiB),
                "mmap": lambda: bystander.mmap(MiB),
                "spawn": lambda: Process.spawn(channel, "newcomer"),
            }
            for what, call in calls.items():
                with pytest.raises(ProcessGone) as refused:
                    await call()
                refusals[what] = str(refused.value)

        with_mmu(cli, scenario)
        for what, message in refusals.items():
            assert PANIC_LINE in message, (what, message)
        write = cli.run("sysctl", "-w", "vm.panic_on_oom=0")
        assert write.returncode == 1
        assert PANIC_LINE in write.stderr
        # Looking still works.
        assert [row.split()[-1] for row in ok(cli, "ps").splitlines()[1:]] == [
            "init",
            "bystander",
            "hog",
        ]
        assert meminfo_kb(cli)["MemTotal"] > 0
        assert PANIC_LINE in ok(cli, "dmesg").splitlines()
        assert ok(cli, "sysctl", "-n", "vm.panic_on_oom") == "1\n"

        before = cli.recorded_pids()
        reboot = cli.run("reboot")
        assert reboot.returncode == 0, reboot.stderr
        assert "is up again" in reboot.stdout
        after = cli.recorded_pids()
        assert len(after) == len(before) == 5
        assert not set(before) & set(after)
        assert not any(cli.pid_alive(p) for p in before)
        assert all(cli.pid_alive(p) for p in after)

        # Boot state: sysctls, processes and log as a fresh machine has them.
        assert ok(cli, "sysctl", "-n", "vm.panic_on_oom", "vm.overcommit_memory") == "0\n0\n"
        assert PANIC_LINE not in ok(cli, "dmesg")
        assert [row.split()[-1] for row in ok(cli, "ps").splitlines()[1:]] == ["init"]

        async def serves(channel: grpc.aio.Channel) -> int:
            proc = await Process.spawn(channel, "after-reboot", uid=1000)
            address = await proc.mmap(4 * MiB)
            faults = await proc.touch(address, 4 * MiB)
            await proc.exit()
            return faults.minor

        assert with_mmu(cli, serves) == 4 * MiB // (PAGE_KB * 1024)
    finally:
        pids = cli.recorded_pids()
        assert cli.run("down").returncode == 0
    assert not any(cli.pid_alive(p) for p in pids)


def test_the_call_that_panics_the_machine_is_told_why(cli: Cli) -> None:
    boot(cli)
    try:
        ok(cli, "sysctl", "-w", "vm.overcommit_memory=1", "vm.panic_on_oom=1")

        async def scenario(channel: grpc.aio.Channel) -> BaseException:
            hog = await Process.spawn(channel, "hog", uid=1000)
            return await exhaust(hog, 80)

        error = with_mmu(cli, scenario)
        assert isinstance(error, ProcessGone), repr(error)
        assert PANIC_LINE in str(error)
    finally:
        assert cli.run("down").returncode == 0


def test_write_sets_oom_adj_and_sysctls_as_root_and_refuses_the_rest(cli: Cli) -> None:
    boot(cli)
    try:
        assert cli.run("write", "/proc/1/oom_adj", "-17").returncode == 0
        assert ok(cli, "cat", "/proc/1/oom_adj") == "-17\n"
        # 2.6.24's oom_adj write keeps oom_score_adj in step (OOM_DISABLE).
        assert ok(cli, "cat", "/proc/1/oom_score_adj") == "-1000\n"
        assert cli.run("write", "/proc/sys/vm/swappiness", "10").returncode == 0
        assert ok(cli, "sysctl", "-n", "vm.swappiness") == "10\n"
        refusals = [
            (("write", "/proc/1/oom_adj", "16"), "Invalid argument"),
            (("write", "/proc/sys/vm/nope", "1"), "cannot stat /proc/sys/vm/nope"),
            (("write", "/proc/1/maps", "1"), "not a file memsim can write"),
            (("write", "/proc/999/oom_adj", "1"), "999"),
        ]
        for args, words in refusals:
            refused = cli.run(*args)
            assert refused.returncode == 1, args
            assert words in refused.stderr, (args, refused.stderr)
        stranger = cli.with_env(MEMSIM_ADMIN_TOKEN="wrong").run("write", "/proc/1/oom_adj", "3")
        assert stranger.returncode == 1
        assert "Operation not permitted" in stranger.stderr
        assert ok(cli, "cat", "/proc/1/oom_adj") == "-17\n"
        assert ok(cli, "sysctl", "-n", "vm.swappiness") == "10\n"
    finally:
        assert cli.run("down").returncode == 0
