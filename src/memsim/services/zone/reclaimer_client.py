"""A registered reclaimer, reached over gRPC (memsim.zone.v1.Reclaimer)."""

from __future__ import annotations

import grpc

from memsim.common.v1 import common_pb2
from memsim.services.zone.ports import ShrinkResult
from memsim.zone.v1 import zone_pb2 as pb
from memsim.zone.v1 import zone_pb2_grpc


class ReclaimerClient:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self._stub = zone_pb2_grpc.ReclaimerStub(channel)

    async def shrink_zone(
        self, node: int, zone: str, nr_to_reclaim: int, gfp_mask: int, priority: int, kswapd: bool
    ) -> ShrinkResult:
        response = await self._stub.ShrinkZone(
            pb.ShrinkZoneRequest(
                zone=common_pb2.ArenaRef(node=node, zone=zone),
                nr_to_reclaim=nr_to_reclaim,
                gfp_mask=gfp_mask,
                priority=priority,
                kswapd=kswapd,
            )
        )
        return ShrinkResult(
            response.nr_scanned,
            response.nr_reclaimed,
            response.lru_pages if response.HasField("lru_pages") else None,
        )

    async def drain_cache(self) -> int:
        return (await self._stub.DrainCache(pb.DrainCacheRequest())).drained_pages
