"""The zone service's state: nodes (pgdat), their zones and their per-CPU lists.

Pure: built from a machine profile, changed only by the allocator through the
methods here. NR_FREE_PAGES of a zone is the number of its pages that buddy
holds free: the zone is buddy's only client for its arena, so it counts them
exactly, and can rebuild the count by asking buddy.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field

from memsim.profiles.loader import MachineProfile
from memsim.services.zone import watermarks as wm
from memsim.services.zone.vmstat import NUMA_STAT_ITEMS, VmEvents
from memsim.services.zone.zonelist import build_zonelist, default_zonelist_order

DEF_PRIORITY = 12


@dataclass
class PerCpuPages:
    """One of a CPU's two lists (hot, cold) in a zone: struct per_cpu_pages."""

    high: int
    batch: int
    # Head (left) is the hottest page.
    pages: deque[int] = field(default_factory=deque)

    @property
    def count(self) -> int:
        return len(self.pages)


@dataclass
class Zone:
    node: int
    name: str
    type_idx: int  # index in the machine's zone types
    start_pfn: int
    spanned: int
    present: int  # spanned less the memmap (free_area_init_core)
    managed: int  # present less the kernel's boot reservations
    highmem: bool
    free_pages: int = 0  # NR_FREE_PAGES: pages free in buddy
    marks: wm.Watermarks = field(default_factory=lambda: wm.Watermarks(0, 0, 0))
    lowmem_reserve: list[int] = field(default_factory=list)
    # pcp[cpu] = (hot, cold)
    pcp: list[tuple[PerCpuPages, PerCpuPages]] = field(default_factory=list)
    # pfn -> order of every block handed out to a caller.
    handed_out: dict[int, int] = field(default_factory=dict)
    pages_scanned: int = 0
    all_unreclaimable: bool = False
    # NR_ACTIVE + NR_INACTIVE: the LRU pages reclaim may scan. The mmu service
    # owns the LRU lists; until it reports them the zone counts none.
    lru_pages: int = 0
    prev_priority: int = DEF_PRIORITY
    stat_threshold: int = 0
    numa_stats: dict[str, int] = field(default_factory=lambda: dict.fromkeys(NUMA_STAT_ITEMS, 0))
    # Order-0 allocations buffered_rmqueue served through a per-CPU list:
    # from a list that had a page (hit), or after rmqueue_bulk refilled an
    # empty one from buddy (refill). The bulk fast path's pages taken off a
    # list are hits; those it takes from buddy straight pass no list and are
    # neither.
    pcp_hits: int = 0
    pcp_refills: int = 0

    def returned_to_buddy(self, pages: int) -> None:
        """free_pages_bulk/free_one_page: pages are back in buddy, so the zone
        is reclaimable again and the scan count starts afresh."""
        self.free_pages += pages
        self.all_unreclaimable = False
        self.pages_scanned = 0

    @property
    def end_pfn(self) -> int:
        return self.start_pfn + self.spanned

    @property
    def arena_start_pfn(self) -> int:
        """The managed pages are the top of the span: the reserved ones sit below."""
        return self.end_pfn - self.managed

    @property
    def key(self) -> tuple[int, str]:
        return (self.node, self.name)

    @property
    def pcp_pages(self) -> int:
        return sum(hot.count + cold.count for hot, cold in self.pcp)

    @property
    def handed_out_pages(self) -> int:
        return sum(1 << order for order in self.handed_out.values())


