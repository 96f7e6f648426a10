"""The slab allocator: caches by memory and objects, constructors, the
kmalloc size classes and vmalloc."""

from __future__ import annotations

from grafana_foundation_sdk.builders import timeseries
from grafana_foundation_sdk.models.dashboard import Dashboard

from memsim.dashboards.common import (
    RATE,
    SLAB,
    Query,
    bars_panel,
    build,
    new_dashboard,
    oom_kill_annotation,
    rate_panel,
    timeseries_panel,
)

UID = "memsim-slab"
TITLE = "memsim / Slab allocator"

TOP = 10
# kmalloc's general caches: size-32 ... size-N and their (DMA) twins.
KMALLOC = f'{SLAB}, cache=~"size-[0-9]+.*"'


def top(metric: str) -> str:
    return f"topk({TOP}, sum by (cache) ({metric}))"


def top_caches_panel(
    title: str, description: str, metric: str, *, counter: bool = False
) -> timeseries.Panel:
    """`metric` of the TOP caches with the most; a counter's per second."""
    if counter:
        query = Query(top(f"rate({metric}{{{SLAB}}}[{RATE}])"), "{{cache}}")
        return rate_panel(f"{title}, top {TOP} caches", description, [query])
    query = Query(top(f"{metric}{{{SLAB}}}"), "{{cache}}")
    return timeseries_panel(f"{title}, top {TOP} caches", description, [query])


def dashboard() -> Dashboard:
    d = new_dashboard(
        UID,
        TITLE,
        "kmem caches as /proc/slabinfo and slabtop show them, kmalloc's size classes, vmalloc.",
        oom_kill_annotation(),
    )
    d = d.with_panel(
        bars_panel(
            f"Top {TOP} caches by memory",
            "Pages the cache's slabs take (slabtop -s c).",
            [Query(top(f"memsim_slab_pages{{{SLAB}}}"), "{{cache}}")],
        )
    )
    d = d.with_panel(
        timeseries_panel(
            "Slab pages by reclaimability",
            "SReclaimable and SUnreclaim of /proc/meminfo, in pages.",
            [Query(f"sum by (kind) (memsim_slab_total_pages{{{SLAB}}})", "{{kind}}")],
            stack=True,
        )
    )
    for title, description, metric, counter in (
        (
            "Objects in use",
            "Active objects (slabinfo active_objs) of the caches with the most.",
            "memsim_slab_active_objects",
            False,
        ),
        (
            "Objects held",
            "Objects the caches' slabs hold, used or not (slabinfo num_objs).",
            "memsim_slab_objects",
            False,
        ),
        (
            "Object allocations per second",
            "kmem_cache_alloc calls per second.",
            "memsim_slab_allocations_total",
            True,
        ),
        (
            "Constructor calls per second",
            "Constructor runs: once per object when a slab is grown (cache_grow), not per "
            "allocation.",
            "memsim_slab_constructor_calls_total",
            True,
        ),
        (
            "Slabs grown per second",
            "Slabs made by cache_grow, each taking pages from the zone allocator.",
            "memsim_slab_slabs_grown_total",
            True,
        ),
        (
            "Object frees per second",
            "kmem_cache_free calls per second.",
            "memsim_slab_frees_total",
            True,
        ),
    ):
        d = d.with_panel(top_caches_panel(title, description, metric, counter=counter))
    d = d.with_panel(
        bars_panel(
            "kmalloc size classes: objects in use",
            "Active objects of each kmalloc general cache (size-N and size-N(DMA)).",
            [Query(f"sum by (cache) (memsim_slab_active_objects{{{KMALLOC}}})", "{{cache}}")],
            height=12,
        )
    )
    d = d.with_panel(
        bars_panel(
            "kmalloc size classes: pages",
            "Pages the slabs of each kmalloc general cache take.",
            [Query(f"sum by (cache) (memsim_slab_pages{{{KMALLOC}}})", "{{cache}}")],
            height=12,
        )
    )
    d = d.with_panel(
        rate_panel(
            "kmalloc allocations per second by size class",
            "kmalloc calls per second, by the general cache that served them.",
            [
                Query(
                    f"sum by (cache) (rate(memsim_slab_allocations_total{{{KMALLOC}}}[{RATE}]))",
                    "{{cache}}",
                )
            ],
        )
    )
    d = d.with_panel(
        timeseries_panel(
            "vmalloc",
            "VmallocUsed against VmallocTotal, and VmallocChunk (the largest free gap).",
            [
                Query(f"sum(memsim_vmalloc_used_bytes{{{SLAB}}})", "used"),
                Query(f"sum(memsim_vmalloc_total_bytes{{{SLAB}}})", "total"),
                Query(f"sum(memsim_vmalloc_largest_chunk_bytes{{{SLAB}}})", "largest free chunk"),
            ],
            unit="bytes",
            dashed="total",
        )
    )
    d = d.with_panel(
        bars_panel(
            "Corruption reports by cache",
            "Poison, red-zone and double-free reports written to the kernel log since boot "
            "(the five caches with the most).",
            [
                Query(
                    f"topk(5, sum by (cache) (memsim_slab_corruptions_total{{{SLAB}}}))",
                    "{{cache}}",
                )
            ],
            width=24,
            height=6,
        )
    )
    return build(d)
