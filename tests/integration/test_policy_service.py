"""The OOM/policy service over gRPC: sysctls (get, list, -w, -p, the watch),
commit accounting, the OOM killer (through a fake task list and through a
real MMU), the kernel log, /proc/PID/oom_score and oom_adj, panic and
reboot, memory cgroups, and for every RPC a bad input that is refused with a
clear status and changes nothing."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from memsim.mmu.v1 import mmu_pb2 as mmu_pb
from memsim.mmu.v1 import mmu_pb2_grpc
from memsim.policy.v1 import policy_pb2 as pb
from memsim.runtime.channel import open_channel
from memsim.services.policy.badness import Task
from memsim.services.policy.client import PolicyClient
from memsim.services.policy.ports import PeerUnavailable
from tests.integration.conftest import BuddyHarness
from tests.integration.policy_fixtures import (
    ADMIN,
    FakeTasks,
    PolicyHarness,
    policy_config,
    policy_over_mmu,
    running_policy,
)

T = TypeVar("T")
PAGE = 4096
GFP_HIGHUSER = 0x201D2
SWAP_PAGES = (32 << 20) // PAGE
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
DENIED = grpc.StatusCode.PERMISSION_DENIED
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
PANIC_PREFIX = "Kernel panic - not syncing: "
STREAM_TIMEOUT_S = 5.0


def machine_tasks() -> list[Task]:
    """init, a root daemon, a hog, a forking server with one worker, and a
    niced editor. 2.6.24 badness at uptime 0 with no CPU time, by hand:
    sshd 60000 / 4 (root) = 15000; hog 50000; server 20000 + 40000 / 2 + 1
    = 40001; worker 40000; editor 9000 * 2 (nice) = 18000."""
    return [
        Task(1, "init", uid=0, total_vm=400, rss=100, ppid=0),
        Task(2, "sshd", uid=0, total_vm=60_000, rss=5_000, ppid=1),
        Task(3, "hog", uid=1000, total_vm=50_000, rss=40_000, ppid=1),
        Task(4, "server", uid=1000, total_vm=20_000, rss=10_000, ppid=1),
        Task(5, "worker", uid=1000, total_vm=40_000, rss=30_000, ppid=4),
        Task(
            6,
            "editor",
            uid=1000,
            nice=5,
            total_vm=9_000,
            rss=1_000,
            ppid=1,
            capabilities=frozenset({"CAP_SYS_RESOURCE"}),
        ),
    ]


TOKENS = {3: "token-3", 4: "token-4", 6: "token-6"}


@dataclass
class Fixture:
    policy: PolicyHarness
    fake: FakeTasks

    @property
    def client(self) -> PolicyClient:
        return self.policy.client

    async def state(self) -> tuple[Any, ...]:
        """Everything a refused call must leave as it was."""
        c = self.client
        return (
            await c.list_sysctls(),
            await c.stats(),
            await c.cgroups(),
            await c.panic_state(),
            dict(self.fake.by_pid),
            list(self.fake.killed),
        )


@pytest_asyncio.fixture
async def fx() -> AsyncIterator[Fixture]:
    fake = FakeTasks(machine_tasks(), tokens=dict(TOKENS))
    async with running_policy(policy_config(), fake) as policy:
        yield Fixture(policy, fake)


async def refused(code: grpc.StatusCode, call: Awaitable[object]) -> str:
    """The call fails with code; its details."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() is code, (info.value.code(), info.value.details())
    return info.value.details() or ""


async def refused_unchanged(fx: Fixture, code: grpc.StatusCode, call: Awaitable[object]) -> str:
    before = await fx.state()
    details = await refused(code, call)
    assert await fx.state() == before
    return details


async def next_message(stream: grpc.aio.UnaryStreamCall[Any, T], kind: type[T]) -> T:
    message = await asyncio.wait_for(stream.read(), STREAM_TIMEOUT_S)
    assert isinstance(message, kind), message
    return message


async def until_watching(fx: Fixture, metric: str, count: int) -> None:
    """Waits (boundedly) until the server counts `count` watchers of a stream."""
    for _ in range(500):
        if fx.policy.registry.get_sample_value(metric) == count:
            return
        await asyncio.sleep(0.01)
    assert fx.policy.registry.get_sample_value(metric) == count


def sysctl_dict(sysctls: Any) -> dict[str, str]:
    return {s.name: s.value for s in sysctls}


# -- sysctls -------------------------------------------------------------------------


async def test_sysctl_get_and_list_show_the_boot_values(fx: Fixture) -> None:
    c = fx.client
    assert await c.get_sysctl("vm.overcommit_memory") == "0"
    assert await c.get_sysctl("vm/overcommit_ratio") == "50"
    assert await c.get_sysctl(" vm.oom_dump_tasks ") == "1"
    listing = await c.list_sysctls()
    names = [name for name, _ in listing]
    assert names == sorted(names)
    for name in (
        "vm.overcommit_memory",
        "vm.overcommit_ratio",
        "vm.oom_dump_tasks",
        "vm.oom_kill_allocating_task",
        "vm.panic_on_oom",
        "vm.min_free_kbytes",
        "vm.lowmem_reserve_ratio",
        "vm.swappiness",
        "vm.overcommit_kbytes",
        "vm.admin_reserve_kbytes",
        "vm.user_reserve_kbytes",
    ):
        assert name in names, name
    values = dict(listing)
    assert values["vm.panic_on_oom"] == "0"
    assert values["vm.oom_kill_allocating_task"] == "0"
    assert values["vm.swappiness"] == "60"
    assert "\t" in values["vm.lowmem_reserve_ratio"]  # one ratio per zone, tab-separated


async def test_get_sysctl_bad_input(fx: Fixture) -> None:
    details = await refused_unchanged(fx, NOT_FOUND, fx.client.get_sysctl("vm.nope"))
    assert details == "sysctl: cannot stat /proc/sys/vm/nope: No such file or directory"
    await refused_unchanged(fx, NOT_FOUND, fx.client.get_sysctl("kernel.panic"))
    await refused_unchanged(fx, INVALID, fx.client.get_sysctl(""))


