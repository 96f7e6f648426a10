"""Fragmentation indices of mm/vmstat.c (fill_contig_page_info and friends).

Both are integers in thousandths, as the kernel keeps them (memsim.procfs.extfrag
prints them as debugfs does).
- unusable_free_index: the share of free memory that cannot serve a block of
  this order (0 = all of it can, 1000 = none can).
- fragmentation_index: only meaningful when an allocation of this order would
  fail: towards 0 the failure is for lack of memory, towards 1000 it is for
  fragmentation. -1000 when the allocation would succeed.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ContigPageInfo:
    free_pages: int
    free_blocks_total: int
    free_blocks_suitable: int


def fill_contig_page_info(nr_free: list[int], suitable_order: int) -> ContigPageInfo:
    free_pages = free_blocks_total = free_blocks_suitable = 0
    for order, blocks in enumerate(nr_free):
        free_blocks_total += blocks
        free_pages += blocks << order
        if order >= suitable_order:
            free_blocks_suitable += blocks << (order - suitable_order)
    return ContigPageInfo(free_pages, free_blocks_total, free_blocks_suitable)


def unusable_free_index(order: int, info: ContigPageInfo) -> int:
    if info.free_pages == 0:
        return 1000
    usable = info.free_blocks_suitable << order
    return (info.free_pages - usable) * 1000 // info.free_pages


def fragmentation_index(order: int, info: ContigPageInfo) -> int:
    if not info.free_blocks_total:
        return 0
    if info.free_blocks_suitable:
        return -1000
    requested = 1 << order
    return 1000 - (1000 + info.free_pages * 1000 // requested) // info.free_blocks_total


def unusable_free_indices(nr_free: list[int]) -> list[int]:
    return [unusable_free_index(o, fill_contig_page_info(nr_free, o)) for o in range(len(nr_free))]


def fragmentation_indices(nr_free: list[int]) -> list[int]:
    return [fragmentation_index(o, fill_contig_page_info(nr_free, o)) for o in range(len(nr_free))]
