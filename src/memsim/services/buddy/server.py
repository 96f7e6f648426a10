"""The buddy service's gRPC edge: protobuf in, core calls, protobuf out."""

from __future__ import annotations

from typing import Any

import grpc

from memsim.buddy.v1 import buddy_pb2 as pb
from memsim.buddy.v1 import buddy_pb2_grpc
from memsim.common.v1 import common_pb2
from memsim.runtime.errors import translate_errors
from memsim.runtime.server import Service
from memsim.services.buddy.allocator import BuddyAllocator
from memsim.services.buddy.arena import DEFAULT_MAX_ORDER, Arena, ArenaSpec
from memsim.services.buddy.errors import (
    ArenaConflict,
    ArenaExists,
    ArenaNotFound,
    BadFree,
    InvalidRequest,
    OutOfMemory,
)
from memsim.services.buddy.fragmentation import fragmentation_indices, unusable_free_indices
from memsim.services.buddy.frames import free_block_ranges
from memsim.services.buddy.metrics import BuddyCollector
from memsim.services.frames import ranges_message

STATUS: dict[type[Exception], grpc.StatusCode] = {
    InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    ArenaNotFound: grpc.StatusCode.NOT_FOUND,
    ArenaExists: grpc.StatusCode.ALREADY_EXISTS,
    ArenaConflict: grpc.StatusCode.FAILED_PRECONDITION,
    OutOfMemory: grpc.StatusCode.RESOURCE_EXHAUSTED,
    BadFree: grpc.StatusCode.FAILED_PRECONDITION,
}
translate = translate_errors(STATUS)
Context = grpc.aio.ServicerContext[Any, Any]


def arena_ref(arena: Arena) -> common_pb2.ArenaRef:
    return common_pb2.ArenaRef(node=arena.spec.node, zone=arena.spec.zone)


def arena_message(arena: Arena) -> pb.Arena:
    spec = arena.spec
    return pb.Arena(
        ref=arena_ref(arena),
        start_pfn=spec.start_pfn,
        pages=spec.pages,
        max_order=spec.max_order,
        free_pages=arena.free_pages,
        allocated_pages=arena.allocated_pages,
    )


class BuddyServicer(buddy_pb2_grpc.BuddyAllocatorServicer):
    def __init__(self, allocator: BuddyAllocator) -> None:
        self.allocator = allocator

    def _arena(self, ref: common_pb2.ArenaRef) -> Arena:
        if not ref.zone:
            raise InvalidRequest("arena.zone is empty: name the zone (DMA, Normal, ...)")
        return self.allocator.arena(ref.node, ref.zone)

    def _selected(
        self,
        request: pb.GetBuddyInfoRequest | pb.GetFragmentationRequest | pb.GetFreeBlocksRequest,
    ) -> list[Arena]:
        """The arena a request names, or every arena when it names none."""
        if request.HasField("arena"):
            return [self._arena(request.arena)]
        return self.allocator.select(None, None)

    @translate
    async def CreateArena(
        self, request: pb.CreateArenaRequest, context: Context
    ) -> pb.CreateArenaResponse:
        if request.max_order < 0:
            raise InvalidRequest(f"max_order {request.max_order} is negative")
        spec = ArenaSpec(
            node=request.ref.node,
            zone=request.ref.zone,
            start_pfn=request.start_pfn,
            pages=request.pages,
            max_order=request.max_order or DEFAULT_MAX_ORDER,
        )
        return pb.CreateArenaResponse(arena=arena_message(self.allocator.create_arena(spec)))

    @translate
    async def ListArenas(
        self, request: pb.ListArenasRequest, context: Context
    ) -> pb.ListArenasResponse:
        return pb.ListArenasResponse(
            arenas=[arena_message(a) for a in self.allocator.select(None, None)]
        )

    @translate
    async def AllocPages(
        self, request: pb.AllocPagesRequest, context: Context
    ) -> pb.AllocPagesResponse:
        pfn = self._arena(request.arena).alloc(request.order)
        return pb.AllocPagesResponse(block=common_pb2.PageBlock(pfn=pfn, order=request.order))

    @translate
    async def AllocPagesBulk(
        self, request: pb.AllocPagesBulkRequest, context: Context
    ) -> pb.AllocPagesBulkResponse:
        pfns = self._arena(request.arena).alloc_bulk(request.order, request.count)
        return pb.AllocPagesBulkResponse(order=request.order, pfns=pfns)

    @translate
    async def FreePages(
        self, request: pb.FreePagesRequest, context: Context
    ) -> pb.FreePagesResponse:
        arena = self._arena(request.arena)
        freed = arena.free((b.pfn, b.order) for b in request.blocks)
        return pb.FreePagesResponse(freed_pages=freed)

    @translate
    async def FreePagesBulk(
        self, request: pb.FreePagesBulkRequest, context: Context
    ) -> pb.FreePagesResponse:
        freed = self._arena(request.arena).free_bulk(request.order, request.pfns)
        return pb.FreePagesResponse(freed_pages=freed)

    @translate
    async def GetBuddyInfo(
        self, request: pb.GetBuddyInfoRequest, context: Context
    ) -> pb.GetBuddyInfoResponse:
        arenas = self._selected(request)
        return pb.GetBuddyInfoResponse(
            arenas=[
                pb.ArenaBuddyInfo(
                    arena=arena_ref(a),
                    nr_free=a.nr_free(),
                )
                for a in arenas
            ]
        )

    @translate
    async def GetFragmentation(
        self, request: pb.GetFragmentationRequest, context: Context
    ) -> pb.GetFragmentationResponse:
        arenas = self._selected(request)
        return pb.GetFragmentationResponse(
            arenas=[
                pb.ArenaFragmentation(
                    arena=arena_ref(a),
                    unusable_free_index_milli=unusable_free_indices(a.nr_free()),
                    fragmentation_index_milli=fragmentation_indices(a.nr_free()),
                )
                for a in arenas
            ]
        )

    @translate
    async def Audit(self, request: pb.AuditRequest, context: Context) -> pb.AuditResponse:
        reports = self.allocator.audit()
        problems = [p for r in reports for p in r.problems]
        return pb.AuditResponse(
            ok=not problems,
            problems=problems,
            arenas_checked=len(reports),
            blocks_checked=sum(r.blocks_checked for r in reports),
        )

    @translate
    async def GetFreeBlocks(
        self, request: pb.GetFreeBlocksRequest, context: Context
    ) -> pb.GetFreeBlocksResponse:
        arenas = self._selected(request)
        return pb.GetFreeBlocksResponse(
            arenas=[
                pb.ArenaFreeBlocks(
                    arena=arena_ref(a),
                    start_pfn=a.spec.start_pfn,
                    pages=a.spec.pages,
                    free_lists=[
                        pb.FreeList(order=order, pages=ranges_message(ranges))
                        for order, ranges in enumerate(free_block_ranges(a))
                    ],
                )
                for a in arenas
            ]
        )


def buddy_service(allocator: BuddyAllocator | None = None) -> Service:
    allocator = allocator or BuddyAllocator()
    servicer = BuddyServicer(allocator)
    return Service(
        name="buddy",
        service_names=[pb.DESCRIPTOR.services_by_name["BuddyAllocator"].full_name],
        add_to_server=lambda server: buddy_pb2_grpc.add_BuddyAllocatorServicer_to_server(
            servicer, server
        ),
        collectors=[BuddyCollector(allocator)],
    )
