"""kmalloc's size classes: include/linux/kmalloc_sizes.h of 2.6.24.

    #if (PAGE_SIZE == 4096)   CACHE(32)
                              CACHE(64)
    #if L1_CACHE_BYTES < 64   CACHE(96)
                              CACHE(128)
    #if L1_CACHE_BYTES < 128  CACHE(192)
                              CACHE(256) ... CACHE(131072)
    #if KMALLOC_MAX_SIZE >= 262144  CACHE(262144)  ... up to 33554432

with KMALLOC_MAX_SIZE = 1 << min(MAX_ORDER + PAGE_SHIFT - 1, 25)
(include/linux/slab.h): 4 MiB with 4 KiB pages and MAX_ORDER 11, so 2.6.24's
slabinfo lists size-4194304 (the 2.6.22 header stopped at 131072). A profile
whose MAX_ORDER leaves KMALLOC_MAX_SIZE below 131072 could not boot that
kernel (kmem_cache_create would panic on size-131072); here the classes just
stop at KMALLOC_MAX_SIZE.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from memsim.services.slab.errors import BadRequest

KMALLOC_SHIFT_LIMIT = 25


def kmalloc_shift_high(page_size: int, max_order: int) -> int:
    page_shift = page_size.bit_length() - 1
    return min(max_order + page_shift - 1, KMALLOC_SHIFT_LIMIT)


def kmalloc_max_size(page_size: int, max_order: int) -> int:
    """KMALLOC_MAX_SIZE: also the largest object kmem_cache_create accepts."""
    return 1 << kmalloc_shift_high(page_size, max_order)


def kmalloc_max_order(page_size: int, max_order: int) -> int:
    """KMALLOC_MAX_ORDER: the largest slab calculate_slab_order tries."""
    return kmalloc_shift_high(page_size, max_order) - (page_size.bit_length() - 1)


def kmalloc_sizes(page_size: int, cache_line_bytes: int, max_order: int) -> tuple[int, ...]:
    """The CACHE(x) lines of kmalloc_sizes.h that the profile compiles in."""
    sizes: list[int] = []
    if page_size == 4096:
        sizes.append(32)
    sizes.append(64)
    if cache_line_bytes < 64:
        sizes.append(96)
    sizes.append(128)
    if cache_line_bytes < 128:
        sizes.append(192)
    sizes += [1 << shift for shift in range(8, KMALLOC_SHIFT_LIMIT + 1)]
    limit = kmalloc_max_size(page_size, max_order)
    return tuple(size for size in sizes if size <= limit)


@dataclass(frozen=True)
class KmallocSizes:
    """malloc_sizes[]: the classes in order, and the lookup of
    __find_general_cachep (the first class not smaller than the request)."""

    sizes: tuple[int, ...]

    @classmethod
    def for_machine(cls, page_size: int, cache_line_bytes: int, max_order: int) -> KmallocSizes:
        return cls(kmalloc_sizes(page_size, cache_line_bytes, max_order))

    @property
    def largest(self) -> int:
        return self.sizes[-1]

    def index(self, size: int) -> int:
        """index_of(size): refuses what kmalloc would answer with ZERO_SIZE_PTR
        (0) or NULL (past the largest class)."""
        if isinstance(size, bool) or not isinstance(size, int):
            raise BadRequest(f"kmalloc size must be an integer, not {size!r}")
        if size <= 0:
            raise BadRequest(f"kmalloc size {size} is not positive")
        if size > self.largest:
            raise BadRequest(
                f"kmalloc size {size} is larger than the largest size class "
                f"({self.largest}, size-{self.largest})"
            )
        return bisect.bisect_left(self.sizes, size)

    def class_size(self, size: int) -> int:
        return self.sizes[self.index(size)]