async def test_sysctl_w_writes_and_says_what_it_wrote(fx: Fixture) -> None:
    c = fx.client
    generation = (await c.stats()).generation
    response = await c.set_sysctls(
        ["vm.overcommit_memory=2", "vm.swappiness = 10"],
        {"vm/panic_on_oom": "1"},
        admin_token=ADMIN,
    )
    assert list(response.lines) == [
        "vm.overcommit_memory = 2",
        "vm.swappiness = 10",
        "vm.panic_on_oom = 1",
    ]
    assert response.generation > generation
    assert await c.get_sysctl("vm.overcommit_memory") == "2"
    assert await c.get_sysctl("vm.swappiness") == "10"
    assert await c.get_sysctl("vm.panic_on_oom") == "1"
    # overcommit_kbytes and overcommit_ratio exclude each other (4.19).
    response = await c.set_sysctls(["vm.overcommit_kbytes=65536"], admin_token=ADMIN)
    assert sysctl_dict(response.written) == {
        "vm.overcommit_kbytes": "65536",
        "vm.overcommit_ratio": "0",
    }
    assert list(response.lines) == ["vm.overcommit_kbytes = 65536"]
    # C numbers: 0x10 is 16, as proc_dointvec reads it.
    await c.set_sysctls(["vm.swappiness=0x10"], admin_token=ADMIN)
    assert await c.get_sysctl("vm.swappiness") == "16"


@pytest.mark.parametrize(
    "assignment",
    [
        "vm.overcommit_memory=3",
        "vm.overcommit_memory=-1",
        "vm.panic_on_oom=5",
        "vm.swappiness=101",
        "vm.min_free_kbytes=-1",
        "vm.overcommit_ratio=-5",
        "vm.lowmem_reserve_ratio=0",
        "vm.oom_policy=2.4",
        "vm.swappiness=ten",
        "vm.swappiness=",
        "vm.swappiness=1 2",
        "vm.overcommit_kbytes=-1",
    ],
)
async def test_sysctl_w_refuses_a_bad_value_and_changes_nothing(
    fx: Fixture, assignment: str
) -> None:
    details = await refused_unchanged(
        fx, INVALID, fx.client.set_sysctls([assignment], admin_token=ADMIN)
    )
    name = assignment.partition("=")[0]
    assert details == f'sysctl: setting key "{name}": Invalid argument'


async def test_sysctl_w_is_all_or_nothing(fx: Fixture) -> None:
    # The first write is good, the second bad: neither happens.
    await refused_unchanged(
        fx,
        INVALID,
        fx.client.set_sysctls(["vm.overcommit_memory=2", "vm.swappiness=500"], admin_token=ADMIN),
    )
    await refused_unchanged(
        fx,
        NOT_FOUND,
        fx.client.set_sysctls(["vm.overcommit_memory=2", "vm.nope=1"], admin_token=ADMIN),
    )
    assert await fx.client.get_sysctl("vm.overcommit_memory") == "0"


async def test_sysctl_w_other_bad_input(fx: Fixture) -> None:
    c = fx.client
    details = await refused_unchanged(
        fx, NOT_FOUND, c.set_sysctls(["vm.nope=1"], admin_token=ADMIN)
    )
    assert "/proc/sys/vm/nope" in details
    await refused_unchanged(fx, INVALID, c.set_sysctls([], admin_token=ADMIN))
    await refused_unchanged(fx, INVALID, c.set_sysctls(["vm.swappiness"], admin_token=ADMIN))
    await refused_unchanged(fx, INVALID, c.set_sysctls(["=5"], admin_token=ADMIN))


async def test_sysctl_w_needs_the_admin_token(fx: Fixture) -> None:
    c = fx.client
    details = await refused_unchanged(fx, DENIED, c.set_sysctls(["vm.swappiness=10"]))
    assert details == "sysctl: permission denied on key 'vm.swappiness'"
    await refused_unchanged(fx, DENIED, c.set_sysctls(["vm.swappiness=10"], admin_token="guess"))
    # A token that shares the admin token's start is no better.
    await refused_unchanged(fx, DENIED, c.set_sysctls(["vm.swappiness=10"], admin_token=ADMIN[:-1]))


async def test_sysctl_p_applies_a_file(fx: Fixture) -> None:
    text = (
        "# memsim test\n"
        "vm.swappiness = 10\n"
        "; a comment too\n"
        "\n"
        "vm/overcommit_ratio=70\n"
        "-vm.not_a_sysctl = 1\n"  # a leading '-': its failure is skipped
        "-vm.panic_on_oom = 9\n"
    )
    lines = await fx.client.apply_sysctl_conf(text, "/etc/sysctl.d/10-test.conf", admin_token=ADMIN)
    assert lines == ["vm.swappiness = 10", "vm.overcommit_ratio = 70"]
    assert await fx.client.get_sysctl("vm.swappiness") == "10"
    assert await fx.client.get_sysctl("vm.overcommit_ratio") == "70"
    assert await fx.client.get_sysctl("vm.panic_on_oom") == "0"


async def test_sysctl_p_bad_input_names_the_line_and_changes_nothing(fx: Fixture) -> None:
    c = fx.client
    bad_value = "vm.swappiness = 10\nvm.overcommit_ratio = 70\nvm.panic_on_oom = 3\n"
    details = await refused_unchanged(
        fx, INVALID, c.apply_sysctl_conf(bad_value, admin_token=ADMIN)
    )
    assert details.startswith("/etc/sysctl.conf(3): "), details
    unknown = "vm.swappiness = 10\nvm.nope = 1\n"
    details = await refused_unchanged(
        fx, NOT_FOUND, c.apply_sysctl_conf(unknown, "my.conf", admin_token=ADMIN)
    )
    assert details.startswith("my.conf(2): "), details
    syntax = "vm.swappiness = 10\njust words\n"
    details = await refused_unchanged(fx, INVALID, c.apply_sysctl_conf(syntax, admin_token=ADMIN))
    assert details == "sysctl: /etc/sysctl.conf(2): invalid syntax"
    await refused_unchanged(fx, DENIED, c.apply_sysctl_conf("vm.swappiness = 10\n"))
    await refused_unchanged(
        fx, DENIED, c.apply_sysctl_conf("vm.swappiness = 10\n", admin_token="nope")
    )


