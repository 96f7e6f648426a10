"""A swap area's slots (mm/swapfile.c): which are in use and by how many
page-table entries (swap_map). The bytes live in a file the service owns."""

from __future__ import annotations


class SwapArea:
    def __init__(self, slots: int) -> None:
        self.total = slots
        self.swap_map: dict[int, int] = {}  # slot -> ptes that point at it
        self._next = 0  # slots above this were never used
        self._freed: list[int] = []

    @property
    def free(self) -> int:
        return self.total - len(self.swap_map)

    def get(self) -> int | None:
        """get_swap_page: a free slot, or None when swap is full."""
        if self._freed:
            slot = self._freed.pop()
        elif self._next < self.total:
            slot = self._next
            self._next += 1
        else:
            return None
        self.swap_map[slot] = 1
        return slot

    def dup(self, slot: int) -> None:
        """swap_duplicate: one more pte points at the slot (fork)."""
        self.swap_map[slot] += 1

    def put(self, slot: int) -> bool:
        """swap_free: one pte fewer; True when the slot became free."""
        count = self.swap_map[slot] - 1
        if count:
            self.swap_map[slot] = count
            return False
        del self.swap_map[slot]
        self._freed.append(slot)
        return True
