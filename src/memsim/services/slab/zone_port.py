"""Pages from the zone service, as the slab needs them: blocks of one order
for new slabs (the cache's gfporder) and order-0 pages for vmalloc. One port,
two adapters: the zone over gRPC, or the zone allocator in process for tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import grpc

from memsim.services.slab.errors import NoMemory
from memsim.services.zone.allocator import ZoneAllocator
from memsim.services.zone.errors import OutOfMemory
from memsim.services.zone.router import ZoneCalls


class PagePort(Protocol):
    async def alloc(self, gfp_mask: int, order: int, count: int) -> list[int]:
        """count blocks of 2^order pages, all or none: NoMemory otherwise."""
        ...

    async def free(self, blocks: Sequence[tuple[int, int]]) -> None: ...


class GrpcPages:
    def __init__(self, client: ZoneCalls) -> None:
        self.client = client

    async def alloc(self, gfp_mask: int, order: int, count: int) -> list[int]:
        try:
            got = await self.client.alloc(gfp_mask, order, count)
        except grpc.aio.AioRpcError as exc:
            if exc.code() is grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise NoMemory(f"the zone allocator has no pages: {exc.details()}") from None
            raise
        if len(got) < count:
            await self.free(got)
            raise NoMemory(f"the zone allocator had {len(got)} of {count} order-{order} blocks")
        return [pfn for pfn, _ in got]

    async def free(self, blocks: Sequence[tuple[int, int]]) -> None:
        if blocks:
            await self.client.free(blocks)


class LocalPages:
    def __init__(self, allocator: ZoneAllocator) -> None:
        self.allocator = allocator

    async def alloc(self, gfp_mask: int, order: int, count: int) -> list[int]:
        try:
            got = await self.allocator.alloc_pages(gfp_mask, order, count, 0)
        except OutOfMemory as exc:
            raise NoMemory(str(exc)) from None
        pfns = [pfn for a in got for pfn in a.pfns]
        if len(pfns) < count:
            await self.free([(pfn, order) for pfn in pfns])
            raise NoMemory(f"the zone allocator had {len(pfns)} of {count} order-{order} blocks")
        return pfns

    async def free(self, blocks: Sequence[tuple[int, int]]) -> None:
        if blocks:
            await self.allocator.free_pages(list(blocks), 0)