async def test_the_watch_sees_the_state_then_every_change(fx: Fixture) -> None:
    c = fx.client
    stream = c.watch_sysctls()
    try:
        first = await next_message(stream, pb.WatchSysctlsResponse)
        assert sysctl_dict(first.sysctls) == dict(await c.list_sysctls())
        assert list(first.changed) == []
        assert (first.panicked, first.panic_message) == (False, "")
        await c.set_sysctls(["vm.min_free_kbytes=8192"], admin_token=ADMIN)
        change = await next_message(stream, pb.WatchSysctlsResponse)
        assert list(change.changed) == ["vm.min_free_kbytes"]
        assert sysctl_dict(change.sysctls)["vm.min_free_kbytes"] == "8192"
        assert change.generation > first.generation
        # A refused write tells the watcher nothing; the next good one does.
        await refused(INVALID, c.set_sysctls(["vm.min_free_kbytes=-3"], admin_token=ADMIN))
        await c.apply_sysctl_conf("vm.overcommit_ratio = 80\n", admin_token=ADMIN)
        change = await next_message(stream, pb.WatchSysctlsResponse)
        assert list(change.changed) == ["vm.overcommit_ratio", "vm.overcommit_kbytes"]
        assert sysctl_dict(change.sysctls)["vm.overcommit_ratio"] == "80"
        assert fx.policy.registry.get_sample_value("memsim_policy_sysctl_watchers") == 1
    finally:
        stream.cancel()
    await until_watching(fx, "memsim_policy_sysctl_watchers", 0)


# -- commit accounting --------------------------------------------------------------


async def test_mode_2_boundary_and_release(fx: Fixture) -> None:
    c = fx.client
    await c.set_sysctls(["vm.overcommit_memory=2"], admin_token=ADMIN)
    stats = await c.stats()
    totalram = policy_config().machine.totalram_pages
    assert stats.commit_limit_pages == totalram * 50 // 100 + SWAP_PAGES
    assert stats.committed_as_pages == 0
    limit = stats.commit_limit_pages
    # Root with total_vm under 32 pages is held to exactly CommitLimit, and
    # the kernel charges before it checks: the whole gap is one page too many.
    whole = await c.vm_enough_memory(3, limit, cap_sys_admin=True)
    assert (whole.ok, whole.bound_pages, whole.overcommit_memory) == (False, limit, 2)
    assert (await c.stats()).committed_as_pages == 0
    granted = await c.vm_enough_memory(3, limit - 1, cap_sys_admin=True)
    assert granted.ok
    assert (await c.stats()).committed_as_pages == limit - 1
    assert not (await c.vm_enough_memory(4, 1, cap_sys_admin=True)).ok
    assert await c.vm_unacct_memory(3, 100) == limit - 101
    assert await c.release_task(3) == limit - 101
    assert (await c.stats()).committed_as_pages == 0
    kb = PAGE // 1024
    assert list((await c.stats()).meminfo_lines) == [
        f"CommitLimit:  {limit * kb:8d} kB",
        f"Committed_AS: {0:8d} kB",
    ]


async def test_mode_1_always_and_a_user_loses_1_32(fx: Fixture) -> None:
    c = fx.client
    await c.set_sysctls(["vm.overcommit_memory=1"], admin_token=ADMIN)
    assert (await c.vm_enough_memory(3, 10**9)).ok
    assert await c.release_task(3) == 10**9
    await c.set_sysctls(["vm.overcommit_memory=0"], admin_token=ADMIN)
    # Mode 0: file pages + free swap + reclaimable slab = 3200; a user loses
    # 1/32 (100) and must stay strictly under.
    mem = pb.MemState(nr_file_pages=1000, nr_swap_pages=2000, nr_slab_reclaimable=200)
    assert (await c.vm_enough_memory(3, 3099, mem=mem, cap_sys_admin=True)).ok
    assert not (await c.vm_enough_memory(4, 3100, mem=mem)).ok
    assert (await c.vm_enough_memory(4, 3099, mem=mem)).ok


async def test_commit_accounting_bad_input(fx: Fixture) -> None:
    c = fx.client
    await refused_unchanged(fx, INVALID, c.vm_enough_memory(0, 10))
    await refused_unchanged(fx, INVALID, c.vm_enough_memory(-4, 10))
    await refused_unchanged(fx, INVALID, c.vm_unacct_memory(0, 1))
    # Releasing more than pid holds.
    await c.vm_enough_memory(3, 10)
    await refused_unchanged(fx, PRECONDITION, c.vm_unacct_memory(3, 11))
    await refused_unchanged(fx, PRECONDITION, c.vm_unacct_memory(4, 1))
    await refused_unchanged(fx, INVALID, c.release_task(0))
    await refused_unchanged(fx, INVALID, c.release_task(-1))


# -- the OOM killer -----------------------------------------------------------------


async def test_the_oom_killer_kills_the_task_the_rules_predict(fx: Fixture) -> None:
    c = fx.client
    response = await c.out_of_memory(GFP_HIGHUSER)
    assert response.decision == pb.OOM_DECISION_KILLED
    assert (response.chosen_pid, response.victim_pid, response.score) == (3, 3, 50_000)
    assert response.freed_pages == 40_000
    assert fx.fake.killed == [(3, 9)]
    assert "Out of memory: kill process 3 (hog) score 50000 or a child" in response.log_lines
    assert response.log_lines[-1] == "Killed process 3 (hog)"
    # The server chooses, but the worker child dies for it.
    response = await c.out_of_memory(GFP_HIGHUSER)
    assert (response.chosen_pid, response.victim_pid, response.score) == (4, 5, 40_001)
    assert "Out of memory: kill process 4 (server) score 40001 or a child" in response.log_lines
    assert response.log_lines[-1] == "Killed process 5 (worker)"
    # Round after round, in badness order, until only init is left: panic.
    victims = []
    for _ in range(3):
        response = await c.out_of_memory(GFP_HIGHUSER)
        assert response.decision == pb.OOM_DECISION_KILLED
        victims.append(response.victim_pid)
    assert victims == [4, 6, 2]  # 20000, 18000 (niced), 15000 (root)
    response = await c.out_of_memory(GFP_HIGHUSER)
    assert response.decision == pb.OOM_DECISION_PANIC
    assert response.message == PANIC_PREFIX + "Out of memory and no killable processes..."
    assert await c.panic_state() == (True, response.message)
    stats = await c.stats()
    assert (stats.oom_kills, stats.oom_panics, stats.processes_killed) == (5, 1, 5)
    registry = fx.policy.registry
    assert registry.get_sample_value("memsim_oom_kills_total") == 5
    assert registry.get_sample_value("memsim_panics_total") == 1
    assert registry.get_sample_value("memsim_oom_invocations_total", {"decision": "panic"}) == 1


