"""The policy service's Prometheus collector, read from a fresh registry at
scrape time: sysctls, commit accounting, OOM decisions, panics and watchers;
and the service's TIF_MEMDIE marks, which the OOM counters follow."""

from __future__ import annotations

from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry

from memsim.profiles.loader import load_profile
from memsim.services.policy.badness import Task
from memsim.services.policy.config import PolicyConfig
from memsim.services.policy.core import Policy
from memsim.services.policy.errors import NoSuchTask, NotPermitted
from memsim.services.policy.metrics import PolicyCollector
from memsim.services.policy.overcommit import MemState
from memsim.services.policy.ports import SIGKILL, TaskList
from memsim.services.policy.service import DYING_TIMEOUT_S, OomCall, PolicyService, decision_name

ADMIN = "metrics-admin"
SWAP_BYTES = 16 << 20


class Tasks:
    """The smallest task source: a dict of tasks; a kill removes one."""

    def __init__(self, tasks: list[Task]) -> None:
        self.by_pid = {t.pid: t for t in tasks}

    async def tasks(self) -> TaskList:
        return TaskList(sorted(self.by_pid.values(), key=lambda t: t.pid), 0)

    async def process(self, pid: int) -> Task:
        if pid not in self.by_pid:
            raise NoSuchTask(f"no process with pid {pid}")
        return self.by_pid[pid]

    async def kill(self, pid: int, signal: int = SIGKILL) -> int:
        task = self.by_pid.pop(pid, None)
        if task is None:
            raise NoSuchTask(f"no process with pid {pid}")
        return task.rss

    async def set_oom_adj(self, pid: int, oom_adj: int, oom_score_adj: int) -> None:
        self.by_pid[pid] = replace(self.by_pid[pid], oom_adj=oom_adj, oom_score_adj=oom_score_adj)

    async def set_cgroup(self, pid: int, name: str) -> None:
        task = await self.process(pid)
        self.by_pid[pid] = replace(task, memcg=name)

    async def check_caller(self, pid: int, token: str) -> None:
        raise NotPermitted("no process may write here")


@pytest.fixture
def config() -> PolicyConfig:
    return PolicyConfig(
        load_profile("x86_32", mem="64M"), "127.0.0.1:1", ADMIN, swap_bytes=SWAP_BYTES
    )


def make(config: PolicyConfig) -> tuple[PolicyService, CollectorRegistry]:
    tasks = Tasks(
        [
            Task(1, "init", total_vm=100, rss=10),
            Task(2, "hog", uid=1000, total_vm=5000, rss=3000, ppid=1),
            Task(3, "cat", uid=1000, total_vm=100, rss=50, ppid=1),
        ]
    )
    policy = Policy(config.boot_sysctls(), page_size=config.profile.page_size)
    service = PolicyService(policy, tasks, admin_token=ADMIN, machine=config.machine)
    registry = CollectorRegistry()
    registry.register(PolicyCollector(service))
    return service, registry


def test_sysctls_are_gauges_read_at_scrape_time(config: PolicyConfig) -> None:
    service, registry = make(config)
    value = registry.get_sample_value
    assert value("memsim_policy_sysctl", {"name": "vm.overcommit_ratio"}) == 50
    assert value("memsim_policy_sysctl", {"name": "vm.panic_on_oom"}) == 0
    assert value("memsim_policy_sysctl_element", {"name": "vm.lowmem_reserve_ratio", "index": "0"})
    assert value("memsim_policy_sysctl_choice_info", {"name": "vm.oom_policy", "value": "2.6.24"})
    service.set_sysctls(["vm.overcommit_ratio=80", "vm.panic_on_oom=2"], [], ADMIN)
    assert value("memsim_policy_sysctl", {"name": "vm.overcommit_ratio"}) == 80
    assert value("memsim_policy_sysctl", {"name": "vm.panic_on_oom"}) == 2
    # Files written: overcommit_ratio also zeroes overcommit_kbytes.
    assert value("memsim_policy_sysctl_writes_total") == 3


