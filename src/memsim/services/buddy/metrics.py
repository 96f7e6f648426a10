"""Prometheus view of the buddy core, read at scrape time."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from memsim.services.buddy.allocator import BuddyAllocator
from memsim.services.buddy.fragmentation import fragmentation_indices, unusable_free_indices

ZONE = ["node", "zone"]
ORDER = ["node", "zone", "order"]


class BuddyCollector(Collector):
    def __init__(self, allocator: BuddyAllocator) -> None:
        self.allocator = allocator

    def collect(self) -> Iterator[Metric]:
        g = GaugeMetricFamily
        c = CounterMetricFamily
        free_blocks = g(
            "memsim_buddy_free_blocks",
            "Free blocks of each order (free_area[order].nr_free, /proc/buddyinfo).",
            labels=ORDER,
        )
        free_pages = g("memsim_buddy_free_pages", "Free pages in the arena.", labels=ZONE)
        allocated = g("memsim_buddy_allocated_pages", "Pages handed out by the arena.", labels=ZONE)
        spanned = g("memsim_buddy_spanned_pages", "Pages the arena spans.", labels=ZONE)
        unusable = g(
            "memsim_buddy_unusable_free_index_ratio",
            "Share of free memory unusable for a block of this order "
            "(debugfs extfrag/unusable_index).",
            labels=ORDER,
        )
        extfrag = g(
            "memsim_buddy_fragmentation_index_ratio",
            "External fragmentation index for this order: -1 when it would succeed, "
            "else 0 (no memory) .. 1 (fragmented) (debugfs extfrag/extfrag_index).",
            labels=ORDER,
        )
        allocations = c("memsim_buddy_allocations", "Blocks allocated, by order.", labels=ORDER)
        frees = c("memsim_buddy_frees", "Blocks freed, by order.", labels=ORDER)
        failed = c(
            "memsim_buddy_failed_allocations",
            "Allocations that found no free block of the order or larger.",
            labels=ORDER,
        )
        splits = c("memsim_buddy_splits", "Blocks split in two by expand().", labels=ZONE)
        merges = c("memsim_buddy_merges", "Blocks merged with their free buddy.", labels=ZONE)

        for arena in self.allocator.select(None, None):
            zone = [str(arena.spec.node), arena.spec.zone]
            nr_free = arena.nr_free()
            counters = arena.counters
            free_pages.add_metric(zone, arena.free_pages)
            allocated.add_metric(zone, arena.allocated_pages)
            spanned.add_metric(zone, arena.spec.pages)
            splits.add_metric(zone, counters.splits)
            merges.add_metric(zone, counters.merges)
            for order, (blocks, unusable_milli, extfrag_milli) in enumerate(
                zip(
                    nr_free,
                    unusable_free_indices(nr_free),
                    fragmentation_indices(nr_free),
                    strict=True,
                )
            ):
                labels = [*zone, str(order)]
                free_blocks.add_metric(labels, blocks)
                unusable.add_metric(labels, unusable_milli / 1000)
                extfrag.add_metric(labels, extfrag_milli / 1000)
                allocations.add_metric(labels, counters.allocations[order])
                frees.add_metric(labels, counters.frees[order])
                failed.add_metric(labels, counters.failed_allocations[order])
        yield from (
            free_blocks,
            free_pages,
            allocated,
            spanned,
            unusable,
            extfrag,
            allocations,
            frees,
            failed,
            splits,
            merges,
        )
