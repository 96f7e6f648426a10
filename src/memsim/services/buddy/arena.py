"""One zone's buddy allocator: the free_area array and the blocks handed out.

Follows mm/page_alloc.c of 2.6: __rmqueue_smallest takes the smallest free
block that fits and expand() splits it, keeping the lower half and putting the
upper halves back on the lower orders; __free_one_page merges a freed block
with its buddy (pfn ^ 2^order) for as long as the buddy is free at the same
order. Blocks are aligned to their size in absolute pfns, as the kernel aligns
them, so an arena that does not start on a MAX_ORDER boundary still pairs the
same buddies the kernel would.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from memsim.services.buddy.errors import BadFree, InvalidRequest, OutOfMemory
from memsim.services.buddy.free_area import FreeArea

DEFAULT_MAX_ORDER = 11
# 2^16 pfns of at most 8 varint bytes keep a bulk answer at 512 KiB, well inside
# gRPC's 4 MiB message limit: a larger answer would be refused by the client
# after the server had already allocated it.
MAX_BULK_COUNT = 1 << 16


@dataclass(frozen=True)
class ArenaSpec:
    node: int
    zone: str
    start_pfn: int
    pages: int
    max_order: int = DEFAULT_MAX_ORDER

    @property
    def end_pfn(self) -> int:
        return self.start_pfn + self.pages

    @property
    def name(self) -> str:
        return f"node {self.node} zone {self.zone}"


@dataclass
class ArenaCounters:
    """Event counts since the arena was created (the collector reads these)."""

    allocations: list[int]
    frees: list[int]
    failed_allocations: list[int]
    splits: int = 0
    merges: int = 0

    @classmethod
    def for_orders(cls, max_order: int) -> ArenaCounters:
        return cls([0] * max_order, [0] * max_order, [0] * max_order)


class Arena:
    def __init__(self, spec: ArenaSpec) -> None:
        self.spec = spec
        self.max_order = spec.max_order
        self.free_area = [FreeArea(order) for order in range(spec.max_order)]
        # pfn of each allocated block's first page -> its order.
        self.allocated: dict[int, int] = {}
        self.allocated_pages = 0
        self.counters = ArenaCounters.for_orders(spec.max_order)
        self._carve()

    def _carve(self) -> None:
        """Hands the span to free_area as the largest aligned blocks that fit.

        The unaligned head and tail become a few smaller blocks; the middle
        becomes one run of top-order blocks, so boot costs O(MAX_ORDER).
        """
        top = self.max_order - 1
        pfn, end = self.spec.start_pfn, self.spec.end_pfn
        while pfn < end:
            order = top
            while order and (pfn & ((1 << order) - 1) or pfn + (1 << order) > end):
                order -= 1
            if order == top:
                nr_blocks = (end - pfn) >> top
                self.free_area[top].add_run(pfn, nr_blocks)
                pfn += nr_blocks << top
            else:
                self.free_area[order].add(pfn)
                pfn += 1 << order

    # -- queries ---------------------------------------------------------------

    @property
    def free_pages(self) -> int:
        return sum(area.nr_free << area.order for area in self.free_area)

    def nr_free(self) -> list[int]:
        """Free blocks per order, as /proc/buddyinfo prints them."""
        return [area.nr_free for area in self.free_area]

    def check_order(self, order: int) -> None:
        if not 0 <= order < self.max_order:
            raise InvalidRequest(
                f"order {order} is outside 0..{self.max_order - 1} (MAX_ORDER is "
                f"{self.max_order} in {self.spec.name})"
            )

    # -- allocation --------------------------------------------------------------

    def _rmqueue_smallest(self, order: int) -> int | None:
        for current_order in range(order, self.max_order):
            area = self.free_area[current_order]
            if area.nr_free:
                pfn = area.pop()
                self._expand(pfn, order, current_order)
                self.allocated[pfn] = order
                self.allocated_pages += 1 << order
                self.counters.allocations[order] += 1
                return pfn
        return None

    def _expand(self, pfn: int, low: int, high: int) -> None:
        """Splits a block of order high down to low, freeing each upper half."""
        while high > low:
            high -= 1
            self.free_area[high].add(pfn + (1 << high))
            self.counters.splits += 1

    def alloc(self, order: int) -> int:
        """One block of 2^order pages; OutOfMemory changes nothing."""
        self.check_order(order)
        pfn = self._rmqueue_smallest(order)
        if pfn is None:
            self.counters.failed_allocations[order] += 1
            raise OutOfMemory(
                f"no free block of order {order} or larger in {self.spec.name} "
                f"({self.free_pages} pages free)"
            )
        return pfn

    def alloc_bulk(self, order: int, count: int) -> list[int]:
        """Up to count blocks of one order: fewer when memory runs out."""
        self.check_order(order)
        if not 0 < count <= MAX_BULK_COUNT:
            raise InvalidRequest(f"count {count} is outside 1..{MAX_BULK_COUNT}")
        pfns: list[int] = []
        for _ in range(count):
            pfn = self._rmqueue_smallest(order)
            if pfn is None:
                self.counters.failed_allocations[order] += 1
                break
            pfns.append(pfn)
        return pfns

    # -- freeing -----------------------------------------------------------------

    def free(self, blocks: Iterable[tuple[int, int]]) -> int:
        """Frees a batch of (pfn, order) blocks; returns the pages freed.

        Every block is checked before any is freed, so a bad batch changes
        nothing.
        """
        batch = blocks if isinstance(blocks, list) else list(blocks)
        if not batch:
            raise InvalidRequest("the batch of blocks to free is empty")
        allocated = self.allocated
        for pfn, order in batch:
            # Only a block's own head, freed with its own order, is recorded
            # there: anything else gets the diagnosis that names what is wrong.
            if allocated.get(pfn) != order:
                self._diagnose_bad_free(pfn, order)
        if len(batch) > 1 and len({pfn for pfn, _ in batch}) != len(batch):
            seen: set[int] = set()
            for pfn, _ in batch:
                if pfn in seen:
                    raise BadFree(f"double free: pfn {pfn} appears twice in the batch")
                seen.add(pfn)
        freed = 0
        frees = self.counters.frees
        for pfn, order in batch:
            del allocated[pfn]
            self._free_one_page(pfn, order)
            frees[order] += 1
            freed += 1 << order
        self.allocated_pages -= freed
        return freed

    def free_bulk(self, order: int, pfns: Iterable[int]) -> int:
        """free_pages_bulk: blocks of one order, checked as free() checks them."""
        return self.free([(pfn, order) for pfn in pfns])

    def _free_one_page(self, pfn: int, order: int) -> None:
        top = self.max_order - 1
        while order < top and self.free_area[order].discard(pfn ^ (1 << order)):
            pfn &= ~(1 << order)
            order += 1
            self.counters.merges += 1
        self.free_area[order].add(pfn)

    def _diagnose_bad_free(self, pfn: int, order: int) -> None:
        """Raises the error that says why (pfn, order) cannot be freed."""
        self.check_order(order)
        spec = self.spec
        if not spec.start_pfn <= pfn < spec.end_pfn:
            raise InvalidRequest(
                f"pfn {pfn} is outside {spec.name} [{spec.start_pfn}, {spec.end_pfn})"
            )
        if pfn & ((1 << order) - 1):
            raise InvalidRequest(f"pfn {pfn} is not aligned to order {order}")
        allocated_order = self.allocated.get(pfn)
        if allocated_order is not None:
            raise BadFree(
                f"wrong order: the block at pfn {pfn} was allocated with order "
                f"{allocated_order}, freed with order {order}"
            )
        for k in range(self.max_order):
            head = pfn & ~((1 << k) - 1)
            if head in self.free_area[k]:
                raise BadFree(
                    f"double free: pfn {pfn} is already free (in the free block "
                    f"of order {k} at pfn {head})"
                )
            if head != pfn and self.allocated.get(head, -1) >= k:
                raise BadFree(
                    f"pfn {pfn} is inside the block of order {self.allocated[head]} "
                    f"allocated at pfn {head}; free that block by its first pfn"
                )
        raise BadFree(f"pfn {pfn} is not allocated")
