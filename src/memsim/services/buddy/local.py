"""The buddy allocator in process, with BuddyClient's interface: for tests of
the services above buddy and for running them without a buddy process."""

from __future__ import annotations

from collections.abc import Iterable

from memsim.services.buddy.allocator import BuddyAllocator
from memsim.services.buddy.arena import Arena, ArenaSpec


class LocalBuddy:
    def __init__(self, allocator: BuddyAllocator | None = None) -> None:
        self.allocator = allocator or BuddyAllocator()
        self.calls = 0  # every call, as a count of round trips saved

    async def create_arena(
        self, node: int, zone: str, start_pfn: int, pages: int, max_order: int = 0
    ) -> Arena:
        self.calls += 1
        return self.allocator.create_arena(ArenaSpec(node, zone, start_pfn, pages, max_order or 11))

    async def alloc_bulk(self, node: int, zone: str, order: int, count: int) -> list[int]:
        self.calls += 1
        return self.allocator.arena(node, zone).alloc_bulk(order, count)

    async def free(self, node: int, zone: str, blocks: Iterable[tuple[int, int]]) -> int:
        self.calls += 1
        return self.allocator.arena(node, zone).free(blocks)

    async def free_bulk(self, node: int, zone: str, order: int, pfns: Iterable[int]) -> int:
        self.calls += 1
        return self.allocator.arena(node, zone).free_bulk(order, pfns)

    async def nr_free(self, node: int, zone: str) -> list[int]:
        self.calls += 1
        return self.allocator.arena(node, zone).nr_free()
