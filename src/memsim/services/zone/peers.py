"""The zone instances of the other nodes of a machine split by node
(MEMSIM_ZONE_NODE, MEMSIM_ZONE_PEERS), over gRPC."""

from __future__ import annotations

from collections.abc import Iterable

import grpc

from memsim.services.zone.client import ZoneClient


class RemoteZonePort:
    """PeerZonePort over a ZoneClient of the node's zone instance."""

    def __init__(self, client: ZoneClient) -> None:
        self.client = client

    async def alloc_from_node(
        self, gfp_mask: int, order: int, count: int, cpu: int, alloc_flags: int, pid: int = 0
    ) -> list[int]:
        try:
            got = await self.client.alloc(
                gfp_mask, order, count, cpu, pid=pid, peer_alloc_flags=alloc_flags
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() is grpc.StatusCode.RESOURCE_EXHAUSTED:
                return []
            raise
        return [pfn for pfn, _ in got]

    async def free(self, blocks: Iterable[tuple[int, int]], cpu: int, cold: bool = False) -> int:
        return await self.client.free(blocks, cpu, cold)
