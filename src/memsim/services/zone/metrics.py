"""Prometheus view of the zone service, read at scrape time."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from memsim.services.zone.allocator import ZoneAllocator

ZONE = ["node", "zone"]


class ZoneCollector(Collector):
    def __init__(self, allocator: ZoneAllocator) -> None:
        self.allocator = allocator

    def collect(self) -> Iterator[Metric]:
        g, c = GaugeMetricFamily, CounterMetricFamily
        pages = {
            "free": g("memsim_zone_free_pages", "NR_FREE_PAGES: pages free in buddy.", labels=ZONE),
            "managed": g(
                "memsim_zone_managed_pages", "Pages the zone hands out at most.", labels=ZONE
            ),
            "present": g(
                "memsim_zone_present_pages", "Pages present (spanned less memmap).", labels=ZONE
            ),
            "spanned": g("memsim_zone_spanned_pages", "Pages the zone spans.", labels=ZONE),
            "pcp": g("memsim_zone_pcp_pages", "Pages on the per-CPU lists.", labels=ZONE),
        }
        watermark = g(
            "memsim_zone_watermark_pages",
            "Watermarks min, low and high.",
            labels=[*ZONE, "watermark"],
        )
        pcp_allocs = c(
            "memsim_zone_pcp_allocations",
            "Order-0 allocations served through a per-CPU list: hit when the list had "
            "the page, refill when rmqueue_bulk refilled the empty list from buddy first "
            "(a bulk allocation counts a hit per page it takes off the list).",
            labels=[*ZONE, "result"],
        )
        for zone in self.allocator.machine.owned_zones():
            labels = [str(zone.node), zone.name]
            pcp_allocs.add_metric([*labels, "hit"], zone.pcp_hits)
            pcp_allocs.add_metric([*labels, "refill"], zone.pcp_refills)
            for key, value in (
                ("free", zone.free_pages),
                ("managed", zone.managed),
                ("present", zone.present),
                ("spanned", zone.spanned),
                ("pcp", zone.pcp_pages),
            ):
                pages[key].add_metric(labels, value)
            for name, value in (
                ("min", zone.marks.min),
                ("low", zone.marks.low),
                ("high", zone.marks.high),
            ):
                watermark.add_metric([*labels, name], value)
        vmstat = c("memsim_vmstat_events", "The /proc/vmstat event counters.", labels=["item"])
        for name, value in self.allocator.machine.events.counts.items():
            vmstat.add_metric([name], value)
        kswapd = c("memsim_kswapd_runs", "Times kswapd woke and balanced a node.")
        kswapd.add_metric([], self.allocator.kswapd_runs)
        wakeups = c("memsim_kswapd_wakeups", "Times a zone below its low watermark woke kswapd.")
        wakeups.add_metric([], self.allocator.kswapd_wakeups)
        awake = g(
            "memsim_kswapd_awake",
            "1 while the node's kswapd is awake (woken and balancing), 0 while it sleeps.",
            labels=["node"],
        )
        for node in self.allocator.machine.owned_nodes:
            awake.add_metric([str(node)], 0 if self.allocator.kswapd_sleeping(node) else 1)
        reclaimers = g("memsim_zone_reclaimers", "Registered reclaimers.")
        reclaimers.add_metric([], len(self.allocator.reclaimers))
        yield from (
            *pages.values(),
            watermark,
            pcp_allocs,
            vmstat,
            kswapd,
            wakeups,
            awake,
            reclaimers,
        )
