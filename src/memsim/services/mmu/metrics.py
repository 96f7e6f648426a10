"""Prometheus view of the MMU, read at scrape time."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from memsim.services.mmu.core import Mmu


class MmuCollector(Collector):
    def __init__(self, mmu: Mmu) -> None:
        self.mmu = mmu

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
        yield from (faults, processes, resident, tables, written)
