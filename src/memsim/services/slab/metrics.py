"""Prometheus view of the slab allocator, read at scrape time: per cache what
/proc/slabinfo shows and what happened to it, and meminfo's slab and vmalloc
figures."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from memsim.services.slab.core import SlabAllocator


class SlabCollector(Collector):
    def __init__(self, slab: SlabAllocator) -> None:
        self.slab = slab

    def collect(self) -> Iterator[Metric]:
        labels = ["cache"]
        gauges = {
            "active_objects": GaugeMetricFamily(
                "memsim_slab_active_objects",
                "Objects in use (slabinfo active_objs).",
                labels=labels,
            ),
            "objects": GaugeMetricFamily(
                "memsim_slab_objects", "Objects the cache's slabs hold (num_objs).", labels=labels
            ),
            "object_size": GaugeMetricFamily(
                "memsim_slab_object_size_bytes",
                "Bytes per object with debug words and padding (objsize).",
                labels=labels,
            ),
            "array_objects": GaugeMetricFamily(
                "memsim_slab_array_objects",
                "Freed objects on the per-CPU array cache (ac->avail), in active_objs.",
                labels=labels,
            ),
            "slabs": GaugeMetricFamily("memsim_slab_slabs", "Slabs (num_slabs).", labels=labels),
            "pages": GaugeMetricFamily(
                "memsim_slab_pages", "Pages the cache's slabs take.", labels=labels
            ),
        }
        counters = {
            "allocations": CounterMetricFamily(
                "memsim_slab_allocations", "Objects allocated.", labels=labels
            ),
            "frees": CounterMetricFamily("memsim_slab_frees", "Objects freed.", labels=labels),
            "ctor_calls": CounterMetricFamily(
                "memsim_slab_constructor_calls", "Constructor runs.", labels=labels
            ),
            "grown": CounterMetricFamily(
                "memsim_slab_slabs_grown", "Slabs made (cache_grow).", labels=labels
            ),
            "errors": CounterMetricFamily(
                "memsim_slab_corruptions",
                "Poison, red-zone and double-free reports written to the kernel log.",
                labels=labels,
            ),
        }
        for info in self.slab.infos():
            name = [info.name]
            gauges["active_objects"].add_metric(name, info.active_objs)
            gauges["objects"].add_metric(name, info.num_objs)
            gauges["array_objects"].add_metric(name, info.array_avail)
            gauges["object_size"].add_metric(name, info.buffer_size)
            gauges["slabs"].add_metric(name, info.num_slabs)
            gauges["pages"].add_metric(name, info.pages)
            stats = info.stats
            counters["allocations"].add_metric(name, stats.allocations)
            counters["frees"].add_metric(name, stats.frees)
            counters["ctor_calls"].add_metric(name, stats.ctor_calls)
            counters["grown"].add_metric(name, stats.grown)
            counters["errors"].add_metric(name, stats.errors)
        yield from gauges.values()
        yield from counters.values()

        pages = self.slab.slab_pages()
        slab = GaugeMetricFamily(
            "memsim_slab_total_pages",
            "Slab pages by reclaimability (SReclaimable, SUnreclaim).",
            labels=["kind"],
        )
        slab.add_metric(["reclaimable"], pages.reclaimable)
        slab.add_metric(["unreclaimable"], pages.unreclaimable)
        vmalloc = self.slab.vmalloc_info()
        used = GaugeMetricFamily("memsim_vmalloc_used_bytes", "VmallocUsed.")
        used.add_metric([], vmalloc.used)
        total = GaugeMetricFamily("memsim_vmalloc_total_bytes", "VmallocTotal.")
        total.add_metric([], vmalloc.total)
        chunk = GaugeMetricFamily(
            "memsim_vmalloc_largest_chunk_bytes", "VmallocChunk: the largest free gap."
        )
        chunk.add_metric([], vmalloc.largest_chunk)
        yield from (slab, used, total, chunk)
        by_zone = GaugeMetricFamily(
            "memsim_slab_zone_pages",
            "Pages the slab service holds by zone and kind: slab_reclaimable, "
            "slab_unreclaimable (NR_SLAB_RECLAIMABLE, NR_SLAB_UNRECLAIMABLE), vmalloc.",
            labels=["node", "zone", "kind"],
        )
        for (node, zone), counts in sorted(self.slab.zone_pages().items()):
            for kind, value in counts.items():
                by_zone.add_metric([str(node), zone, kind], value)
        yield by_zone
