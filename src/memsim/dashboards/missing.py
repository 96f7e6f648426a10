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


# Every metric the panels read is exported now: memsim_zone_pcp_allocations_total
# (zone), memsim_mmu_zone_pages and memsim_mmu_process_resident_pages (mmu) and
# memsim_slab_zone_pages (slab) were the last ones.
MISSING_METRICS: dict[str, MissingMetric] = {}