async def test_oom_dump_tasks_lines_in_the_kernel_log(fx: Fixture) -> None:
    c = fx.client
    await c.out_of_memory(GFP_HIGHUSER, pid=4)
    log = await c.kernel_log()
    texts = [line.text for line in log.lines]
    assert texts[0] == "server invoked oom-killer: gfp_mask=0x201d2, order=0, oomkilladj=0"
    assert texts[1] == "[ pid ]   uid  tgid total_vm      rss cpu oom_adj name"
    assert texts[2:8] == [
        "[    1]     0     1      400      100   0       0 init",
        "[    2]     0     2    60000     5000   0       0 sshd",
        "[    3]  1000     3    50000    40000   0       0 hog",
        "[    4]  1000     4    20000    10000   0       0 server",
        "[    5]  1000     5    40000    30000   0       0 worker",
        "[    6]  1000     6     9000     1000   0       0 editor",
    ]
    assert texts[8:] == [
        "Out of memory: kill process 3 (hog) score 50000 or a child",
        "Killed process 3 (hog)",
    ]
    assert [line.seq for line in log.lines] == list(range(1, 11))
    assert (log.first_seq, log.last_seq) == (1, 10)
    # Only what came after since_seq; with oom_dump_tasks = 0 no dump.
    await c.set_sysctls(["vm.oom_dump_tasks=0"], admin_token=ADMIN)
    await c.out_of_memory(GFP_HIGHUSER)
    later = await c.kernel_log(since_seq=log.last_seq)
    assert [line.text for line in later.lines] == [
        "swapper invoked oom-killer: gfp_mask=0x201d2, order=0, oomkilladj=0",
        "Out of memory: kill process 4 (server) score 40001 or a child",
        "Killed process 5 (worker)",
    ]
    assert (await c.kernel_log(since_seq=later.last_seq)).lines == []


async def test_kernel_log_bad_input(fx: Fixture) -> None:
    details = await refused_unchanged(fx, INVALID, fx.client.kernel_log(since_seq=5))
    assert "past the newest" in details


async def test_oom_adj_steers_the_killer(fx: Fixture) -> None:
    c = fx.client
    assert await c.write_oom_adj(3, "-17", admin_token=ADMIN) == (-17, -1000)
    assert await c.write_oom_adj(6, "3", admin_token=ADMIN) == (3, 176)
    # hog is OOM_DISABLE; editor 18000 << 3 = 144000 beats server's 40001.
    assert await c.oom_score(6) == 144_000
    response = await c.out_of_memory(GFP_HIGHUSER)
    assert (response.chosen_pid, response.victim_pid, response.score) == (6, 6, 144_000)


async def test_panic_on_oom_1_panics_then_every_mutating_call_fails_until_reboot(
    fx: Fixture,
) -> None:
    c = fx.client
    stream = c.watch_sysctls()
    try:
        await next_message(stream, pb.WatchSysctlsResponse)
        await c.set_sysctls(["vm.panic_on_oom=1"], admin_token=ADMIN)
        await next_message(stream, pb.WatchSysctlsResponse)
        events = c.watch_oom_events(since_seq=0)
        response = await c.out_of_memory(GFP_HIGHUSER, pid=3)
        assert response.decision == pb.OOM_DECISION_PANIC
        line = PANIC_PREFIX + "out of memory. panic_on_oom is selected"
        assert response.message == line
        assert fx.fake.killed == []
        # The watchers hear of it.
        state = await next_message(stream, pb.WatchSysctlsResponse)
        assert (state.panicked, state.panic_message) == (True, line)
        event = await next_message(events, pb.WatchOomEventsResponse)
        assert (event.decision, event.message) == (pb.OOM_DECISION_PANIC, line)
        events.cancel()
        assert await c.panic_state() == (True, line)
        assert line in [x.text for x in (await c.kernel_log()).lines]
        before = await fx.state()
        mutating: list[Awaitable[object]] = [
            c.set_sysctls(["vm.panic_on_oom=0"], admin_token=ADMIN),
            c.apply_sysctl_conf("vm.panic_on_oom = 0\n", admin_token=ADMIN),
            c.vm_enough_memory(3, 1),
            c.vm_unacct_memory(3, 1),
            c.release_task(3),
            c.out_of_memory(GFP_HIGHUSER),
            c.write_oom_adj(3, "5", admin_token=ADMIN),
            c.create_cgroup("/batch", admin_token=ADMIN),
            c.remove_cgroup("/batch", admin_token=ADMIN),
            c.set_cgroup_limit("/batch", 1 << 20, admin_token=ADMIN),
            c.attach_to_cgroup("/", 3, admin_token=ADMIN),
            c.charge_cgroup(1, name="/"),
            c.uncharge_cgroup(1, name="/"),
        ]
        for call in mutating:
            assert await refused(PRECONDITION, call) == line
        assert await fx.state() == before
        # Reads still answer.
        assert await c.get_sysctl("vm.panic_on_oom") == "1"
        assert await c.oom_score(3) == 50_000
        assert (await c.stats()).panicked
        # Only root reboots; then everything is as at boot, and watchers hear it.
        await refused(DENIED, c.reboot(admin_token=""))
        await refused(DENIED, c.reboot(admin_token="wrong"))
        assert (await c.panic_state())[0]
        await c.reboot(admin_token=ADMIN)
        assert await c.panic_state() == (False, "")
        assert await c.get_sysctl("vm.panic_on_oom") == "0"
        state = await next_message(stream, pb.WatchSysctlsResponse)
        assert not state.panicked
        assert sorted(state.changed) == sorted(name for name, _ in await c.list_sysctls())
        await c.set_sysctls(["vm.swappiness=5"], admin_token=ADMIN)
        assert (await c.stats()).reboots == 1
        assert (await c.kernel_log()).lines[-1].text == "Restarting system."
    finally:
        stream.cancel()


async def test_panic_on_oom_2_panics_even_for_a_cpuset(fx: Fixture) -> None:
    c = fx.client
    await c.set_sysctls(["vm.panic_on_oom=1"], admin_token=ADMIN)
    # panic_on_oom = 1 spares a constrained allocation: one process dies.
    response = await c.out_of_memory(GFP_HIGHUSER, pid=3, constraint=pb.CONSTRAINT_CPUSET)
    assert response.decision == pb.OOM_DECISION_KILLED
    await c.set_sysctls(["vm.panic_on_oom=2"], admin_token=ADMIN)
    response = await c.out_of_memory(GFP_HIGHUSER, pid=4, constraint=pb.CONSTRAINT_CPUSET)
    assert response.decision == pb.OOM_DECISION_PANIC
    assert response.message == PANIC_PREFIX + "out of memory. Compulsory panic_on_oom is selected."