def test_commit_limit_and_committed_as_in_pages(config: PolicyConfig) -> None:
    service, registry = make(config)
    machine = config.machine
    limit = machine.totalram_pages * 50 // 100 + SWAP_BYTES // 4096
    assert registry.get_sample_value("memsim_commit_limit_pages") == limit
    assert registry.get_sample_value("memsim_committed_as_pages") == 0
    service.vm_enough_memory(
        2,
        300,
        MemState(machine.totalram_pages, nr_file_pages=10_000),
        cap_sys_admin=False,
        total_vm=0,
    )
    assert registry.get_sample_value("memsim_committed_as_pages") == 300
    service.set_sysctls(["vm.overcommit_ratio=100"], [], ADMIN)
    assert registry.get_sample_value("memsim_commit_limit_pages") == (
        machine.totalram_pages + SWAP_BYTES // 4096
    )


async def test_oom_counters_panics_and_reboots(config: PolicyConfig) -> None:
    service, registry = make(config)
    value = registry.get_sample_value
    assert value("memsim_oom_kills_total") == 0
    outcome = await service.out_of_memory(OomCall())
    assert outcome.freed_pages == 3000
    assert value("memsim_oom_kills_total") == 1
    assert value("memsim_oom_killed_processes_total") == 1
    assert value("memsim_oom_freed_pages_total") == 3000
    assert value("memsim_oom_invocations_total", {"decision": "killed"}) == 1
    assert value("memsim_oom_invocations_total", {"decision": "panic"}) == 0
    assert value("memsim_policy_kernel_log_lines_total") == service.log.seq > 0
    service.set_sysctls(["vm.panic_on_oom=1"], [], ADMIN)
    await service.out_of_memory(OomCall())
    assert value("memsim_panics_total") == 1
    assert value("memsim_oom_invocations_total", {"decision": "panic"}) == 1
    assert value("memsim_policy_panicked") == 1
    service.reboot(ADMIN)
    assert value("memsim_policy_panicked") == 0
    assert value("memsim_policy_reboots_total") == 1
    # Counters count since the service started: a reboot keeps them.
    assert value("memsim_panics_total") == 1
    assert value("memsim_policy_sysctl", {"name": "vm.panic_on_oom"}) == 0


def test_watchers_and_cgroups(config: PolicyConfig) -> None:
    service, registry = make(config)
    value = registry.get_sample_value
    assert value("memsim_policy_sysctl_watchers") == 0
    watcher = service.watch_sysctls()
    events = service.watch_oom_events()
    assert value("memsim_policy_sysctl_watchers") == 1
    assert value("memsim_policy_oom_event_watchers") == 1
    service.unwatch_sysctls(watcher)
    service.unwatch_oom_events(events)
    assert value("memsim_policy_sysctl_watchers") == 0
    assert value("memsim_policy_oom_event_watchers") == 0
    service.create_cgroup("/batch", 8192, ADMIN)
    service.charge_cgroup("/batch", None, 2)
    service.charge_cgroup("/batch", None, 1)  # over the limit: refused, counted
    assert value("memsim_policy_cgroup_usage_bytes", {"cgroup": "/batch"}) == 8192
    assert value("memsim_policy_cgroup_limit_bytes", {"cgroup": "/batch"}) == 8192
    assert value("memsim_policy_cgroup_limit_bytes", {"cgroup": "/"}) == float("inf")
    assert value("memsim_policy_cgroup_charge_failures_total", {"cgroup": "/batch"}) == 1


async def test_a_dying_mark_expires(config: PolicyConfig) -> None:
    """A victim the task source keeps listing is waited for, but not for ever."""
    now = [100.0]
    tasks = Tasks([Task(1, "init"), Task(2, "stuck", uid=1000, total_vm=500, rss=9)])

    async def kill(pid: int, signal: int = SIGKILL) -> int:
        return 0  # the kill never lands

    tasks.kill = kill  # type: ignore[method-assign]
    policy = Policy(config.boot_sysctls(), page_size=config.profile.page_size)
    service = PolicyService(
        policy, tasks, admin_token=ADMIN, machine=config.machine, clock=lambda: now[0]
    )
    assert decision_name((await service.out_of_memory(OomCall())).decision) == "killed"
    assert decision_name((await service.out_of_memory(OomCall())).decision) == "wait"
    now[0] += DYING_TIMEOUT_S + 1
    assert decision_name((await service.out_of_memory(OomCall())).decision) == "killed"
