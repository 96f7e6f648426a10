"""The slab service as the MMU needs it: objects of its own caches. One port,
two adapters: the slab over gRPC, or none at all (an MMU without a slab
service, as in tests of the MMU alone, keeps no kernel objects)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import grpc
import structlog

from memsim.services.slab.client import SlabClient

log = structlog.get_logger("memsim.mmu.slab")


class SlabPort(Protocol):
    async def tunables(self, names: Sequence[str]) -> dict[str, tuple[int, int]]:
        """(limit, batchcount) of each cache."""
        ...

    async def cache_alloc(self, name: str, count: int) -> list[int]:
        """Objects, or none if the slab cannot give them (logged)."""
        ...

    async def cache_free(self, name: str, addresses: Sequence[int]) -> None: ...

    async def reclaimable_pages(self) -> int:
        """NR_SLAB_RECLAIMABLE (SReclaimable), for the commit check's cached copy."""
        ...


class GrpcSlab:
    def __init__(self, client: SlabClient) -> None:
        self.client = client

    async def tunables(self, names: Sequence[str]) -> dict[str, tuple[int, int]]:
        info = await self.client.slabinfo()
        caches = {c.name: (c.limit, c.batchcount) for c in info.caches}
        return {name: caches[name] for name in names}

    async def cache_alloc(self, name: str, count: int) -> list[int]:
        # The objects only account for what the MMU's work costs the kernel:
        # a slab that cannot give them must not fail the process's call.
        try:
            return await self.client.cache_alloc(name, count)
        except grpc.aio.AioRpcError as exc:
            log.warning("slab_alloc_failed", cache=name, count=count, code=exc.code().name)
            return []

    async def cache_free(self, name: str, addresses: Sequence[int]) -> None:
        try:
            await self.client.cache_free(name, addresses)
        except grpc.aio.AioRpcError as exc:
            log.warning("slab_free_failed", cache=name, count=len(addresses), code=exc.code().name)

    async def reclaimable_pages(self) -> int:
        return (await self.client.slabinfo()).reclaimable_pages
