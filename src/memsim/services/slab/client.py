"""Typed client of the slab service."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from memsim.slab.v1 import slab_pb2 as pb
from memsim.slab.v1 import slab_pb2_grpc


class SlabClient:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.stub = slab_pb2_grpc.SlabStub(channel)

    async def create_cache(
        self, name: str, object_size: int, align: int = 0, flags: int = 0, ctor: str = ""
    ) -> pb.CacheInfo:
        return await self.stub.CreateCache(
            pb.CreateCacheRequest(
                name=name, object_size_bytes=object_size, align_bytes=align, flags=flags, ctor=ctor
            )
        )

    async def destroy_cache(self, name: str) -> int:
        return (await self.stub.DestroyCache(pb.DestroyCacheRequest(name=name))).freed_pages

    async def cache_alloc(self, name: str, count: int = 1, gfp_mask: int = 0) -> list[int]:
        response = await self.stub.CacheAlloc(
            pb.CacheAllocRequest(name=name, count=count, gfp_mask=gfp_mask)
        )
        return list(response.addresses)

    async def cache_free(self, name: str, addresses: Sequence[int]) -> int:
        request = pb.CacheFreeRequest(name=name, addresses=addresses)
        return (await self.stub.CacheFree(request)).freed_pages

    async def shrink_cache(self, name: str) -> int:
        return (await self.stub.ShrinkCache(pb.ShrinkCacheRequest(name=name))).freed_pages

    async def kmalloc(self, size: int, count: int = 1, gfp_mask: int = 0) -> pb.KmallocResponse:
        return await self.stub.Kmalloc(
            pb.KmallocRequest(size_bytes=size, count=count, gfp_mask=gfp_mask)
        )

    async def kfree(self, addresses: Sequence[int]) -> int:
        return (await self.stub.Kfree(pb.KfreeRequest(addresses=addresses))).freed_pages

    async def ksize(self, address: int) -> int:
        return (await self.stub.Ksize(pb.KsizeRequest(address=address))).size_bytes

    async def write(self, address: int, data: bytes) -> None:
        await self.stub.WriteObject(pb.WriteObjectRequest(address=address, data=data))

    async def read(self, address: int, length: int) -> bytes:
        request = pb.ReadObjectRequest(address=address, length_bytes=length)
        return (await self.stub.ReadObject(request)).data

    async def vmalloc(self, size: int, caller: str = "") -> int:
        return (await self.stub.Vmalloc(pb.VmallocRequest(size_bytes=size, caller=caller))).address

    async def vfree(self, address: int) -> int:
        return (await self.stub.Vfree(pb.VfreeRequest(address=address))).freed_pages

    async def slabinfo(self) -> pb.GetSlabInfoResponse:
        return await self.stub.GetSlabInfo(pb.GetSlabInfoRequest())

    async def vmallocinfo(self) -> pb.GetVmallocInfoResponse:
        return await self.stub.GetVmallocInfo(pb.GetVmallocInfoRequest())

    async def slab_frames(self) -> pb.GetSlabFramesResponse:
        """Every page the service holds: each cache's slabs and vmalloc's pages."""
        return await self.stub.GetSlabFrames(pb.GetSlabFramesRequest())

    async def kernel_log(self, since_seq: int = 0) -> pb.GetKernelLogResponse:
        return await self.stub.GetKernelLog(pb.GetKernelLogRequest(since_seq=since_seq))
