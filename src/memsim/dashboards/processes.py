"""Processes: who holds the memory, and the faults, swap, commit refusals
and OOM kills they meet."""

from __future__ import annotations

from grafana_foundation_sdk.models.dashboard import Dashboard

from memsim.dashboards.common import (
    MMU,
    POLICY,
    RATE,
    Query,
    bars_panel,
    build,
    new_dashboard,
    oom_kill_annotation,
    rate_panel,
    timeseries_panel,
)

UID = "memsim-processes"
TITLE = "memsim / Processes"

TOP = 10
TOP_RSS = f"topk({TOP}, sum by (pid, comm) (memsim_mmu_process_resident_pages{{{MMU}}}))"


def dashboard() -> Dashboard:
    d = new_dashboard(
        UID,
        TITLE,
        "The simulated processes as ps and /proc/PID/status show them, and their faults.",
        oom_kill_annotation(),
    )
    d = d.with_panel(
        bars_panel(
            f"Top {TOP} processes by RSS",
            "Resident pages of the processes that have the most (ps's RSS, in pages).",
            [Query(TOP_RSS, "{{pid}} {{comm}}")],
        )
    )
    d = d.with_panel(
        timeseries_panel(
            f"RSS of the top {TOP} processes",
            "Resident pages over time of the processes that have the most.",
            [Query(TOP_RSS, "{{pid}} {{comm}}")],
        )
    )
    d = d.with_panel(
        rate_panel(
            "Page faults per second by kind",
            "minor: a frame found or zeroed; major: the page came back from swap; "
            "protection: a write to a read-only page (copy-on-write or SIGSEGV).",
            [
                Query(
                    f"sum by (kind) (rate(memsim_mmu_page_faults_total{{{MMU}}}[{RATE}]))",
                    "{{kind}}",
                )
            ],
        )
    )
    d = d.with_panel(
        timeseries_panel(
            "Processes alive",
            "Processes the MMU knows and that have not exited.",
            [Query(f"sum(memsim_mmu_processes{{{MMU}}})", "processes")],
            unit="none",
        )
    )
    d = d.with_panel(
        timeseries_panel(
            "Resident, swapped and written pages",
            "Pages with a frame of their own summed over all processes (shared frames count "
            "once per process), swap slots in use, frames holding written bytes.",
            [
                Query(f"sum(memsim_mmu_resident_pages{{{MMU}}})", "resident (sum of RSS)"),
                Query(f"sum(memsim_mmu_swapped_pages{{{MMU}}})", "swapped"),
                Query(f"sum(memsim_mmu_written_pages{{{MMU}}})", "written"),
            ],
        )
    )
    d = d.with_panel(
        timeseries_panel(
            "LRU lists",
            "User pages on the active and inactive lists that reclaim scans.",
            [Query(f"sum by (list) (memsim_mmu_lru_pages{{{MMU}}})", "{{list}}")],
            stack=True,
        )
    )
    d = d.with_panel(
        rate_panel(
            "Commit refusals per second",
            "mmap, brk, mprotect, fork, exec and shmget refused by the overcommit check (ENOMEM).",
            [Query(f"sum(rate(memsim_mmu_commit_refusals_total{{{MMU}}}[{RATE}]))", "refusals")],
        )
    )
    d = d.with_panel(
        rate_panel(
            "OOM killer rounds by decision",
            "OutOfMemory rounds per second: killed a victim, waited for one dying, "
            "panicked, gave up.",
            [
                Query(
                    f"sum by (decision) (rate(memsim_oom_invocations_total{{{POLICY}}}[{RATE}]))",
                    "{{decision}}",
                ),
                Query(
                    f"sum(rate(memsim_oom_killed_processes_total{{{POLICY}}}[{RATE}]))",
                    "processes killed",
                ),
            ],
        )
    )
    d = d.with_panel(
        timeseries_panel(
            "Memory cgroups: usage",
            "memory.usage_in_bytes of each memory cgroup.",
            [
                Query(
                    f"sum by (cgroup) (memsim_policy_cgroup_usage_bytes{{{POLICY}}})",
                    "{{cgroup}}",
                )
            ],
            unit="bytes",
            width=24,
        )
    )
    return build(d)
