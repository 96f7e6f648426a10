"""One order's free list, free_area[order] of struct zone.

The kernel keeps a doubly linked list per order and takes from its head, and a
freed block goes to the head too (LIFO). A dict used as an ordered set gives
the same O(1) add, remove-by-pfn and pop-most-recent.

The top order also keeps *runs*: spans of consecutive top-order blocks that
have been free since boot. A 1 TiB zone is 2^18 blocks of order 10; listing
them one by one would make boot time and memory grow with RAM. A run stands
for all of them in two integers and hands out its lowest block first.
"""

from __future__ import annotations


class FreeArea:
    __slots__ = ("block_pages", "blocks", "nr_free", "order", "runs")

    def __init__(self, order: int) -> None:
        self.order = order
        self.block_pages = 1 << order
        self.blocks: dict[int, None] = {}
        # [start_pfn, end_pfn) spans of free blocks of this order, only ever
        # created at boot and only ever shrunk from the front.
        self.runs: list[list[int]] = []
        self.nr_free = 0

    def add(self, pfn: int) -> None:
        self.blocks[pfn] = None
        self.nr_free += 1

    def add_run(self, start_pfn: int, nr_blocks: int) -> None:
        if nr_blocks:
            self.runs.append([start_pfn, start_pfn + nr_blocks * self.block_pages])
            self.nr_free += nr_blocks

    def pop(self) -> int:
        """Takes a free block: the most recently freed, else a boot run's lowest."""
        if self.blocks:
            pfn = self.blocks.popitem()[0]
        else:
            run = self.runs[0]
            pfn = run[0]
            run[0] += self.block_pages
            if run[0] == run[1]:
                del self.runs[0]
        self.nr_free -= 1
        return pfn

    def discard(self, pfn: int) -> bool:
        """Removes pfn if it heads a free block in the explicit list (merging)."""
        if pfn in self.blocks:
            del self.blocks[pfn]
            self.nr_free -= 1
            return True
        return False

    def __contains__(self, pfn: int) -> bool:
        if pfn in self.blocks:
            return True
        return any(
            start <= pfn < end and (pfn - start) % self.block_pages == 0 for start, end in self.runs
        )
