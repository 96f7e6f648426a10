"""/proc/vmstat's event counters, named as 2.6.24's vmstat_text names them."""

from __future__ import annotations

from collections.abc import Sequence

# Suffix of the per-zone counters (TEXTS_FOR_ZONES): one per configured type.
ZONE_SUFFIX = {
    "DMA": "dma",
    "DMA32": "dma32",
    "Normal": "normal",
    "HighMem": "high",
    "Movable": "movable",
}
PER_ZONE = ("pgalloc", "pgrefill", "pgsteal", "pgscan_kswapd", "pgscan_direct")

# Zoned counters (enum zone_stat_item), first in /proc/vmstat and in zoneinfo.
ZONE_STAT_ITEMS = (
    "nr_free_pages",
    "nr_inactive",
    "nr_active",
    "nr_anon_pages",
    "nr_mapped",
    "nr_file_pages",
    "nr_dirty",
    "nr_writeback",
    "nr_slab_reclaimable",
    "nr_slab_unreclaimable",
    "nr_page_table_pages",
    "nr_unstable",
    "nr_bounce",
    "nr_vmscan_write",
)
NUMA_STAT_ITEMS = (
    "numa_hit",
    "numa_miss",
    "numa_foreign",
    "numa_interleave",
    "numa_local",
    "numa_other",
)


def event_names(zone_types: Sequence[str]) -> list[str]:
    """enum vm_event_item's text, in order, for a machine's zone types."""

    def zoned(prefix: str) -> list[str]:
        return [f"{prefix}_{ZONE_SUFFIX[t]}" for t in zone_types]

    return [
        "pgpgin",
        "pgpgout",
        "pswpin",
        "pswpout",
        *zoned("pgalloc"),
        "pgfree",
        "pgactivate",
        "pgdeactivate",
        "pgfault",
        "pgmajfault",
        *zoned("pgrefill"),
        *zoned("pgsteal"),
        *zoned("pgscan_kswapd"),
        *zoned("pgscan_direct"),
        "pginodesteal",
        "slabs_scanned",
        "kswapd_steal",
        "kswapd_inodesteal",
        "pageoutrun",
        "allocstall",
        "pgrotated",
    ]


class VmEvents:
    """The machine-wide event counters (count_vm_event and friends)."""

    def __init__(self, zone_types: Sequence[str], numa: bool) -> None:
        self.names = event_names(zone_types)
        self.counts = dict.fromkeys(self.names, 0)
        self.numa = numa

    def count(self, name: str, delta: int = 1) -> None:
        self.counts[name] += delta

    def count_zone(self, prefix: str, zone_type: str, delta: int) -> None:
        self.counts[f"{prefix}_{ZONE_SUFFIX[zone_type]}"] += delta