async def test_oom_kill_allocating_task_kills_the_caller(fx: Fixture) -> None:
    c = fx.client
    await c.set_sysctls(["vm.oom_kill_allocating_task=1"], admin_token=ADMIN)
    response = await c.out_of_memory(GFP_HIGHUSER, pid=6)
    assert (response.decision, response.victim_pid) == (pb.OOM_DECISION_KILLED, 6)
    assert "Out of memory (oom_kill_allocating_task)" in response.message


async def test_a_second_oom_call_during_a_kill_is_told_to_wait(fx: Fixture) -> None:
    c = fx.client
    fx.fake.kill_gate = asyncio.Event()
    first = asyncio.create_task(c.out_of_memory(GFP_HIGHUSER))
    try:
        for _ in range(200):  # until the first round is at the kill
            if (await c.kernel_log()).last_seq:
                break
            await asyncio.sleep(0.01)
        second = await c.out_of_memory(GFP_HIGHUSER)
        assert (second.decision, second.wait_pid) == (pb.OOM_DECISION_WAIT, 0)
    finally:
        fx.fake.kill_gate.set()
    response = await asyncio.wait_for(first, STREAM_TIMEOUT_S)
    assert response.victim_pid == 3
    assert fx.fake.killed == [(3, 9)]


async def test_a_kill_the_mmu_does_not_take_is_unavailable(fx: Fixture) -> None:
    fx.fake.kill_error = PeerUnavailable("the MMU failed to kill pid 3: UNAVAILABLE")
    details = await refused(grpc.StatusCode.UNAVAILABLE, fx.client.out_of_memory(GFP_HIGHUSER))
    assert "the MMU failed to kill pid 3" in details
    assert fx.fake.killed == []
    log = [line.text for line in (await fx.client.kernel_log()).lines]
    assert log[-1] == "oom-killer: could not signal process 3: MMU unavailable"
    # The caller retries once the MMU answers again.
    fx.fake.kill_error = None
    assert (await fx.client.out_of_memory(GFP_HIGHUSER)).victim_pid == 3


async def test_a_victim_still_dying_is_waited_for_not_killed_again(fx: Fixture) -> None:
    """TIF_MEMDIE: the MMU delivers a kill when the victim's call in flight
    ends; until the victim is gone the killer waits instead of killing more."""
    c = fx.client
    fx.fake.defer_kills = True
    first = await c.out_of_memory(GFP_HIGHUSER)
    assert (first.decision, first.victim_pid, first.freed_pages) == (pb.OOM_DECISION_KILLED, 3, 0)
    again = await c.out_of_memory(GFP_HIGHUSER)
    assert (again.decision, again.wait_pid) == (pb.OOM_DECISION_WAIT, 3)
    assert fx.fake.killed == [(3, 9)]
    fx.fake.die(3)
    fx.fake.defer_kills = False
    after = await c.out_of_memory(GFP_HIGHUSER)
    assert (after.decision, after.chosen_pid, after.victim_pid) == (pb.OOM_DECISION_KILLED, 4, 5)


async def test_oom_events_stream_and_replay(fx: Fixture) -> None:
    c = fx.client
    live = c.watch_oom_events()
    try:
        await until_watching(fx, "memsim_policy_oom_event_watchers", 1)
        await c.out_of_memory(GFP_HIGHUSER)
        event = await next_message(live, pb.WatchOomEventsResponse)
        assert (event.seq, event.decision) == (1, pb.OOM_DECISION_KILLED)
        assert (event.chosen_pid, event.victim_pid, event.victim_name) == (3, 3, "hog")
        assert (event.score, event.freed_pages) == (50_000, 40_000)
        assert event.constraint == pb.CONSTRAINT_NONE
        await c.out_of_memory(GFP_HIGHUSER)
        assert (await next_message(live, pb.WatchOomEventsResponse)).victim_pid == 5
    finally:
        live.cancel()
    replay = c.watch_oom_events(since_seq=1)
    try:
        event = await next_message(replay, pb.WatchOomEventsResponse)
        assert (event.seq, event.victim_pid) == (2, 5)
    finally:
        replay.cancel()


async def test_watch_oom_events_bad_input(fx: Fixture) -> None:
    stream = fx.client.watch_oom_events(since_seq=7)
    details = await refused(INVALID, asyncio.wait_for(stream.read(), STREAM_TIMEOUT_S))
    assert "past the newest OOM event" in details


async def test_out_of_memory_bad_input_kills_nothing(fx: Fixture) -> None:
    c = fx.client
    await refused_unchanged(fx, INVALID, c.out_of_memory(GFP_HIGHUSER, order=11))
    await refused_unchanged(fx, INVALID, c.out_of_memory(GFP_HIGHUSER, pid=-1))
    await refused_unchanged(fx, NOT_FOUND, c.out_of_memory(GFP_HIGHUSER, pid=99))
    await refused_unchanged(
        fx,
        INVALID,
        c.out_of_memory(
            GFP_HIGHUSER, constraint=pb.CONSTRAINT_MEMORY_POLICY, pid=3, nodemask=[0, 4]
        ),
    )
    await refused_unchanged(
        fx, INVALID, c.out_of_memory(GFP_HIGHUSER, constraint=pb.Constraint.ValueType(99))
    )
    await refused_unchanged(
        fx, INVALID, c.out_of_memory(GFP_HIGHUSER, constraint=pb.CONSTRAINT_MEMORY_CGROUP)
    )
    await refused_unchanged(
        fx,
        NOT_FOUND,
        c.out_of_memory(GFP_HIGHUSER, constraint=pb.CONSTRAINT_MEMORY_CGROUP, memcg="/none"),
    )
    await refused_unchanged(fx, INVALID, c.out_of_memory(GFP_HIGHUSER, memcg="/"))


async def test_a_mempolicy_oom_kills_the_allocating_task(fx: Fixture) -> None:
    response = await fx.client.out_of_memory(
        GFP_HIGHUSER, pid=6, constraint=pb.CONSTRAINT_MEMORY_POLICY, nodemask=[0]
    )
    assert (response.decision, response.victim_pid) == (pb.OOM_DECISION_KILLED, 6)


