"""Metrics that a panel asks for and no service exports yet.

The panels that use them are generated all the same, with the query they will
need; `queries()` marks them, and the end-to-end test expects no data from them
until the owning service exports the metric. Remove an entry once it does.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MissingMetric:
    name: str  # as Prometheus stores it (counters with their _total)
    type: str
    labels: tuple[str, ...]
    owner: str  # the service whose state it shows (DESIGN.md's owners)
    meaning: str


MISSING_METRICS: dict[str, MissingMetric] = {
    m.name: m
    for m in (
        MissingMetric(
            "memsim_zone_pcp_allocations_total",
            "counter",
            ("node", "zone", "result"),
            "zone",
            "Order-0 allocations served through a per-CPU list (buffered_rmqueue): "
            'result="hit" when the list had a page, result="refill" when it was empty '
            "and rmqueue_bulk refilled it from buddy first.",
        ),
        MissingMetric(
            "memsim_mmu_zone_pages",
            "gauge",
            ("node", "zone", "kind"),
            "mmu",
            "Frames the MMU holds, by the zone they came from and what they hold: "
            'kind="anon" (user pages, NR_ANON_PAGES), "page_table" (NR_PAGETABLE), '
            '"shmem" (shared memory), "frame_cache" (its per-CPU lists).',
        ),
        MissingMetric(
            "memsim_slab_zone_pages",
            "gauge",
            ("node", "zone", "kind"),
            "slab",
            "Pages the slab service holds, by zone and kind: "
            'kind="slab_reclaimable", "slab_unreclaimable" (NR_SLAB_*), "vmalloc".',
        ),
        MissingMetric(
            "memsim_mmu_process_resident_pages",
            "gauge",
            ("pid", "comm"),
            "mmu",
            "RSS of each live process (VmRSS in /proc/PID/status, in pages); "
            "the series of a process goes away when it exits.",
        ),
    )
}
