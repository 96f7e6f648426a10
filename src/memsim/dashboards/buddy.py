"""The buddy allocator: free_area per order and zone, fragmentation,
splits and merges, and the per-CPU lists in front of it."""

from __future__ import annotations

from grafana_foundation_sdk.models.dashboard import Dashboard

from memsim.dashboards.common import (
    BUDDY,
    MMU,
    RATE,
    ZONE,
    Query,
    bars_panel,
    build,
    new_dashboard,
    oom_kill_annotation,
    rate_panel,
    timeseries_panel,
)

UID = "memsim-buddy"
TITLE = "memsim / Buddy allocator"

ORDER_LEGEND = "{{zone}} order {{order}}"


def dashboard() -> Dashboard:
    d = new_dashboard(
        UID,
        TITLE,
        "One buddy arena per zone: free blocks per order (/proc/buddyinfo), "
        "fragmentation indices, splits and merges, per-CPU lists.",
        oom_kill_annotation(),
    )
    d = d.with_panel(
        timeseries_panel(
            "Free blocks per order and zone",
            "free_area[order].nr_free of each arena over time (/proc/buddyinfo).",
            [
                Query(
                    f"sum by (node, zone, order) (memsim_buddy_free_blocks{{{BUDDY}}})",
                    ORDER_LEGEND,
                )
            ],
        )
    )
    d = d.with_panel(
        bars_panel(
            "Free blocks per order and zone, now",
            "/proc/buddyinfo as bars: one per zone and order.",
            [
                Query(
                    f"sum by (node, zone, order) (memsim_buddy_free_blocks{{{BUDDY}}})",
                    ORDER_LEGEND,
                )
            ],
        )
    )
    d = d.with_panel(
        timeseries_panel(
            "External fragmentation index per order",
            "debugfs extfrag/extfrag_index: -1 when an allocation of the order would "
            "succeed, else from 0 (fails for lack of memory) to 1 (fails for fragmentation).",
            [
                Query(
                    "max by (node, zone, order) "
                    f"(memsim_buddy_fragmentation_index_ratio{{{BUDDY}}})",
                    ORDER_LEGEND,
                )
            ],
            unit="none",
            min_value=-1,
            max_value=1,
        )
    )
    d = d.with_panel(
        timeseries_panel(
            "Unusable free space index per order",
            "debugfs extfrag/unusable_index: the share of free memory in blocks too "
            "small for an allocation of the order.",
            [
                Query(
                    "max by (node, zone, order) "
                    f"(memsim_buddy_unusable_free_index_ratio{{{BUDDY}}})",
                    ORDER_LEGEND,
                )
            ],
            unit="percentunit",
            min_value=0,
            max_value=1,
        )
    )
    d = d.with_panel(
        rate_panel(
            "Splits and merges per second",
            "Blocks split in two by expand() and blocks merged with their free buddy.",
            [
                Query(
                    f"sum by (node, zone) (rate(memsim_buddy_splits_total{{{BUDDY}}}[{RATE}]))",
                    "{{zone}} splits",
                ),
                Query(
                    f"sum by (node, zone) (rate(memsim_buddy_merges_total{{{BUDDY}}}[{RATE}]))",
                    "{{zone}} merges",
                ),
            ],
        )
    )
    d = d.with_panel(
        rate_panel(
            "Allocations and frees per second by order",
            "Blocks handed out and given back by the arenas, per order.",
            [
                Query(
                    f"sum by (order) (rate(memsim_buddy_allocations_total{{{BUDDY}}}[{RATE}]))",
                    "alloc order {{order}}",
                ),
                Query(
                    f"sum by (order) (rate(memsim_buddy_frees_total{{{BUDDY}}}[{RATE}]))",
                    "free order {{order}}",
                ),
            ],
        )
    )
    d = d.with_panel(
        rate_panel(
            "Per-CPU list hits and refills per second",
            "Order-0 allocations served from a zone's per-CPU list (hit) and those that "
            "first refilled the list from buddy in a batch (refill).",
            [
                Query(
                    "sum by (node, zone, result) "
                    f"(rate(memsim_zone_pcp_allocations_total{{{ZONE}}}[{RATE}]))",
                    "{{zone}} {{result}}",
                )
            ],
        )
    )
    d = d.with_panel(
        rate_panel(
            "MMU frame cache hits and refills per second",
            "Frame requests of the MMU served from its own per-CPU lists (hit) or by a "
            "batch from the zone service (refill).",
            [
                Query(
                    f"sum by (result) (rate(memsim_mmu_frame_cache_takes_total{{{MMU}}}[{RATE}]))",
                    "{{result}}",
                )
            ],
        )
    )
    d = d.with_panel(
        timeseries_panel(
            "Pages on per-CPU lists",
            "Pages held on the zones' per-CPU lists and on the MMU's frame cache, out of buddy.",
            [
                Query(f"sum by (node, zone) (memsim_zone_pcp_pages{{{ZONE}}})", "zone {{zone}}"),
                Query(f"sum by (cpu) (memsim_mmu_frame_cache_pages{{{MMU}}})", "MMU cpu {{cpu}}"),
            ],
            stack=True,
        )
    )
    d = d.with_panel(
        rate_panel(
            "Failed allocations per second",
            "Allocations that found no free block of the order or larger.",
            [
                Query(
                    "sum by (node, zone, order) "
                    f"(rate(memsim_buddy_failed_allocations_total{{{BUDDY}}}[{RATE}]))",
                    ORDER_LEGEND,
                )
            ],
        )
    )
    d = d.with_panel(
        timeseries_panel(
            "Free and allocated pages per arena",
            "Pages each arena has free and has handed out, against the pages it spans.",
            [
                Query(f"sum by (node, zone) (memsim_buddy_free_pages{{{BUDDY}}})", "{{zone}} free"),
                Query(
                    f"sum by (node, zone) (memsim_buddy_allocated_pages{{{BUDDY}}})",
                    "{{zone}} allocated",
                ),
                Query(
                    f"sum by (node, zone) (memsim_buddy_spanned_pages{{{BUDDY}}})",
                    "{{zone}} spanned",
                ),
            ],
            dashed=".* spanned$",
            width=24,
        )
    )
    return build(d)