# -- /proc/PID/oom_score and oom_adj ---------------------------------------------------


async def test_oom_score_reads_badness(fx: Fixture) -> None:
    c = fx.client
    scores = {pid: await c.oom_score(pid) for pid in range(1, 7)}
    # init: (400 + 30001 + 25001 + 10001 + 4501) / 4 (root); init is never chosen.
    assert scores == {1: 17_476, 2: 15_000, 3: 50_000, 4: 40_001, 5: 40_000, 6: 18_000}
    await refused_unchanged(fx, INVALID, c.oom_score(0))
    await refused_unchanged(fx, NOT_FOUND, c.oom_score(99))


async def test_oom_adj_read_and_write_as_root(fx: Fixture) -> None:
    c = fx.client
    assert await c.oom_adj(3) == (0, 0)
    assert await c.write_oom_adj(3, "15", admin_token=ADMIN) == (15, 1000)
    assert await c.write_oom_adj(3, "-16\n", admin_token=ADMIN) == (-16, -941)
    assert await c.oom_adj(3) == (-16, -941)
    assert await c.write_oom_adj(3, "500", score_adj=True, admin_token=ADMIN) == (7, 500)
    assert await c.oom_adj(3) == (7, 500)


@pytest.mark.parametrize("text", ["16", "-18", "100", "abc", "", "5x", "-"])
async def test_oom_adj_out_of_range_or_malformed(fx: Fixture, text: str) -> None:
    details = await refused_unchanged(
        fx, INVALID, fx.client.write_oom_adj(3, text, admin_token=ADMIN)
    )
    assert details == "/proc/3/oom_adj: Invalid argument"


async def test_oom_adj_writes_by_a_process(fx: Fixture) -> None:
    c = fx.client
    # hog raises its own oom_adj, then may not lower it: no CAP_SYS_RESOURCE.
    assert await c.write_oom_adj(3, "5", writer_pid=3, writer_token="token-3") == (5, 294)
    details = await refused_unchanged(
        fx, DENIED, c.write_oom_adj(3, "4", writer_pid=3, writer_token="token-3")
    )
    assert details == "/proc/3/oom_adj: Permission denied"
    assert await c.oom_adj(3) == (5, 294)
    # editor holds CAP_SYS_RESOURCE: it may lower its own.
    assert await c.write_oom_adj(6, "-5", writer_pid=6, writer_token="token-6") == (-5, -294)
    # Another user's task (sshd is root's) is not the writer's to change.
    await refused_unchanged(
        fx, DENIED, c.write_oom_adj(2, "5", writer_pid=4, writer_token="token-4")
    )


async def test_write_oom_adj_bad_credentials(fx: Fixture) -> None:
    c = fx.client
    await refused_unchanged(fx, DENIED, c.write_oom_adj(3, "5"))
    await refused_unchanged(fx, DENIED, c.write_oom_adj(3, "5", admin_token="wrong"))
    await refused_unchanged(fx, DENIED, c.write_oom_adj(3, "5", writer_pid=3, writer_token="x"))
    await refused_unchanged(
        fx, INVALID, c.write_oom_adj(3, "5", admin_token=ADMIN, writer_pid=3, writer_token="x")
    )
    await refused_unchanged(fx, INVALID, c.write_oom_adj(3, "5", writer_pid=-2))
    await refused_unchanged(fx, INVALID, c.write_oom_adj(0, "5", admin_token=ADMIN))
    await refused_unchanged(fx, NOT_FOUND, c.write_oom_adj(99, "5", admin_token=ADMIN))
    await refused_unchanged(
        fx, INVALID, c.write_oom_adj(3, "1001", score_adj=True, admin_token=ADMIN)
    )
    request = pb.WriteOomAdjRequest(
        pid=3, text="5", file=pb.OomAdjFile.ValueType(9), admin_token=ADMIN
    )
    await refused_unchanged(fx, INVALID, c.stub.WriteOomAdj(request))


async def test_get_oom_adj_bad_input(fx: Fixture) -> None:
    await refused_unchanged(fx, INVALID, fx.client.oom_adj(0))
    await refused_unchanged(fx, NOT_FOUND, fx.client.oom_adj(42))


# -- memory cgroups --------------------------------------------------------------------


async def test_cgroups_create_limit_attach_charge(fx: Fixture) -> None:
    c = fx.client
    group = await c.create_cgroup("/batch", 1 << 20, admin_token=ADMIN)
    assert (group.name, group.limit_bytes, group.unlimited) == ("/batch", 1 << 20, False)
    group = await c.set_cgroup_limit("/batch", (1 << 20) + 1, admin_token=ADMIN)
    assert group.limit_bytes == (1 << 20) + PAGE  # rounded up to a page
    group = await c.attach_to_cgroup("/batch", 4, admin_token=ADMIN)
    assert list(group.pids) == [4]
    charged = await c.charge_cgroup(257, pid=4)
    assert (charged.ok, charged.name, charged.usage_bytes) == (True, "/batch", 257 * PAGE)
    over = await c.charge_cgroup(1, name="/batch")
    assert (over.ok, over.usage_bytes, over.failcnt) == (False, 257 * PAGE, 1)
    uncharged = await c.uncharge_cgroup(7, name="/batch")
    assert uncharged.usage_bytes == 250 * PAGE
    assert [g.name for g in await c.cgroups()] == ["/", "/batch"]
    await refused(PRECONDITION, c.remove_cgroup("/batch", admin_token=ADMIN))  # busy
    # The cgroup's OOM kills inside it: server (its worker child is outside
    # the group, but oom_kill_process still takes the child first).
    response = await c.out_of_memory(
        GFP_HIGHUSER, pid=4, constraint=pb.CONSTRAINT_MEMORY_CGROUP, memcg="/batch"
    )
    assert response.decision == pb.OOM_DECISION_KILLED
    assert response.chosen_pid == 4
    assert response.log_lines[-2].startswith("Memory cgroup out of memory: kill process 4")
    group = await c.set_cgroup_limit("/batch", None, admin_token=ADMIN)
    assert group.unlimited
    assert fx.policy.registry.get_sample_value(
        "memsim_policy_cgroup_usage_bytes", {"cgroup": "/batch"}
    ) == float(250 * PAGE)


