"""Watermarks, lowmem_reserve and pcp sizes: the formulas of 2.6.24's
mm/page_alloc.c (init_per_zone_pages_min, setup_per_zone_pages_min,
setup_per_zone_lowmem_reserve, zone_batchsize, setup_pageset, zone_watermark_ok)
and mm/vmstat.c (calculate_threshold)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

SWAP_CLUSTER_MAX = 32
MIN_FREE_KBYTES_RANGE = (128, 65536)
# sysctl_lowmem_reserve_ratio's initialiser is positional over the configured
# zone types below the highest: 256 for DMA and DMA32, 32 for the rest.
LOWMEM_RESERVE_RATIO_DEFAULTS = {"DMA": 256, "DMA32": 256}
LOWMEM_RESERVE_RATIO_OTHERS = 32

# alloc_flags of get_page_from_freelist
ALLOC_NO_WATERMARKS = 0x01
ALLOC_WMARK_MIN = 0x02
ALLOC_WMARK_LOW = 0x04
ALLOC_WMARK_HIGH = 0x08
ALLOC_HARDER = 0x10
ALLOC_HIGH = 0x20
ALLOC_CPUSET = 0x40


def default_min_free_kbytes(lowmem_kbytes: int) -> int:
    """int_sqrt(lowmem_kbytes * 16), clamped to 128 KiB .. 64 MiB."""
    low, high = MIN_FREE_KBYTES_RANGE
    return min(max(math.isqrt(lowmem_kbytes * 16), low), high)


@dataclass(frozen=True)
class Watermarks:
    min: int
    low: int
    high: int


def pages_min_for(min_free_kbytes: int, page_size: int) -> int:
    return min_free_kbytes >> (page_size.bit_length() - 1 - 10)


def zone_watermarks(pages_min: int, present: int, lowmem_pages: int, highmem: bool) -> Watermarks:
    """setup_per_zone_pages_min for one zone: min_free_kbytes shared out among
    the lowmem zones by present pages; HighMem gets a small fixed minimum."""
    tmp = pages_min * present // lowmem_pages if lowmem_pages else 0
    # __GFP_HIGH and PF_MEMALLOC rarely need HighMem: its reserve is capped.
    zone_min = min(max(present // 1024, SWAP_CLUSTER_MAX), 128) if highmem else tmp
    return Watermarks(zone_min, zone_min + (tmp >> 2), zone_min + (tmp >> 1))


def default_lowmem_reserve_ratio(zone_types: Sequence[str]) -> list[int]:
    return [
        LOWMEM_RESERVE_RATIO_DEFAULTS.get(t, LOWMEM_RESERVE_RATIO_OTHERS) for t in zone_types[:-1]
    ]


def lowmem_reserve(present_by_type: Sequence[int], ratios: Sequence[int]) -> list[list[int]]:
    """setup_per_zone_lowmem_reserve for one node: reserve[lower][j] is what zone
    `lower` keeps back from an allocation that could have used zone j."""
    n = len(present_by_type)
    reserve = [[0] * n for _ in range(n)]
    for j in range(n):
        present = present_by_type[j]
        for idx in range(j - 1, -1, -1):
            reserve[idx][j] = present // max(ratios[idx], 1)
            present += present_by_type[idx]
    return reserve


def zone_batchsize(present: int, page_size: int) -> int:
    """About a thousandth of the zone, at most 512 KiB, made 2^n - 1."""
    batch = present // 1024
    if batch * page_size > 512 * 1024:
        batch = (512 * 1024) // page_size
    batch //= 4
    batch = max(batch, 1)
    return (1 << ((batch + batch // 2).bit_length() - 1)) - 1


@dataclass(frozen=True)
class PcpSizes:
    """setup_pageset: the hot list and the cold list of one CPU."""

    hot_high: int
    hot_batch: int
    cold_high: int
    cold_batch: int

    @classmethod
    def for_batch(cls, batch: int) -> PcpSizes:
        return cls(6 * batch, max(1, batch), 2 * batch, max(1, batch // 2))


def stat_threshold(present: int, page_size: int, cpus: int) -> int:
    """calculate_threshold: "vm stats threshold" of /proc/zoneinfo."""
    mem = present >> (27 - (page_size.bit_length() - 1))
    return min(125, 2 * cpus.bit_length() * (1 + mem.bit_length()))


def zone_watermark_ok(
    free_pages: int, nr_free: Sequence[int], order: int, mark: int, reserve: int, alloc_flags: int
) -> bool:
    """zone_watermark_ok: enough free above mark + lowmem_reserve for this order.

    nr_free (buddy's free blocks per order) is needed only for order > 0.
    """
    free = free_pages - (1 << order) + 1
    minimum = mark
    if alloc_flags & ALLOC_HIGH:
        minimum -= minimum // 2
    if alloc_flags & ALLOC_HARDER:
        minimum -= minimum // 4
    if free <= minimum + reserve:
        return False
    for o in range(order):
        free -= nr_free[o] << o  # this order's pages are too small from the next on
        minimum >>= 1
        if free <= minimum:
            return False
    return True
