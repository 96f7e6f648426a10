"""The slab service's gRPC edge, and its reclaimer face toward the zone."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import grpc

from memsim.runtime.errors import translate_errors
from memsim.runtime.server import Service
from memsim.services.frames import ranges_message
from memsim.services.slab.cache import CacheInfo
from memsim.services.slab.config import SlabConfig
from memsim.services.slab.core import SlabAllocator
from memsim.services.slab.errors import (
    BadFree,
    BadRequest,
    CacheBusy,
    DuplicateCache,
    NoMemory,
    UnknownArea,
    UnknownCache,
)
from memsim.services.slab.frames import cache_page_ranges, vmalloc_page_ranges
from memsim.services.slab.metrics import SlabCollector
from memsim.services.slab.service import SlabService
from memsim.services.slab.zone_port import GrpcPages, PagePort
from memsim.services.zone.router import dial_zone
from memsim.slab.v1 import slab_pb2 as pb
from memsim.slab.v1 import slab_pb2_grpc
from memsim.zone.v1 import zone_pb2 as zone_pb
from memsim.zone.v1 import zone_pb2_grpc

STATUS: dict[type[Exception], grpc.StatusCode] = {
    BadRequest: grpc.StatusCode.INVALID_ARGUMENT,
    UnknownCache: grpc.StatusCode.NOT_FOUND,
    UnknownArea: grpc.StatusCode.NOT_FOUND,
    DuplicateCache: grpc.StatusCode.ALREADY_EXISTS,
    CacheBusy: grpc.StatusCode.FAILED_PRECONDITION,
    BadFree: grpc.StatusCode.FAILED_PRECONDITION,
    NoMemory: grpc.StatusCode.RESOURCE_EXHAUSTED,
}
translate = translate_errors(STATUS)
Context = grpc.aio.ServicerContext[Any, Any]
# One gRPC message carries at most this many objects or bytes.
MAX_BATCH = 1 << 16
MAX_IO_BYTES = 1 << 21


def cache_info(info: CacheInfo) -> pb.CacheInfo:
    stats = info.stats
    return pb.CacheInfo(
        name=info.name,
        object_size_bytes=info.obj_size,
        buffer_size_bytes=info.buffer_size,
        align_bytes=info.align,
        flags=info.flags,
        ctor=info.ctor,
        objects_per_slab=info.num,
        gfporder=info.gfporder,
        active_objects=info.active_objs,
        total_objects=info.num_objs,
        active_slabs=info.active_slabs,
        total_slabs=info.num_slabs,
        free_slabs=info.free_slabs,
        limit=info.limit,
        batchcount=info.batchcount,
        shared=info.shared,
        reclaimable=info.reclaimable,
        off_slab=info.off_slab,
        allocations=stats.allocations,
        frees=stats.frees,
        ctor_calls=stats.ctor_calls,
        slabs_grown=stats.grown,
        slabs_destroyed=stats.destroyed,
        errors=stats.errors,
        colour=info.colour,
        colour_off_bytes=info.colour_off,
        array_avail=info.array_avail,
    )


def _count(count: int) -> int:
    """0 means one, as for a single allocation."""
    if count > MAX_BATCH:
        raise BadRequest(f"count {count} is more than {MAX_BATCH} objects in one call")
    return count or 1


def _addresses(addresses: Any) -> list[int]:
    if not addresses:
        raise BadRequest("no addresses given")
    if len(addresses) > MAX_BATCH:
        raise BadRequest(f"{len(addresses)} addresses is more than {MAX_BATCH} in one call")
    return list(addresses)


class SlabServicer(slab_pb2_grpc.SlabServicer):
    def __init__(self, service: SlabService) -> None:
        self.service = service
        self.slab = service.slab

    @translate
    async def CreateCache(self, request: pb.CreateCacheRequest, context: Context) -> pb.CacheInfo:
        cache = self.slab.create_cache(
            request.name,
            request.object_size_bytes,
            request.align_bytes,
            request.flags,
            request.ctor or None,
        )
        return cache_info(cache.info())

    @translate
    async def DestroyCache(
        self, request: pb.DestroyCacheRequest, context: Context
    ) -> pb.DestroyCacheResponse:
        return pb.DestroyCacheResponse(freed_pages=await self.service.destroy_cache(request.name))

    @translate
    async def CacheAlloc(
        self, request: pb.CacheAllocRequest, context: Context
    ) -> pb.CacheAllocResponse:
        addresses = await self.service.cache_alloc(
            request.name, _count(request.count), request.gfp_mask
        )
        return pb.CacheAllocResponse(addresses=addresses)

    @translate
    async def CacheFree(
        self, request: pb.CacheFreeRequest, context: Context
    ) -> pb.CacheFreeResponse:
        freed = await self.service.cache_free(request.name, _addresses(request.addresses))
        return pb.CacheFreeResponse(freed_pages=freed)

    @translate
    async def ShrinkCache(
        self, request: pb.ShrinkCacheRequest, context: Context
    ) -> pb.ShrinkCacheResponse:
        return pb.ShrinkCacheResponse(freed_pages=await self.service.shrink_cache(request.name))

    @translate
    async def Kmalloc(self, request: pb.KmallocRequest, context: Context) -> pb.KmallocResponse:
        allocated = await self.service.kmalloc(
            request.size_bytes, _count(request.count), request.gfp_mask
        )
        return pb.KmallocResponse(
            addresses=allocated.addresses,
            size_class_bytes=self.slab.cache(allocated.cache).obj_size,
            cache=allocated.cache,
        )

    @translate
    async def Kfree(self, request: pb.KfreeRequest, context: Context) -> pb.KfreeResponse:
        return pb.KfreeResponse(freed_pages=await self.service.kfree(_addresses(request.addresses)))

    @translate
    async def Ksize(self, request: pb.KsizeRequest, context: Context) -> pb.KsizeResponse:
        return pb.KsizeResponse(size_bytes=self.slab.ksize(request.address))

    @translate
    async def WriteObject(
        self, request: pb.WriteObjectRequest, context: Context
    ) -> pb.WriteObjectResponse:
        if not request.data:
            raise BadRequest("write: no data")
        if len(request.data) > MAX_IO_BYTES:
            raise BadRequest(f"write: {len(request.data)} bytes is more than {MAX_IO_BYTES}")
        self.slab.write(request.address, request.data)
        return pb.WriteObjectResponse()

    @translate
    async def ReadObject(
        self, request: pb.ReadObjectRequest, context: Context
    ) -> pb.ReadObjectResponse:
        if not 0 < request.length_bytes <= MAX_IO_BYTES:
            raise BadRequest(f"read: length {request.length_bytes} is outside 1..{MAX_IO_BYTES}")
        return pb.ReadObjectResponse(data=self.slab.read(request.address, request.length_bytes))

    @translate
    async def Vmalloc(self, request: pb.VmallocRequest, context: Context) -> pb.VmallocResponse:
        address, pages = await self.service.vmalloc(request.size_bytes, request.caller)
        return pb.VmallocResponse(address=address, pages=pages)

    @translate
    async def Vfree(self, request: pb.VfreeRequest, context: Context) -> pb.VfreeResponse:
        return pb.VfreeResponse(freed_pages=await self.service.vfree(request.address))

    @translate
    async def GetSlabInfo(
        self, request: pb.GetSlabInfoRequest, context: Context
    ) -> pb.GetSlabInfoResponse:
        pages = self.slab.slab_pages()
        return pb.GetSlabInfoResponse(
            caches=[cache_info(info) for info in self.slab.infos()],
            page_size_bytes=self.slab.profile.page_size,
            reclaimable_pages=pages.reclaimable,
            unreclaimable_pages=pages.unreclaimable,
            zones=[
                pb.SlabZonePages(
                    node=node,
                    zone=zone,
                    slab_reclaimable_pages=counts["slab_reclaimable"],
                    slab_unreclaimable_pages=counts["slab_unreclaimable"],
                    vmalloc_pages=counts["vmalloc"],
                )
                for (node, zone), counts in sorted(self.slab.zone_pages().items())
            ],
        )

    @translate
    async def GetVmallocInfo(
        self, request: pb.GetVmallocInfoRequest, context: Context
    ) -> pb.GetVmallocInfoResponse:
        info = self.slab.vmalloc_info()
        return pb.GetVmallocInfoResponse(
            areas=[
                pb.VmArea(
                    address=area.addr,
                    size_bytes=area.size,
                    pages=area.nr_pages,
                    caller=area.caller,
                    node_pages=dict(self.slab.vm.node_counts(area)),
                )
                for area in self.slab.vm_areas()
            ],
            total_bytes=info.total,
            used_bytes=info.used,
            largest_chunk_bytes=info.largest_chunk,
            word_bytes=self.slab.profile.word_bytes,
        )

    @translate
    async def GetKernelLog(
        self, request: pb.GetKernelLogRequest, context: Context
    ) -> pb.GetKernelLogResponse:
        log = self.slab.log
        return pb.GetKernelLogResponse(lines=log.since(request.since_seq), next_seq=log.total)

    @translate
    async def GetSlabFrames(
        self, request: pb.GetSlabFramesRequest, context: Context
    ) -> pb.GetSlabFramesResponse:
        return pb.GetSlabFramesResponse(
            caches=[
                pb.CacheFrames(
                    name=held.name,
                    reclaimable=held.reclaimable,
                    pages=ranges_message(held.ranges),
                )
                for held in cache_page_ranges(self.slab)
            ],
            vmalloc_pages=ranges_message(vmalloc_page_ranges(self.slab)),
        )


class ReclaimerServicer(zone_pb2_grpc.ReclaimerServicer):
    """What the zone's kswapd and direct reclaim call: shrink_slab. Slab pages
    are never HighMem, so a HighMem zone gets nothing."""

    def __init__(self, service: SlabService) -> None:
        self.service = service

    @translate
    async def ShrinkZone(
        self, request: zone_pb.ShrinkZoneRequest, context: Context
    ) -> zone_pb.ShrinkZoneResponse:
        if request.zone.zone in ("HighMem", "Movable"):
            return zone_pb.ShrinkZoneResponse()
        scanned, freed = await self.service.reclaim(request.nr_to_reclaim)
        return zone_pb.ShrinkZoneResponse(nr_scanned=scanned, nr_reclaimed=freed)

    @translate
    async def DrainCache(
        self, request: zone_pb.DrainCacheRequest, context: Context
    ) -> zone_pb.DrainCacheResponse:
        return zone_pb.DrainCacheResponse(drained_pages=await self.service.drain())


def slab_service(config: SlabConfig | None = None, pages: PagePort | None = None) -> Service:
    """The slab service; with no page port given it dials the zone at start,
    registers with it as a reclaimer and reaps its caches every 2 s."""
    config = config or SlabConfig.from_env()
    slab = SlabAllocator(config.profile)
    service = SlabService(slab, pages or _unconnected())
    channels: list[grpc.aio.Channel] = []
    tasks: list[asyncio.Task[None]] = []

    async def reap_forever() -> None:
        while True:
            await asyncio.sleep(config.reap_interval_s)
            with contextlib.suppress(grpc.aio.AioRpcError):
                await service.reap()

    async def on_start(address: str) -> None:
        if pages is None:  # a channel belongs to the loop the server runs on
            client, zone_channels = dial_zone(
                config.profile, config.zone_address, config.zone_nodes
            )
            channels.extend(zone_channels)
            service.pages = GrpcPages(client)
            await client.register_reclaimer("slab", address)
            if config.reap_interval_s > 0:
                tasks.append(asyncio.create_task(reap_forever()))

    async def on_stop() -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for channel in channels:
            await channel.close(None)

    def add(server: grpc.aio.Server) -> None:
        slab_pb2_grpc.add_SlabServicer_to_server(SlabServicer(service), server)
        zone_pb2_grpc.add_ReclaimerServicer_to_server(ReclaimerServicer(service), server)

    return Service(
        name="slab",
        service_names=[
            pb.DESCRIPTOR.services_by_name["Slab"].full_name,
            zone_pb.DESCRIPTOR.services_by_name["Reclaimer"].full_name,
        ],
        add_to_server=add,
        collectors=[SlabCollector(slab)],
        on_start=on_start,
        on_stop=on_stop,
    )


def _unconnected() -> PagePort:
    from memsim.services.zone.ports import NotConnected

    port: PagePort = NotConnected()  # type: ignore[assignment]
    return port
