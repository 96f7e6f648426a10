"""Machine overview: where the pages are, per zone and in all, the
watermarks, the commit accounting, swap and reclaim, and the OOM kills."""

from __future__ import annotations

from grafana_foundation_sdk.models.dashboard import Dashboard

from memsim.dashboards.common import (
    MMU,
    POLICY,
    RATE,
    SLAB,
    ZONE,
    Query,
    build,
    new_dashboard,
    oom_kill_annotation,
    panic_annotation,
    rate_panel,
    stat_panel,
    timeseries_panel,
)

UID = "memsim-overview"
TITLE = "memsim / Machine overview"

# sum by (node, zone) keeps the join of the zone gauges to their own labels.
BY_ZONE = "sum by (node, zone)"


def dashboard() -> Dashboard:
    d = new_dashboard(
        UID,
        TITLE,
        "The simulated machine at a glance: zones, watermarks, commit, swap, reclaim, OOM kills.",
        oom_kill_annotation(),
        panic_annotation(),
    )

    d = d.with_panel(
        stat_panel(
            "Free pages",
            "NR_FREE_PAGES of every zone: pages free in buddy.",
            Query(f"sum(memsim_zone_free_pages{{{ZONE}}})"),
        )
    )
    d = d.with_panel(
        stat_panel(
            "Processes",
            "Processes alive in the MMU.",
            Query(f"sum(memsim_mmu_processes{{{MMU}}})"),
        )
    )
    d = d.with_panel(
        stat_panel(
            "Committed_AS / CommitLimit",
            "Memory committed to processes against what overcommit mode 2 would allow.",
            Query(
                f"sum(memsim_committed_as_pages{{{POLICY}}})"
                f" / sum(memsim_commit_limit_pages{{{POLICY}}})"
            ),
            unit="percentunit",
            red_from=1,
        )
    )
    d = d.with_panel(
        stat_panel(
            "Swap used",
            "Swap slots in use over the size of the swap area.",
            Query(
                f"sum(memsim_mmu_swapped_pages{{{MMU}}})"
                f" / sum(memsim_mmu_swap_total_pages{{{MMU}}})"
            ),
            unit="percentunit",
            red_from=0.9,
        )
    )
    d = d.with_panel(
        stat_panel(
            "OOM kills",
            "OOM rounds that killed a victim since the policy service booted (vmstat oom_kill).",
            Query(f"sum(memsim_oom_kills_total{{{POLICY}}})"),
            red_from=1,
        )
    )
    d = d.with_panel(
        stat_panel(
            "Panicked",
            "1 while the machine is panicked, until `memsim reboot`.",
            Query(f"max(memsim_policy_panicked{{{POLICY}}})"),
            red_from=1,
        )
    )

    d = d.with_panel(
        timeseries_panel(
            "Pages per zone: in use, per-CPU lists, free",
            "Each zone's managed pages split into pages handed out, pages on the zone's "
            "per-CPU lists and pages free in buddy.",
            [
                Query(
                    f"{BY_ZONE} (memsim_zone_managed_pages{{{ZONE}}})"
                    f" - {BY_ZONE} (memsim_zone_free_pages{{{ZONE}}})"
                    f" - {BY_ZONE} (memsim_zone_pcp_pages{{{ZONE}}})",
                    "{{zone}} in use",
                ),
                Query(f"{BY_ZONE} (memsim_zone_pcp_pages{{{ZONE}}})", "{{zone}} per-CPU lists"),
                Query(f"{BY_ZONE} (memsim_zone_free_pages{{{ZONE}}})", "{{zone}} free"),
            ],
            stack=True,
        )
    )
    d = d.with_panel(
        timeseries_panel(
            "Memory by use per zone",
            "What the pages handed out by each zone hold: user pages, page tables, "
            "the MMU's frame cache, slab and vmalloc (zoneinfo's nr_anon_pages, "
            "nr_page_table_pages, nr_slab_*).",
            [
                Query(
                    f"sum by (node, zone, kind) (memsim_mmu_zone_pages{{{MMU}}})",
                    "{{zone}} {{kind}}",
                ),
                Query(
                    f"sum by (node, zone, kind) (memsim_slab_zone_pages{{{SLAB}}})",
                    "{{zone}} {{kind}}",
                ),
            ],
            stack=True,
        )
    )
    d = d.with_panel(
        timeseries_panel(
            "Free pages and watermarks per zone",
            "Free pages of each zone against its min, low and high watermarks: below low "
            "kswapd wakes, below min allocations reclaim directly.",
            [
                Query(f"{BY_ZONE} (memsim_zone_free_pages{{{ZONE}}})", "{{zone}} free"),
                Query(
                    f"sum by (node, zone, watermark) (memsim_zone_watermark_pages{{{ZONE}}})",
                    "{{zone}} {{watermark}}",
                ),
            ],
            dashed=".* (min|low|high)$",
        )
    )
    d = d.with_panel(
        timeseries_panel(
            "Memory by use, whole machine",
            "User pages (on the LRU lists), page tables, slab, the per-CPU lists of the "
            "MMU and of the zones, and free pages.",
            [
                Query(f"sum(memsim_mmu_lru_pages{{{MMU}}})", "user pages (LRU)"),
                Query(f"sum(memsim_mmu_page_table_pages{{{MMU}}})", "page tables"),
                Query(f"sum by (kind) (memsim_slab_total_pages{{{SLAB}}})", "slab {{kind}}"),
                Query(f"sum(memsim_mmu_frame_cache_pages{{{MMU}}})", "MMU frame cache"),
                Query(f"sum(memsim_zone_pcp_pages{{{ZONE}}})", "zone per-CPU lists"),
                Query(f"sum(memsim_zone_free_pages{{{ZONE}}})", "free"),
            ],
            stack=True,
        )
    )
    d = d.with_panel(
        timeseries_panel(
            "Committed_AS against CommitLimit",
            "Pages committed to processes (Committed_AS) and the bound overcommit mode 2 "
            "enforces (CommitLimit: swap plus vm.overcommit_ratio of RAM).",
            [
                Query(f"sum(memsim_committed_as_pages{{{POLICY}}})", "Committed_AS"),
                Query(f"sum(memsim_commit_limit_pages{{{POLICY}}})", "CommitLimit"),
            ],
            dashed="CommitLimit",
        )
    )
    d = d.with_panel(
        timeseries_panel(
            "Swap",
            "Swap slots in use against the size of the swap area.",
            [
                Query(f"sum(memsim_mmu_swapped_pages{{{MMU}}})", "used"),
                Query(f"sum(memsim_mmu_swap_total_pages{{{MMU}}})", "total"),
            ],
            dashed="total",
        )
    )
    d = d.with_panel(
        rate_panel(
            "Swap in and out",
            "Pages read from and written to swap per second (pswpin, pswpout).",
            [
                Query(
                    f"sum by (direction) (rate(memsim_mmu_swap_pages_total{{{MMU}}}[{RATE}]))",
                    "{{direction}}",
                )
            ],
            width=8,
        )
    )
    d = d.with_panel(
        rate_panel(
            "kswapd",
            "Wake-ups of kswapd by a zone below its low watermark, and its balancing runs.",
            [
                Query(f"sum(rate(memsim_kswapd_wakeups_total{{{ZONE}}}[{RATE}]))", "wake-ups"),
                Query(f"sum(rate(memsim_kswapd_runs_total{{{ZONE}}}[{RATE}]))", "runs"),
            ],
            width=8,
        )
    )
    d = d.with_panel(
        rate_panel(
            "Reclaim",
            "Pages scanned and stolen by kswapd and by direct reclaim, per zone, and "
            "allocation stalls (/proc/vmstat).",
            [
                Query(
                    f"sum by (item) (rate(memsim_vmstat_events_total{{{ZONE}, "
                    f'item=~"pgscan_.*|pgsteal_.*|allocstall|pageoutrun"}}[{RATE}]))',
                    "{{item}}",
                )
            ],
            width=8,
        )
    )
    d = d.with_panel(
        rate_panel(
            "Page allocations and frees",
            "Pages allocated from each zone type and pages freed, per second (pgalloc_*, pgfree).",
            [
                Query(
                    f"sum by (item) (rate(memsim_vmstat_events_total{{{ZONE}, "
                    f'item=~"pgalloc_.*|pgfree"}}[{RATE}]))',
                    "{{item}}",
                )
            ],
            width=24,
        )
    )
    return build(d)
