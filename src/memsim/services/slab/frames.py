"""Which pages the slab service holds: each cache's slabs and vmalloc's pages."""

from __future__ import annotations

from dataclasses import dataclass

from memsim.services.frames import Range, merge_ranges, pfn_ranges
from memsim.services.slab.core import SlabAllocator


@dataclass(frozen=True)
class CachePages:
    name: str
    reclaimable: bool
    ranges: list[Range]


def cache_page_ranges(slab: SlabAllocator) -> list[CachePages]:
    """Every cache that holds slabs, in creation order, with its slabs' pages."""
    held = []
    for cache in slab.caches.values():
        pages = 1 << cache.gfporder
        ranges = merge_ranges((pfn, pages) for slabs in cache.lists for pfn in slabs)
        if ranges:
            held.append(CachePages(cache.name, cache.reclaimable, ranges))
    return held


def vmalloc_page_ranges(slab: SlabAllocator) -> list[Range]:
    return pfn_ranges(slab.vm.pfns)
