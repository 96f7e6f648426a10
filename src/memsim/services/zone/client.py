"""Typed client of the zone service, for the mmu and slab services and the CLI."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import grpc

from memsim.common.v1 import common_pb2
from memsim.zone.v1 import zone_pb2 as pb
from memsim.zone.v1 import zone_pb2_grpc


class ZoneClient:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = zone_pb2_grpc.ZoneAllocatorStub(channel)

    async def alloc(
        self,
        gfp_mask: int,
        order: int = 0,
        count: int = 1,
        cpu: int = 0,
        extra: int = 0,
        *,
        pid: int = 0,
        nodes: Sequence[int] = (),
        mempolicy_nodes: Sequence[int] = (),
        peer_alloc_flags: int = 0,
    ) -> list[tuple[int, int]]:
        """(pfn, order) of every block allocated."""
        response = await self.alloc_pages(
            gfp_mask,
            order,
            count,
            cpu,
            extra,
            pid=pid,
            nodes=nodes,
            mempolicy_nodes=mempolicy_nodes,
            peer_alloc_flags=peer_alloc_flags,
        )
        return [(pfn, b.order) for b in response.blocks for pfn in b.pfns]

    async def alloc_pages(
        self,
        gfp_mask: int,
        order: int = 0,
        count: int = 1,
        cpu: int = 0,
        extra: int = 0,
        *,
        pid: int = 0,
        nodes: Sequence[int] = (),
        mempolicy_nodes: Sequence[int] = (),
        peer_alloc_flags: int = 0,
    ) -> pb.AllocPagesResponse:
        """nodes: the process's cpuset; mempolicy_nodes: its MPOL_BIND nodes;
        peer_alloc_flags: only from another zone instance (see the proto)."""
        return await self._stub.AllocPages(
            pb.AllocPagesRequest(
                gfp_mask=gfp_mask,
                order=order,
                count=count,
                cpu=cpu,
                extra=extra,
                pid=pid,
                nodes=list(nodes),
                mempolicy_nodes=list(mempolicy_nodes),
                peer_alloc_flags=peer_alloc_flags,
            )
        )

    async def free(
        self, blocks: Iterable[tuple[int, int]], cpu: int = 0, cold: bool = False
    ) -> int:
        request = pb.FreePagesRequest(
            cpu=cpu,
            cold=cold,
            blocks=[common_pb2.PageBlock(pfn=pfn, order=order) for pfn, order in blocks],
        )
        return (await self._stub.FreePages(request)).freed_pages

    async def zoneinfo(self) -> pb.GetZoneInfoResponse:
        return await self._stub.GetZoneInfo(pb.GetZoneInfoRequest())

    async def zone_frames(self) -> pb.GetZoneFramesResponse:
        """Every zone's span and the pages on its per-CPU lists."""
        return await self._stub.GetZoneFrames(pb.GetZoneFramesRequest())

    async def vmstat(self) -> list[tuple[str, int]]:
        response = await self._stub.GetVmstat(pb.GetVmstatRequest())
        return [(item.name, item.value) for item in response.items]

    async def set_watermarks(
        self, min_free_kbytes: int | None = None, lowmem_reserve_ratio: list[int] | None = None
    ) -> pb.WatermarkSettings:
        request = pb.SetWatermarkSettingsRequest(lowmem_reserve_ratio=lowmem_reserve_ratio or [])
        if min_free_kbytes is not None:
            request.min_free_kbytes = min_free_kbytes
        return await self._stub.SetWatermarkSettings(request)

    async def register_reclaimer(self, name: str, address: str) -> int:
        return (
            await self._stub.RegisterReclaimer(
                pb.RegisterReclaimerRequest(name=name, address=address)
            )
        ).reclaimers

    async def drain(self) -> int:
        return (await self._stub.DrainPages(pb.DrainPagesRequest())).drained_pages
