"""Prometheus view of the policy service, read at scrape time: the vm.*
sysctls, Committed_AS and CommitLimit, what the OOM killer did, the panic
state, the watchers and the memory cgroups."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from memsim.services.policy.memcg import RESOURCE_MAX
from memsim.services.policy.service import PolicyService


class PolicyCollector(Collector):
    def __init__(self, service: PolicyService) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        service = self.service
        policy = service.policy
        counters = service.counters
        invocations = CounterMetricFamily(
            "memsim_oom_invocations",
            "OutOfMemory rounds by what the killer decided (killed, wait, panic, give_up).",
            labels=["decision"],
        )
        for decision, count in counters.decisions.items():
            invocations.add_metric([decision], count)
        kills = CounterMetricFamily(
            "memsim_oom_kills", "OOM rounds that killed a victim (vmstat's oom_kill)."
        )
        kills.add_metric([], counters.decisions["killed"])
        killed = CounterMetricFamily(
            "memsim_oom_killed_processes",
            "Processes sent SIGKILL by the OOM killer (victims and their mm's other users).",
        )
        killed.add_metric([], counters.processes_killed)
        freed = CounterMetricFamily(
            "memsim_oom_freed_pages", "Pages the MMU freed for the OOM killer's kills."
        )
        freed.add_metric([], counters.freed_pages)
        panics = CounterMetricFamily("memsim_panics", "Kernel panics of the OOM killer.")
        panics.add_metric([], counters.decisions["panic"])
        panicked = GaugeMetricFamily(
            "memsim_policy_panicked", "1 while the machine is panicked (until reboot)."
        )
        panicked.add_metric([], 1 if policy.panic_message is not None else 0)
        reboots = CounterMetricFamily("memsim_policy_reboots", "Reboots of the policy service.")
        reboots.add_metric([], counters.reboots)
        writes = CounterMetricFamily(
            "memsim_policy_sysctl_writes", "sysctl files written (sysctl -w and -p)."
        )
        writes.add_metric([], counters.sysctl_writes)
        log_lines = CounterMetricFamily(
            "memsim_policy_kernel_log_lines", "Lines printed to the kernel log."
        )
        log_lines.add_metric([], service.log.seq)
        yield from (invocations, kills, killed, freed, panics, panicked, reboots, writes, log_lines)
        yield from self._sysctls()
        committed = GaugeMetricFamily(
            "memsim_committed_as_pages", "Committed_AS: memory committed to processes."
        )
        committed.add_metric([], max(policy.ledger.committed, 0))
        limit = GaugeMetricFamily(
            "memsim_commit_limit_pages", "CommitLimit: what overcommit mode 2 lets be committed."
        )
        limit.add_metric([], service.commit_limit_pages)
        watchers = service.watchers
        sysctl_watchers = GaugeMetricFamily(
            "memsim_policy_sysctl_watchers", "Open WatchSysctls streams."
        )
        sysctl_watchers.add_metric([], watchers["sysctls"])
        event_watchers = GaugeMetricFamily(
            "memsim_policy_oom_event_watchers", "Open WatchOomEvents streams."
        )
        event_watchers.add_metric([], watchers["oom_events"])
        yield from (committed, limit, sysctl_watchers, event_watchers)
        yield from self._cgroups()

    def _sysctls(self) -> Iterator[Metric]:
        sysctls = self.service.policy.sysctls
        scalar = GaugeMetricFamily("memsim_policy_sysctl", "vm.* sysctls.", labels=["name"])
        vector = GaugeMetricFamily(
            "memsim_policy_sysctl_element",
            "vm.* sysctls that hold one value per zone (lowmem_reserve_ratio).",
            labels=["name", "index"],
        )
        choice = InfoMetricFamily("memsim_policy_sysctl_choice", "vm.* sysctls that hold a word.")
        for name, value in sysctls.snapshot().items():
            if isinstance(value, tuple):
                for index, element in enumerate(value):
                    vector.add_metric([name, str(index)], element)
            elif isinstance(value, str):
                choice.add_metric([], {"name": name, "value": value})
            else:
                scalar.add_metric([name], value)
        yield from (scalar, vector, choice)

    def _cgroups(self) -> Iterator[Metric]:
        usage = GaugeMetricFamily(
            "memsim_policy_cgroup_usage_bytes", "memory.usage_in_bytes.", labels=["cgroup"]
        )
        limit = GaugeMetricFamily(
            "memsim_policy_cgroup_limit_bytes",
            "memory.limit_in_bytes (+Inf: unlimited).",
            labels=["cgroup"],
        )
        failcnt = CounterMetricFamily(
            "memsim_policy_cgroup_charge_failures",
            "memory.failcnt: charges refused at the limit.",
            labels=["cgroup"],
        )
        tasks = GaugeMetricFamily(
            "memsim_policy_cgroup_tasks", "Processes in the group.", labels=["cgroup"]
        )
        for name, group in sorted(self.service.policy.cgroups.groups.items()):
            usage.add_metric([name], group.usage_bytes)
            unlimited = group.limit_bytes >= RESOURCE_MAX
            limit.add_metric([name], float("inf") if unlimited else group.limit_bytes)
            failcnt.add_metric([name], group.failcnt)
            tasks.add_metric([name], len(group.tasks))
        yield from (usage, limit, failcnt, tasks)