async def test_create_cgroup_bad_input(fx: Fixture) -> None:
    c = fx.client
    await c.create_cgroup("/batch", admin_token=ADMIN)
    await refused_unchanged(
        fx, grpc.StatusCode.ALREADY_EXISTS, c.create_cgroup("/batch", admin_token=ADMIN)
    )
    for name in ("batch", "", "/batch/../x", "/a//b", "/batch/."):
        await refused_unchanged(fx, INVALID, c.create_cgroup(name, admin_token=ADMIN))
    await refused_unchanged(fx, NOT_FOUND, c.create_cgroup("/none/child", admin_token=ADMIN))
    await refused_unchanged(fx, DENIED, c.create_cgroup("/other", admin_token=""))
    await refused_unchanged(fx, DENIED, c.create_cgroup("/other", admin_token="x"))


async def test_remove_cgroup_bad_input(fx: Fixture) -> None:
    c = fx.client
    await c.create_cgroup("/batch", admin_token=ADMIN)
    await c.create_cgroup("/batch/a", admin_token=ADMIN)
    await refused_unchanged(fx, NOT_FOUND, c.remove_cgroup("/none", admin_token=ADMIN))
    await refused_unchanged(fx, PRECONDITION, c.remove_cgroup("/", admin_token=ADMIN))
    await refused_unchanged(fx, PRECONDITION, c.remove_cgroup("/batch", admin_token=ADMIN))
    await refused_unchanged(fx, DENIED, c.remove_cgroup("/batch/a", admin_token=""))
    await c.remove_cgroup("/batch/a", admin_token=ADMIN)
    await c.remove_cgroup("/batch", admin_token=ADMIN)
    assert [g.name for g in await c.cgroups()] == ["/"]


async def test_set_cgroup_limit_bad_input(fx: Fixture) -> None:
    c = fx.client
    await c.create_cgroup("/batch", 1 << 20, admin_token=ADMIN)
    await refused_unchanged(fx, INVALID, c.set_cgroup_limit("/", 1 << 20, admin_token=ADMIN))
    await refused_unchanged(fx, NOT_FOUND, c.set_cgroup_limit("/none", 1, admin_token=ADMIN))
    await refused_unchanged(fx, DENIED, c.set_cgroup_limit("/batch", 1, admin_token="x"))


async def test_attach_to_cgroup_bad_input(fx: Fixture) -> None:
    c = fx.client
    await c.create_cgroup("/batch", admin_token=ADMIN)
    await refused_unchanged(fx, NOT_FOUND, c.attach_to_cgroup("/none", 3, admin_token=ADMIN))
    await refused_unchanged(fx, NOT_FOUND, c.attach_to_cgroup("/batch", 99, admin_token=ADMIN))
    await refused_unchanged(fx, INVALID, c.attach_to_cgroup("/batch", 0, admin_token=ADMIN))
    await refused_unchanged(fx, INVALID, c.attach_to_cgroup("/batch", -3, admin_token=ADMIN))
    await refused_unchanged(fx, DENIED, c.attach_to_cgroup("/batch", 3, admin_token=""))


async def test_get_cgroups_bad_input(fx: Fixture) -> None:
    await refused_unchanged(fx, NOT_FOUND, fx.client.cgroups("/none"))


async def test_charge_and_uncharge_bad_input(fx: Fixture) -> None:
    c = fx.client
    await c.create_cgroup("/batch", admin_token=ADMIN)
    await refused_unchanged(fx, INVALID, c.charge_cgroup(1))  # no group, no pid
    await refused_unchanged(fx, INVALID, c.charge_cgroup(1, pid=0))
    await refused_unchanged(fx, NOT_FOUND, c.charge_cgroup(1, name="/none"))
    await refused_unchanged(fx, INVALID, c.uncharge_cgroup(1))
    await refused_unchanged(fx, NOT_FOUND, c.uncharge_cgroup(1, name="/none"))
    await refused_unchanged(fx, PRECONDITION, c.uncharge_cgroup(1, name="/batch"))


# -- the admin credential -----------------------------------------------------------------


async def test_with_the_empty_token_allowed_anyone_is_root() -> None:
    fake = FakeTasks(machine_tasks())
    async with running_policy(policy_config(open_admin=True), fake) as policy:
        c = policy.client
        await c.set_sysctls(["vm.swappiness=1"])
        assert await c.get_sysctl("vm.swappiness") == "1"
        assert await c.write_oom_adj(3, "-3") == (-3, -176)
        # A token is refused: this machine has none.
        await refused(DENIED, c.set_sysctls(["vm.swappiness=2"], admin_token="something"))
        await c.reboot(admin_token="")


async def test_with_no_token_configured_root_calls_are_refused() -> None:
    config = replace(policy_config(), admin_token=None)
    async with running_policy(config, FakeTasks(machine_tasks())) as policy:
        c = policy.client
        details = await refused(DENIED, c.reboot(admin_token=""))
        assert "no admin credential is configured" in details
        await refused(DENIED, c.set_sysctls(["vm.swappiness=1"]))
        await refused(DENIED, c.create_cgroup("/x", admin_token="anything"))


async def test_reboot_bad_input(fx: Fixture) -> None:
    await refused_unchanged(fx, DENIED, fx.client.reboot(admin_token="not it"))


async def test_read_only_calls_take_no_input_and_always_answer(fx: Fixture) -> None:
    """ListSysctls, GetPanicState, GetPolicyStats and WatchSysctls have empty
    requests: nothing to refuse. They answer, also with nothing to report."""
    c = fx.client
    assert len(await c.list_sysctls()) == 12
    assert await c.panic_state() == (False, "")
    stats = await c.stats()
    assert (stats.page_size_bytes, stats.oom_kills, stats.panicked) == (PAGE, 0, False)


# -- over the real MMU ----------------------------------------------------------------------


async def spawn(
    mmu: Any, name: str, uid: int = 1000, pages: int = 0, touch: int = 0
) -> tuple[int, str]:
    created = await mmu.CreateProcess(mmu_pb.CreateProcessRequest(name=name, uid=uid))
    caller = mmu_pb.Caller(pid=created.pid, token=created.token)
    if pages:
        mapped = await mmu.Mmap(
            mmu_pb.MmapRequest(caller=caller, length_bytes=pages * PAGE, prot=0x3, flags=0x22)
        )
        if touch:
            await mmu.Touch(
                mmu_pb.TouchRequest(
                    caller=caller, address=mapped.address, length_bytes=touch * PAGE
                )
            )
    return created.pid, created.token


