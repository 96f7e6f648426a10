"""Page tables with a profile's levels (2 on x86 32-bit, 4 on x86_64).

The leaf entries are kept in one dict, vpn -> pte, with the pte an integer
(frame or swap slot shifted, flag bits below) so that a resident page costs
one dict slot. The tables above the leaves are not simulated entry by entry:
what is simulated is which table pages exist, because each one is a frame
taken from the zone (GFP_KERNEL), counted in PageTables and VmPTE, and given
back when no mapping below it is left (free_pgtables).
"""

from __future__ import annotations

from collections.abc import Iterable

# pte bits
PTE_PRESENT = 0x01
PTE_WRITE = 0x02
PTE_ACCESSED = 0x04  # the referenced bit reclaim's second chance reads
PTE_DIRTY = 0x08
PTE_SWAP = 0x10  # not present; the value above the flags is a swap slot
PTE_ZERO = 0x20  # present, read-only, the shared zero page: no frame of its own
PTE_SHIFT = 8


def make_pte(pfn: int, flags: int) -> int:
    return (pfn << PTE_SHIFT) | flags


def pte_pfn(pte: int) -> int:
    return pte >> PTE_SHIFT


class PageTable:
    """One mm's page tables: leaf ptes and the table pages above them."""

    def __init__(self, levels: int, page_size: int, pte_bytes: int) -> None:
        self.levels = levels
        # Bits of vpn each table level indexes: a page of pte_bytes entries.
        self.bits = (page_size // pte_bytes).bit_length() - 1
        self.ptes: dict[int, int] = {}
        # (level, index of the table at that level) -> frame of the table page.
        # Level 0 is the pgd, allocated with the mm.
        self.tables: dict[tuple[int, int], int] = {}

    def table_keys(self, vpn: int) -> list[tuple[int, int]]:
        """The table pages a walk to vpn goes through, below the pgd."""
        return [
            (level, vpn >> (self.bits * (self.levels - level))) for level in range(1, self.levels)
        ]

    def missing_tables(self, vpns: Iterable[int]) -> list[tuple[int, int]]:
        """Table pages a set of new mappings needs that do not exist yet."""
        missing: dict[tuple[int, int], None] = {}
        last: int | None = None
        for vpn in vpns:
            leaf = vpn >> self.bits
            if leaf == last:
                continue  # same pte page as the previous vpn: same walk
            last = leaf
            for key in self.table_keys(vpn):
                if key not in self.tables:
                    missing[key] = None
        return list(missing)

    def tables_left_empty(self, still_mapped: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
        """free_pgtables: table pages (below the pgd) that no VMA range reaches."""
        spans = list(still_mapped)
        empty = []
        for key in self.tables:
            level, index = key
            if level == 0:
                continue
            shift = self.bits * (self.levels - level)
            lo, hi = index << shift, (index + 1) << shift
            if not any(start < hi and lo < end for start, end in spans):
                empty.append(key)
        return empty
