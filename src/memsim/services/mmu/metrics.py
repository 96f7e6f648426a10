"""Prometheus view of the MMU, read at scrape time."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from memsim.services.mmu.core import Mmu
from memsim.services.mmu.frame_cache import FrameCache
from memsim.services.mmu.process import Process


def mmu_zone_pages(mmu: Mmu, cache: FrameCache | None) -> dict[tuple[int, str], dict[str, int]]:
    """The core's frames by zone and kind (Mmu.zone_pages) and, as
    "frame_cache", the frames on the service's per-CPU lists."""
    pages = mmu.zone_pages()
    for counts in pages.values():
        counts["frame_cache"] = 0
    if cache is not None:
        for pfn in cache.frames():
            zone = mmu.layout.zone_of_pfn(pfn)
            if zone is not None:
                pages[zone.key]["frame_cache"] += 1
    return pages


class MmuCollector(Collector):
    def __init__(self, mmu: Mmu, cache: FrameCache | None = None) -> None:
        self.mmu = mmu
        self.cache = cache

    def collect(self) -> Iterator[Metric]:
        faults = CounterMetricFamily(
            "memsim_mmu_page_faults", "Page faults by kind.", labels=["kind"]
        )
        for kind, count in self.mmu.faults.items():
            faults.add_metric([kind], count)
        alive = self.mmu.alive()
        processes = GaugeMetricFamily("memsim_mmu_processes", "Processes alive.")
        processes.add_metric([], len(alive))
        resident = GaugeMetricFamily(
            "memsim_mmu_resident_pages", "Pages with a frame of their own (RSS), all processes."
        )
        resident.add_metric([], sum(p.mm.rss for p in alive))
        tables = GaugeMetricFamily(
            "memsim_mmu_page_table_pages", "Page-table pages (PageTables in meminfo)."
        )
        tables.add_metric([], sum(len(p.mm.pt.tables) for p in alive))
        written = GaugeMetricFamily(
            "memsim_mmu_written_pages", "Frames holding bytes a process wrote."
        )
        written.add_metric([], len(self.mmu.data))
        swap_io = CounterMetricFamily(
            "memsim_mmu_swap_pages",
            "Pages swapped in and out (pswpin, pswpout).",
            labels=["direction"],
        )
        swap_io.add_metric(["in"], self.mmu.swap_events["pswpin"])
        swap_io.add_metric(["out"], self.mmu.swap_events["pswpout"])
        swapped = GaugeMetricFamily("memsim_mmu_swapped_pages", "Swap slots in use.")
        swapped.add_metric([], self.mmu.swap.total - self.mmu.swap.free)
        swap_total = GaugeMetricFamily("memsim_mmu_swap_total_pages", "Size of the swap area.")
        swap_total.add_metric([], self.mmu.swap.total)
        active, inactive = self.mmu.lru_counts()
        lru = GaugeMetricFamily("memsim_mmu_lru_pages", "Pages on the LRU lists.", labels=["list"])
        lru.add_metric(["active"], active)
        lru.add_metric(["inactive"], inactive)
        yield from (faults, processes, resident, tables, written, swap_io, swapped, swap_total, lru)
        yield from self._per_process(alive)
        yield from self._zone_pages(self.mmu, self.cache)
        yield from self._commit(self.mmu)
        if self.cache is not None:
            yield from self._frame_cache(self.cache)

    @staticmethod
    def _per_process(alive: list[Process]) -> Iterator[Metric]:
        rss = GaugeMetricFamily(
            "memsim_mmu_process_resident_pages",
            "RSS of each live process in pages (VmRSS of /proc/PID/status).",
            labels=["pid", "comm"],
        )
        for proc in alive:
            rss.add_metric([str(proc.pid), proc.name], proc.mm.rss)
        yield rss

    @staticmethod
    def _zone_pages(mmu: Mmu, cache: FrameCache | None) -> Iterator[Metric]:
        held = GaugeMetricFamily(
            "memsim_mmu_zone_pages",
            "Frames the MMU holds by the zone they came from and what they hold: anon "
            "(user pages, NR_ANON_PAGES), page_table (NR_PAGETABLE), shmem (System V "
            "segments), frame_cache (its per-CPU lists).",
            labels=["node", "zone", "kind"],
        )
        for (node, zone_name), counts in sorted(mmu_zone_pages(mmu, cache).items()):
            for kind, value in counts.items():
                held.add_metric([str(node), zone_name, kind], value)
        yield held

    @staticmethod
    def _commit(mmu: Mmu) -> Iterator[Metric]:
        committed = GaugeMetricFamily(
            "memsim_mmu_committed_as_pages",
            "Committed_AS: pages charged by the commit accounting (vm_committed_space).",
        )
        committed.add_metric([], max(mmu.committed_as, 0))
        limit = GaugeMetricFamily(
            "memsim_mmu_commit_limit_pages",
            "CommitLimit: swap plus vm.overcommit_ratio of RAM (the bound in mode 2).",
        )
        limit.add_metric([], mmu.commit_limit)
        refusals = CounterMetricFamily(
            "memsim_mmu_commit_refusals",
            "mmap, brk, mprotect, fork, exec and shmget refused by the commit check.",
        )
        refusals.add_metric([], mmu.commit_refusals)
        yield from (committed, limit, refusals)

    @staticmethod
    def _frame_cache(cache: FrameCache) -> Iterator[Metric]:
        held = GaugeMetricFamily(
            "memsim_mmu_frame_cache_pages",
            "Frames the MMU holds on its per-CPU lists for faults to come.",
            labels=["cpu", "gfp_mask"],
        )
        for (gfp_mask, cpu), pages in sorted(cache.pages().items()):
            held.add_metric([str(cpu), f"{gfp_mask:#x}"], pages)
        takes = CounterMetricFamily(
            "memsim_mmu_frame_cache_takes",
            "Frame requests by where they were served: the MMU's lists (hit) or the zone (refill).",
            labels=["result"],
        )
        takes.add_metric(["hit"], cache.hits)
        takes.add_metric(["refill"], cache.refills)
        yield from (held, takes)
