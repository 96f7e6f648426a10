"""The zone of a machine split by node, as one zone to its callers (the MMU,
the slab): one zone instance per node (MEMSIM_ZONE_NODES="0=addr,1=addr").

An allocation goes to the instance of the CPU's node (whose zonelist falls
back to the other nodes' instances by itself); a free goes to the instance
that owns the pfn's node (the profile says which pfns each node spans); a
reclaimer registers with every instance; what is read (zoneinfo, the zone
frames, vmstat) is every instance's answer merged, counters summed.

A batch of frees that spans nodes is one call per node: if one node's
instance refuses its part, the others' parts are already freed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

import grpc

from memsim.profiles.loader import MachineProfile
from memsim.runtime.channel import open_channel
from memsim.services.zone.client import ZoneClient
from memsim.services.zone.machine import Machine
from memsim.zone.v1 import zone_pb2 as pb


class ZoneCalls(Protocol):
    """What the MMU and the slab call of the zone: a ZoneClient, or a router."""

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
    ) -> list[tuple[int, int]]: ...

    async def free(
        self, blocks: Iterable[tuple[int, int]], cpu: int = 0, cold: bool = False
    ) -> int: ...

    async def zoneinfo(self) -> pb.GetZoneInfoResponse: ...

    async def zone_frames(self) -> pb.GetZoneFramesResponse: ...

    async def vmstat(self) -> list[tuple[str, int]]: ...

    async def register_reclaimer(self, name: str, address: str) -> int: ...

    async def drain(self) -> int: ...


def merge_zoneinfo(answers: Sequence[pb.GetZoneInfoResponse]) -> pb.GetZoneInfoResponse:
    """Every instance's nodes in one answer, by node."""
    merged = pb.GetZoneInfoResponse()
    merged.CopyFrom(answers[0])
    del merged.nodes[:]
    merged.nodes.extend(sorted((n for a in answers for n in a.nodes), key=lambda n: n.node))
    return merged


def merge_zone_frames(answers: Sequence[pb.GetZoneFramesResponse]) -> pb.GetZoneFramesResponse:
    merged = pb.GetZoneFramesResponse()
    merged.CopyFrom(answers[0])
    del merged.zones[:]
    merged.zones.extend(sorted((z for a in answers for z in a.zones), key=lambda z: z.zone.node))
    return merged


def sum_vmstat(answers: Iterable[Sequence[tuple[str, int]]]) -> list[tuple[str, int]]:
    """Counters summed by name, in the order they first appear."""
    totals: dict[str, int] = {}
    for items in answers:
        for name, value in items:
            totals[name] = totals.get(name, 0) + value
    return list(totals.items())


class ZoneRouter:
    """ZoneCalls over one zone instance per node."""

    def __init__(self, profile: MachineProfile, instances: Mapping[int, ZoneCalls]) -> None:
        if not instances:
            raise ValueError("a zone router needs at least one node's zone instance")
        self.profile = profile
        self.instances = dict(sorted(instances.items()))
        # Which node owns a pfn: the zones' spans, as the MMU and slab look them up.
        self.layout = Machine(profile)

    def for_cpu(self, cpu: int) -> ZoneCalls:
        """The instance of the CPU's node (the first one for a CPU of none)."""
        node = self.profile.cpu_node(cpu) if 0 <= cpu < self.profile.cpus else None
        return self.instances.get(node, next(iter(self.instances.values())))  # type: ignore[arg-type]

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
    ) -> list[tuple[int, int]]:
        return await self.for_cpu(cpu).alloc(
            gfp_mask,
            order,
            count,
            cpu,
            extra,
            pid=pid,
            nodes=nodes,
            mempolicy_nodes=mempolicy_nodes,
        )

    async def free(
        self, blocks: Iterable[tuple[int, int]], cpu: int = 0, cold: bool = False
    ) -> int:
        by_node: dict[int | None, list[tuple[int, int]]] = {}
        for pfn, order in blocks:
            zone = self.layout.zone_of_pfn(pfn)
            by_node.setdefault(zone.node if zone else None, []).append((pfn, order))
        freed = 0
        for node, batch in by_node.items():
            # A pfn of no node: the CPU's instance refuses it (INVALID_ARGUMENT).
            instance = self.instances.get(node) if node is not None else None
            freed += await (instance or self.for_cpu(cpu)).free(batch, cpu, cold)
        return freed

    async def zoneinfo(self) -> pb.GetZoneInfoResponse:
        return merge_zoneinfo([await z.zoneinfo() for z in self.instances.values()])

    async def zone_frames(self) -> pb.GetZoneFramesResponse:
        return merge_zone_frames([await z.zone_frames() for z in self.instances.values()])

    async def vmstat(self) -> list[tuple[str, int]]:
        return sum_vmstat([await z.vmstat() for z in self.instances.values()])

    async def register_reclaimer(self, name: str, address: str) -> int:
        """With every instance: each node's kswapd and direct reclaim ask it."""
        counts = [await z.register_reclaimer(name, address) for z in self.instances.values()]
        return max(counts)

    async def drain(self) -> int:
        return sum([await z.drain() for z in self.instances.values()])


def dial_zone(
    profile: MachineProfile, address: str, nodes: Mapping[int, str]
) -> tuple[ZoneCalls, list[grpc.aio.Channel]]:
    """The zone at address, or, with nodes (MEMSIM_ZONE_NODES), a router over
    every node's instance; and the channels to close."""
    if not nodes:
        channel = open_channel(address)
        return ZoneClient(channel), [channel]
    channels = {node: open_channel(addr) for node, addr in sorted(nodes.items())}
    router = ZoneRouter(profile, {node: ZoneClient(ch) for node, ch in channels.items()})
    return router, list(channels.values())
