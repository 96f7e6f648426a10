"""Frames from the zone service, as the MMU needs them: one port, two adapters
(the zone over gRPC, or the zone allocator in process for tests)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import grpc

from memsim.services.mmu.errors import NoMemory
from memsim.services.zone.allocator import ZoneAllocator
from memsim.services.zone.client import ZoneClient
from memsim.services.zone.errors import OutOfMemory


class ZonePort(Protocol):
    async def alloc(self, gfp_mask: int, count: int, cpu: int) -> list[int]:
        """count order-0 frames, all or none: NoMemory if the zone has fewer."""
        ...

    async def free(self, pfns: Iterable[int], cpu: int, cold: bool = False) -> None:
        """cold: to the cold end of the CPU's lists, as reclaimed pages go."""
        ...


class GrpcZone:
    def __init__(self, client: ZoneClient) -> None:
        self.client = client

    async def alloc(self, gfp_mask: int, count: int, cpu: int) -> list[int]:
        try:
            got = [pfn for pfn, _ in await self.client.alloc(gfp_mask, 0, count, cpu)]
        except grpc.aio.AioRpcError as exc:
            if exc.code() is grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise NoMemory(f"the zone allocator has no frames: {exc.details()}") from None
            raise
        if len(got) < count:
            await self.free(got, cpu)
            raise NoMemory(f"the zone allocator had {len(got)} of {count} frames")
        return got

    async def free(self, pfns: Iterable[int], cpu: int, cold: bool = False) -> None:
        blocks = [(pfn, 0) for pfn in pfns]
        if blocks:
            await self.client.free(blocks, cpu, cold)


class LocalZone:
    def __init__(self, allocator: ZoneAllocator) -> None:
        self.allocator = allocator

    async def alloc(self, gfp_mask: int, count: int, cpu: int) -> list[int]:
        try:
            got = await self.allocator.alloc_pages(gfp_mask, 0, count, cpu)
        except OutOfMemory as exc:
            raise NoMemory(str(exc)) from None
        pfns = [pfn for a in got for pfn in a.pfns]
        if len(pfns) < count:
            await self.free(pfns, cpu)
            raise NoMemory(f"the zone allocator had {len(pfns)} of {count} frames")
        return pfns

    async def free(self, pfns: Iterable[int], cpu: int, cold: bool = False) -> None:
        blocks = [(pfn, 0) for pfn in pfns]
        if blocks:
            await self.allocator.free_pages(blocks, cpu, cold)
