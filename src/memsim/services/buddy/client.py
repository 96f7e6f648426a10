"""Typed client of the buddy service, for the zone service and the CLI."""

from __future__ import annotations

from collections.abc import Iterable

import grpc

from memsim.buddy.v1 import buddy_pb2 as pb
from memsim.buddy.v1 import buddy_pb2_grpc
from memsim.common.v1 import common_pb2


def _ref(node: int, zone: str) -> common_pb2.ArenaRef:
    return common_pb2.ArenaRef(node=node, zone=zone)


class BuddyClient:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = buddy_pb2_grpc.BuddyAllocatorStub(channel)

    async def create_arena(
        self, node: int, zone: str, start_pfn: int, pages: int, max_order: int = 0
    ) -> pb.Arena:
        response = await self._stub.CreateArena(
            pb.CreateArenaRequest(
                ref=_ref(node, zone), start_pfn=start_pfn, pages=pages, max_order=max_order
            )
        )
        return response.arena

    async def list_arenas(self) -> list[pb.Arena]:
        return list((await self._stub.ListArenas(pb.ListArenasRequest())).arenas)

    async def alloc(self, node: int, zone: str, order: int = 0) -> int:
        response = await self._stub.AllocPages(
            pb.AllocPagesRequest(arena=_ref(node, zone), order=order)
        )
        return response.block.pfn

    async def alloc_bulk(self, node: int, zone: str, order: int, count: int) -> list[int]:
        response = await self._stub.AllocPagesBulk(
            pb.AllocPagesBulkRequest(arena=_ref(node, zone), order=order, count=count)
        )
        return list(response.pfns)

    async def free(self, node: int, zone: str, blocks: Iterable[tuple[int, int]]) -> int:
        request = pb.FreePagesRequest(
            arena=_ref(node, zone),
            blocks=[common_pb2.PageBlock(pfn=pfn, order=order) for pfn, order in blocks],
        )
        return (await self._stub.FreePages(request)).freed_pages

    async def free_bulk(self, node: int, zone: str, order: int, pfns: Iterable[int]) -> int:
        request = pb.FreePagesBulkRequest(arena=_ref(node, zone), order=order, pfns=pfns)
        return (await self._stub.FreePagesBulk(request)).freed_pages

    async def buddyinfo(
        self, node: int | None = None, zone: str | None = None
    ) -> list[pb.ArenaBuddyInfo]:
        request = pb.GetBuddyInfoRequest()
        if zone is not None:
            request.arena.CopyFrom(_ref(node or 0, zone))
        return list((await self._stub.GetBuddyInfo(request)).arenas)

    async def fragmentation(
        self, node: int | None = None, zone: str | None = None
    ) -> list[pb.ArenaFragmentation]:
        request = pb.GetFragmentationRequest()
        if zone is not None:
            request.arena.CopyFrom(_ref(node or 0, zone))
        return list((await self._stub.GetFragmentation(request)).arenas)

    async def audit(self) -> pb.AuditResponse:
        return await self._stub.Audit(pb.AuditRequest())

    async def free_blocks(
        self, node: int | None = None, zone: str | None = None
    ) -> list[pb.ArenaFreeBlocks]:
        """Every free block of the arenas (of one, if zone is given) as ranges per order."""
        request = pb.GetFreeBlocksRequest()
        if zone is not None:
            request.arena.CopyFrom(_ref(node or 0, zone))
        return list((await self._stub.GetFreeBlocks(request)).arenas)

    async def nr_free(self, node: int, zone: str) -> list[int]:
        (info,) = await self.buddyinfo(node, zone)
        return list(info.nr_free)