async def test_over_the_real_mmu_the_victim_dies(buddy: BuddyHarness, tmp_path: Path) -> None:
    async with policy_over_mmu(buddy, tmp_path) as stack:
        mmu = mmu_pb2_grpc.MmuStub(stack.mmu_channel)
        c = stack.policy.client
        small, _ = await spawn(mmu, "small", pages=256, touch=16)
        hog, hog_token = await spawn(mmu, "hog", pages=4096, touch=1024)
        daemon, _ = await spawn(mmu, "rootd", uid=0, pages=8192, touch=16)  # /4: 2048+
        assert await c.oom_score(hog) > await c.oom_score(daemon) > await c.oom_score(small)
        # The process's own writes of oom_adj go through the MMU's token check.
        assert await c.write_oom_adj(hog, "2", writer_pid=hog, writer_token=hog_token) == (2, 117)
        assert (await stack.mmu.process(hog)).oom_adj == 2
        await refused(DENIED, c.write_oom_adj(hog, "1", writer_pid=hog, writer_token=hog_token))
        await refused(DENIED, c.write_oom_adj(hog, "3", writer_pid=hog, writer_token="bad"))
        assert await c.oom_adj(hog) == (2, 117)
        response = await c.out_of_memory(GFP_HIGHUSER, pid=small)
        assert response.decision == pb.OOM_DECISION_KILLED
        assert (response.chosen_pid, response.victim_pid) == (hog, hog)
        assert response.freed_pages >= 1024
        info = await stack.mmu.process(hog)
        assert (info.state, info.exit_signal) == ("X", 9)
        alive = [p.pid for p in (await stack.mmu.processes()).processes]
        assert hog not in alive
        assert {1, small, daemon} <= set(alive)
        dump = [line.text for line in (await c.kernel_log()).lines]
        assert any(text.endswith(" hog") and text.startswith(f"[{hog:5d}]") for text in dump)
        # A dead process has no /proc files.
        await refused(NOT_FOUND, c.oom_adj(hog))
        await refused(NOT_FOUND, c.oom_score(hog))
        # Root disables the daemon's killing: small is next.
        await c.write_oom_adj(daemon, "-17", admin_token=ADMIN)
        response = await c.out_of_memory(GFP_HIGHUSER)
        assert response.victim_pid == small
        assert (await stack.mmu.process(small)).state == "X"


async def test_the_mmu_connects_itself_as_the_task_source(
    buddy: BuddyHarness, tmp_path: Path
) -> None:
    async with policy_over_mmu(buddy, tmp_path, connect=True) as stack:
        c = stack.policy.client
        assert (await c.stats()).mmu_address == stack.mmu_address
        # Connecting again to the same address changes nothing.
        assert await c.connect_task_source(stack.mmu_address) == stack.mmu_address
        mmu = mmu_pb2_grpc.MmuStub(stack.mmu_channel)
        hog, _ = await spawn(mmu, "hog", pages=2048, touch=64)
        response = await c.out_of_memory(GFP_HIGHUSER)
        assert response.victim_pid == hog
        assert (await stack.mmu.process(hog)).state == "X"
        for bad in ("", "nowhere", "host:port", "127.0.0.1:99999"):
            await refused(INVALID, c.connect_task_source(bad))
        assert (await c.stats()).mmu_address == stack.mmu_address


async def test_an_unreachable_mmu_is_unavailable_and_changes_nothing() -> None:
    async with running_policy(policy_config("127.0.0.1:1")) as policy:
        c = policy.client
        before = await c.stats()
        details = await refused(grpc.StatusCode.UNAVAILABLE, c.out_of_memory(GFP_HIGHUSER))
        assert "the MMU" in details
        await refused(grpc.StatusCode.UNAVAILABLE, c.oom_score(2))
        await refused(grpc.StatusCode.UNAVAILABLE, c.write_oom_adj(2, "1", admin_token=ADMIN))
        assert await c.stats() == before
        # What needs no MMU still works.
        assert await c.get_sysctl("vm.swappiness") == "60"


# -- the process -----------------------------------------------------------------------------


@pytest.mark.e2e
async def test_python_m_starts_the_service_on_the_shared_bootstrap(tmp_path: Path) -> None:
    ready = tmp_path / "policy.ready"
    env = {
        **os.environ,
        "MEMSIM_POLICY_LISTEN": "127.0.0.1:0",
        "MEMSIM_POLICY_METRICS_LISTEN": "127.0.0.1:0",
        "MEMSIM_READY_FILE": str(ready),
        "MEMSIM_MMU_ADDR": "127.0.0.1:1",
        "MEMSIM_ADMIN_TOKEN": "process-token",
        "MEMSIM_PROFILE": "x86_32",
        "MEMSIM_MEM": "64M",
    }
    env.pop("MEMSIM_ALLOW_EMPTY_ADMIN_TOKEN", None)
    log = tmp_path / "policy.log"
    with log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "memsim.services.policy",
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        for _ in range(300):
            if ready.exists() or process.returncode is not None:
                break
            await asyncio.sleep(0.05)
        assert ready.exists(), log.read_text()
        info = json.loads(ready.read_text())
        channel = open_channel(info["address"])
        try:
            health = health_pb2_grpc.HealthStub(channel)
            checked = await health.Check(
                health_pb2.HealthCheckRequest(service="memsim.policy.v1.Policy")
            )
            assert checked.status == health_pb2.HealthCheckResponse.SERVING
            c = PolicyClient(channel)
            await c.set_sysctls(["vm.swappiness=7"], admin_token="process-token")
            assert await c.get_sysctl("vm.swappiness") == "7"
            await refused(DENIED, c.set_sysctls(["vm.swappiness=8"]))
            await refused(grpc.StatusCode.UNAVAILABLE, c.out_of_memory(GFP_HIGHUSER))
        finally:
            await channel.close(None)
        host, port = info["metrics_address"].rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /metrics HTTP/1.0\r\n\r\n")
        body = (await asyncio.wait_for(reader.read(), STREAM_TIMEOUT_S)).decode()
        writer.close()
        assert 'memsim_policy_sysctl{name="vm.swappiness"} 7.0' in body
        assert "memsim_commit_limit_pages" in body
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await asyncio.wait_for(process.wait(), 10)