class Machine:
    def __init__(self, profile: MachineProfile, node: int | None = None) -> None:
        """node: this machine's zone service owns that node only (a machine
        split by node); the other nodes' zones are still built, so that
        zonelists and pfn lookups are the whole machine's, but their
        counts are their own instance's, not kept here."""
        self.profile = profile
        self.node = node
        self.owned_nodes: tuple[int, ...] = tuple(range(profile.nodes)) if node is None else (node,)
        self.zone_types = profile.zone_types
        self.page_size = profile.page_size
        self.events = VmEvents(profile.zone_types, numa=profile.nodes > 1)
        self.zones: dict[tuple[int, str], Zone] = {}
        for span in profile.zones:
            memmap = span.pages * profile.struct_page_bytes // profile.page_size
            present = max(span.pages - memmap, 0)
            reserved = self._kernel_pages_in(span.start_pfn, span.pages)
            managed = max(present - reserved, 0)
            self.zones[(span.node, span.name)] = Zone(
                node=span.node,
                name=span.name,
                type_idx=profile.zone_types.index(span.name),
                start_pfn=span.start_pfn,
                spanned=span.pages,
                present=present,
                managed=managed,
                highmem=span.name == "HighMem",
                free_pages=managed,
            )
        by_start = sorted(self.zones.values(), key=lambda z: z.start_pfn)
        self._starts = [z.start_pfn for z in by_start]
        self._by_start = by_start
        lowmem_kbytes = sum(z.present for z in self.zones.values() if not z.highmem) * (
            profile.page_size // 1024
        )
        self.min_free_kbytes = wm.default_min_free_kbytes(lowmem_kbytes)
        self.lowmem_reserve_ratio = wm.default_lowmem_reserve_ratio(profile.zone_types)
        for zone in self.zones.values():
            sizes = wm.PcpSizes.for_batch(wm.zone_batchsize(zone.present, self.page_size))
            zone.pcp = [
                (
                    PerCpuPages(sizes.hot_high, sizes.hot_batch),
                    PerCpuPages(sizes.cold_high, sizes.cold_batch),
                )
                for _ in range(profile.cpus)
            ]
            zone.stat_threshold = wm.stat_threshold(zone.present, self.page_size, profile.cpus)
        self.setup_watermarks()
        populated = {key for key, z in self.zones.items() if z.present}
        by_zone = {key: z.present for key, z in self.zones.items()}
        self.zonelist_order = default_zonelist_order(by_zone, profile.nodes, self.zone_types)
        self._zonelists: dict[tuple[int, str, bool], list[Zone]] = {}
        for node in range(profile.nodes):
            for highest in self.zone_types:
                for this_node in (False, True):
                    pairs = build_zonelist(
                        node,
                        highest,
                        self.zone_types,
                        populated,
                        profile.distances,
                        self.zonelist_order,
                        this_node,
                    )
                    self._zonelists[(node, highest, this_node)] = [self.zones[p] for p in pairs]

    def _kernel_pages_in(self, start_pfn: int, pages: int) -> int:
        """Pages of the kernel image and boot allocations that fall in a span."""
        page = self.profile.page_size
        k_start = self.profile.kernel_start // page
        k_end = k_start + self.profile.kernel_reserved // page
        return max(0, min(k_end, start_pfn + pages) - max(k_start, start_pfn))

    def setup_watermarks(self) -> None:
        """setup_per_zone_pages_min and setup_per_zone_lowmem_reserve."""
        lowmem = sum(z.present for z in self.zones.values() if not z.highmem)
        pages_min = wm.pages_min_for(self.min_free_kbytes, self.page_size)
        for zone in self.zones.values():
            zone.marks = wm.zone_watermarks(pages_min, zone.present, lowmem, zone.highmem)
        for node in range(self.profile.nodes):
            present = [
                self.zones[(node, t)].present if (node, t) in self.zones else 0
                for t in self.zone_types
            ]
            reserve = wm.lowmem_reserve(present, self.lowmem_reserve_ratio)
            for idx, t in enumerate(self.zone_types):
                if (node, t) in self.zones:
                    self.zones[(node, t)].lowmem_reserve = reserve[idx]

    def zonelist(self, node: int, highest: str, this_node_only: bool = False) -> list[Zone]:
        return self._zonelists[(node, highest, this_node_only)]

    def zone_of_pfn(self, pfn: int) -> Zone | None:
        i = bisect.bisect_right(self._starts, pfn) - 1
        if i < 0:
            return None
        zone = self._by_start[i]
        return zone if pfn < zone.end_pfn else None

    def owns(self, zone: Zone) -> bool:
        return self.node is None or zone.node == self.node

    def owned_zones(self) -> list[Zone]:
        """The zones this service allocates from itself, in the zones' order."""
        return [z for z in self.zones.values() if self.owns(z)]

    def node_zones(self, node: int) -> list[Zone]:
        return sorted((z for z in self.zones.values() if z.node == node), key=lambda z: z.type_idx)
