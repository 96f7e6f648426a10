"""The zone router of the MMU and the slab on a machine with a zone instance
per node: allocations to the CPU's node, frees to the pfn's owner, reclaimers
registered everywhere, counters summed."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pytest

from memsim.common.v1 import common_pb2
from memsim.profiles.loader import load_profile
from memsim.services.mmu.config import MmuConfig
from memsim.services.slab.config import SlabConfig
from memsim.services.zone.router import ZoneRouter
from memsim.zone.v1 import zone_pb2 as pb

PROFILE = load_profile("numa", mem="64M")


class FakeZone:
    """One node's zone instance: records what it is asked."""

    def __init__(self, node: int) -> None:
        self.node = node
        self.allocs: list[int] = []  # cpu of each
        self.frees: list[list[tuple[int, int]]] = []
        self.reclaimers: list[str] = []

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
        self.allocs.append(cpu)
        return [(1000 * (self.node + 1), order)]

    async def free(
        self, blocks: Iterable[tuple[int, int]], cpu: int = 0, cold: bool = False
    ) -> int:
        batch = list(blocks)
        self.frees.append(batch)
        return sum(1 << order for _, order in batch)

    async def zoneinfo(self) -> pb.GetZoneInfoResponse:
        zone = pb.Zone(ref=common_pb2.ArenaRef(node=self.node, zone="DMA32"), free_pages=10)
        return pb.GetZoneInfoResponse(
            nodes=[pb.Node(node=self.node, zones=[zone])], page_size_bytes=4096, profile="numa"
        )

    async def zone_frames(self) -> pb.GetZoneFramesResponse:
        frames = pb.ZoneFrames(zone=common_pb2.ArenaRef(node=self.node, zone="DMA32"))
        return pb.GetZoneFramesResponse(zones=[frames], page_size_bytes=4096)

    async def vmstat(self) -> list[tuple[str, int]]:
        return [("nr_free_pages", 10 + self.node), ("pgalloc_dma32", 1)]

    async def register_reclaimer(self, name: str, address: str) -> int:
        self.reclaimers.append(name)
        return len(self.reclaimers)

    async def drain(self) -> int:
        return 3


def router() -> tuple[ZoneRouter, FakeZone, FakeZone]:
    zones = FakeZone(0), FakeZone(1)
    # Given out of order: the router keeps them by node.
    return ZoneRouter(PROFILE, {1: zones[1], 0: zones[0]}), zones[0], zones[1]


def first_pfn_of(node: int) -> int:
    return min(z.start_pfn for z in PROFILE.zones if z.node == node)


async def test_an_allocation_goes_to_the_zone_of_the_cpus_node() -> None:
    r, zone0, zone1 = router()
    for cpu in range(PROFILE.cpus):
        got = await r.alloc(0xD0, 0, 1, cpu)
        node = PROFILE.cpu_node(cpu)
        assert got == [(1000 * (node + 1), 0)]
    assert zone0.allocs == [c for c in range(PROFILE.cpus) if PROFILE.cpu_node(c) == 0]
    assert zone1.allocs == [c for c in range(PROFILE.cpus) if PROFILE.cpu_node(c) == 1]
    assert zone0.allocs
    assert zone1.allocs


async def test_a_free_goes_to_the_instance_owning_the_pfns_node() -> None:
    r, zone0, zone1 = router()
    on0, on1 = first_pfn_of(0) + 5, first_pfn_of(1) + 7
    last1 = max(z.start_pfn + z.pages for z in PROFILE.zones if z.node == 1) - 1
    # Freed on a CPU of node 0: node 1's pages still go to node 1's instance.
    freed = await r.free([(on0, 0), (on1, 1), (last1, 0)], cpu=0)
    assert freed == 4
    assert zone0.frees == [[(on0, 0)]]
    assert zone1.frees == [[(on1, 1), (last1, 0)]]
    owners = {pfn: r.layout.zone_of_pfn(pfn) for pfn in (on0, on1, last1 + 1)}
    assert [z.node if z else None for z in owners.values()] == [0, 1, None]


async def test_reclaimers_register_everywhere_and_reads_are_merged() -> None:
    r, zone0, zone1 = router()
    assert await r.register_reclaimer("mmu", "127.0.0.1:1") == 1
    assert zone0.reclaimers == zone1.reclaimers == ["mmu"]
    info = await r.zoneinfo()
    assert [n.node for n in info.nodes] == [0, 1]
    assert sum(z.free_pages for n in info.nodes for z in n.zones) == 20
    assert info.page_size_bytes == 4096
    frames = await r.zone_frames()
    assert [z.zone.node for z in frames.zones] == [0, 1]
    assert await r.vmstat() == [("nr_free_pages", 21), ("pgalloc_dma32", 2)]
    assert await r.drain() == 6


def test_the_mmu_and_the_slab_read_the_zone_of_each_node() -> None:
    env = {"MEMSIM_PROFILE": "numa", "MEMSIM_ZONE_NODES": "0=zone-0:50052,1=zone-1:50052"}
    assert MmuConfig.from_env(env).zone_nodes == {0: "zone-0:50052", 1: "zone-1:50052"}
    assert SlabConfig.from_env(env).zone_nodes == {0: "zone-0:50052", 1: "zone-1:50052"}
    assert MmuConfig.from_env({"MEMSIM_PROFILE": "numa"}).zone_nodes == {}
    with pytest.raises(ValueError, match="at least one"):
        ZoneRouter(PROFILE, {})
