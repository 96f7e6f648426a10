"""The slab's service layer: every call that may need pages plans in the core,
gets the blocks from the zone, applies, and gives back what the core did not
use or freed. The core is synchronous, so between a plan and its apply other
calls may have run: an apply that now needs more refuses (NoMemory, nothing
changed) and is planned again."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from memsim.services.slab.core import PagePlan, SlabAllocator
from memsim.services.slab.errors import NoMemory
from memsim.services.slab.zone_port import PagePort
from memsim.services.zone.gfp import GFP_KERNEL

T = TypeVar("T")
# Plans an allocation may take when other calls keep using up its pages.
MAX_PLANS = 3
# mm/vmscan.c: shrink_slab asks shrinkers for objects in batches of
# SHRINK_BATCH; DEFAULT_SEEKS weighs a slab object against a page.
SHRINK_BATCH = 128
DEFAULT_SEEKS = 2


@dataclass(frozen=True)
class Allocated:
    addresses: list[int]
    cache: str


class SlabService:
    def __init__(self, slab: SlabAllocator, pages: PagePort) -> None:
        self.slab = slab
        self.pages = pages

    async def _with_pages(
        self,
        plan: Callable[[], PagePlan],
        apply: Callable[[list[int]], T],
        unused: Callable[[T], list[int]],
    ) -> T:
        for attempt in range(MAX_PLANS):
            wanted = plan()
            pfns = (
                await self.pages.alloc(wanted.gfp_mask, wanted.order, wanted.blocks)
                if wanted.blocks
                else []
            )
            try:
                result = apply(pfns)
            except BaseException as exc:
                await self.pages.free([(pfn, wanted.order) for pfn in pfns])
                if isinstance(exc, NoMemory) and pfns and attempt + 1 < MAX_PLANS:
                    continue  # another call took the room this plan counted on
                raise
            await self.pages.free([(pfn, wanted.order) for pfn in unused(result)])
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    async def _give_back(self, blocks: Sequence[tuple[int, int]]) -> int:
        await self.pages.free(blocks)
        return sum(1 << order for _, order in blocks)

    # -- caches ------------------------------------------------------------------------

    async def destroy_cache(self, name: str) -> int:
        return await self._give_back(self.slab.destroy_cache(name))

    async def cache_alloc(self, name: str, count: int, gfp_mask: int) -> list[int]:
        gfp = gfp_mask or GFP_KERNEL
        result = await self._with_pages(
            lambda: self.slab.plan_cache_alloc(name, count, gfp),
            lambda pfns: self.slab.cache_alloc(name, count, pfns, gfp),
            lambda r: r.unused_pfns,
        )
        return result.addresses

    async def cache_free(self, name: str, addresses: Sequence[int]) -> int:
        return await self._give_back(self.slab.cache_free(name, addresses))

    async def shrink_cache(self, name: str) -> int:
        return await self._give_back(self.slab.shrink_cache(name))

    # -- kmalloc -----------------------------------------------------------------------

    async def kmalloc(self, size: int, count: int, gfp_mask: int) -> Allocated:
        gfp = gfp_mask or GFP_KERNEL
        cache = self.slab.kmalloc_cache(size, gfp).name
        result = await self._with_pages(
            lambda: self.slab.plan_kmalloc(size, count, gfp),
            lambda pfns: self.slab.kmalloc(size, count, pfns, gfp),
            lambda r: r.unused_pfns,
        )
        return Allocated(result.addresses, cache)

    async def kfree(self, addresses: Sequence[int]) -> int:
        return await self._give_back(self.slab.kfree(addresses))

    # -- vmalloc -----------------------------------------------------------------------

    async def vmalloc(self, size: int, caller: str) -> tuple[int, int]:
        """(address, pages it maps)."""
        result = await self._with_pages(
            lambda: self.slab.plan_vmalloc(size),
            lambda pfns: self.slab.vmalloc(size, pfns, caller),
            lambda r: r.unused_pfns,
        )
        return result.addr, -(-size // self.slab.profile.page_size)

    async def vfree(self, address: int) -> int:
        return await self._give_back(self.slab.vfree(address))

    # -- reclaim -----------------------------------------------------------------------

    async def reclaim(self, nr_to_reclaim: int) -> tuple[int, int]:
        """shrink_slab for the zone's reclaim: array caches and free slabs
        first, then the oldest objects of the reclaimable caches,
        4 * pages / DEFAULT_SEEKS of them in SHRINK_BATCH steps. (objects
        scanned, pages freed)"""
        wanted = max(1, 4 * nr_to_reclaim // DEFAULT_SEEKS)
        nr_to_scan = -(-wanted // SHRINK_BATCH) * SHRINK_BATCH
        result = self.slab.shrink(nr_to_scan)
        return len(result.objects), await self._give_back(result.pages)

    async def reap(self) -> int:
        """cache_reap: part of each untouched array cache back to its slabs, and
        some free slabs back to the zone."""
        return await self._give_back(self.slab.reap())

    async def drain(self) -> int:
        """drain_all_pages asked: every cache's array cache drained, and its free
        slabs back to the zone."""
        blocks: list[tuple[int, int]] = []
        for cache in self.slab.chain():
            blocks += self.slab.shrink_cache(cache.name)
        return await self._give_back(blocks)
