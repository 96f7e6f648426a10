"""A zone instance of one node (MEMSIM_ZONE_NODE): it boots its own node's
zones only, falls back to the other node's instance (a peer) where its
zonelist reaches that node, and sends that node's frees there."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from memsim.profiles.loader import MachineProfile, load_profile
from memsim.runtime.config import ConfigError
from memsim.services.buddy.local import LocalBuddy
from memsim.services.zone import gfp as g
from memsim.services.zone import watermarks as wm
from memsim.services.zone.allocator import ZoneAllocator
from memsim.services.zone.config import ZoneConfig
from memsim.services.zone.errors import BadFree, InvalidRequest, OutOfMemory
from memsim.services.zone.machine import Machine

MEM = "64M"


def numa() -> MachineProfile:
    return load_profile("numa", mem=MEM)


class InProcessPeer:
    """A PeerZonePort over another node's allocator in process; records calls."""

    def __init__(self, allocator: ZoneAllocator) -> None:
        self.allocator = allocator
        self.allocs: list[tuple[int, int, int, int]] = []  # gfp, order, count, flags
        self.frees: list[list[tuple[int, int]]] = []

    async def alloc_from_node(
        self, gfp_mask: int, order: int, count: int, cpu: int, alloc_flags: int, pid: int = 0
    ) -> list[int]:
        self.allocs.append((gfp_mask, order, count, alloc_flags))
        got = await self.allocator.alloc_for_peer(gfp_mask, order, count, cpu, alloc_flags)
        return [pfn for a in got for pfn in a.pfns]

    async def free(self, blocks: Iterable[tuple[int, int]], cpu: int, cold: bool = False) -> int:
        batch = list(blocks)
        self.frees.append(batch)
        return await self.allocator.free_pages(batch, cpu, cold)


async def pair() -> tuple[ZoneAllocator, ZoneAllocator, LocalBuddy, LocalBuddy]:
    """Node 0's and node 1's instances, each over its own buddy, peers of each other."""
    buddies = LocalBuddy(), LocalBuddy()
    zones = [ZoneAllocator(Machine(numa(), node), buddies[node]) for node in (0, 1)]
    zones[0].peers[1] = InProcessPeer(zones[1])
    zones[1].peers[0] = InProcessPeer(zones[0])
    for zone in zones:
        await zone.boot()
    return zones[0], zones[1], buddies[0], buddies[1]


async def take_until_refused(allocator: ZoneAllocator) -> list[int]:
    """Atomic pages on node 0's CPU until the allocator refuses."""
    pfns: list[int] = []
    while True:
        try:
            got = await allocator.alloc_pages(g.GFP_ATOMIC, 0, 64, cpu=0)
        except OutOfMemory:
            return pfns
        pfns += [pfn for a in got for pfn in a.pfns]


def node_of(allocator: ZoneAllocator, pfn: int) -> int:
    zone = allocator.machine.zone_of_pfn(pfn)
    assert zone is not None
    return zone.node


async def test_an_instance_boots_only_its_nodes_arenas_and_kswapd() -> None:
    zone0, zone1, buddy0, buddy1 = await pair()
    try:
        assert {key[0] for key in buddy0.allocator.arenas} == {0}
        assert {key[0] for key in buddy1.allocator.arenas} == {1}
        assert set(buddy0.allocator.arenas) == {
            z.key for z in zone0.machine.zones.values() if z.node == 0 and z.managed
        }
        assert [t.get_name() for t in zone0._kswapd_tasks] == ["kswapd0"]
        assert [t.get_name() for t in zone1._kswapd_tasks] == ["kswapd1"]
        assert zone0.machine.owned_nodes == (0,)
        assert {z.node for z in zone1.machine.owned_zones()} == {1}
    finally:
        await zone0.stop()
        await zone1.stop()


async def test_past_its_own_node_an_allocation_falls_back_to_the_peer() -> None:
    zone0, zone1, _, _ = await pair()
    peer = zone0.peers[1]
    assert isinstance(peer, InProcessPeer)
    try:
        managed0 = sum(z.managed for z in zone0.machine.owned_zones())
        pfns: list[int] = []
        # A CPU of node 0 (cpu 0), GFP_KERNEL with no reclaimer: node 0 first.
        for _ in range(managed0 // 64 + 16):
            got = await zone0.alloc_pages(g.GFP_KERNEL, 0, 64, cpu=0)
            pfns += [pfn for a in got for pfn in a.pfns]
        nodes = [node_of(zone0, pfn) for pfn in pfns]
        assert nodes[0] == 0
        assert 1 in nodes
        # Node 0 first: once node 1 serves, node 0 had nothing above its marks.
        assert nodes == sorted(nodes)
        assert peer.allocs
        for _, _, _, flags in peer.allocs:
            assert flags & (wm.ALLOC_WMARK_LOW | wm.ALLOC_WMARK_MIN)
            assert not flags & wm.ALLOC_CPUSET
        on1 = [p for p in pfns if node_of(zone0, p) == 1]
        assert sum(len(z.handed_out) for z in zone1.machine.owned_zones()) == len(on1)
        # The peer counted the misses; the asking node the foreign pages.
        assert sum(z.numa_stats["numa_miss"] for z in zone1.machine.owned_zones()) == len(on1)
        assert sum(z.numa_stats["numa_foreign"] for z in zone0.machine.owned_zones()) == len(on1)
        # Frees given to node 0's instance go to their owner.
        freed = await zone0.free_pages([(p, 0) for p in pfns], cpu=0)
        assert freed == len(pfns)
        assert sum(len(b) for b in peer.frees) == len(on1)
        assert all(not z.handed_out for z in zone0.machine.zones.values())
        assert all(not z.handed_out for z in zone1.machine.zones.values())
        await zone0.drain_all_pages()
        await zone1.drain_all_pages()
        for zone in (*zone0.machine.owned_zones(), *zone1.machine.owned_zones()):
            assert zone.free_pages == zone.managed
    finally:
        await zone0.stop()
        await zone1.stop()


async def test_a_peer_serves_its_own_node_only_and_never_reclaims_or_kills() -> None:
    zone0, zone1, _, _ = await pair()
    try:
        got = await zone1.alloc_for_peer(g.GFP_KERNEL, 0, 8, 0, wm.ALLOC_WMARK_LOW)
        assert {a.zone.node for a in got} == {1}
        assert sum(len(a.pfns) for a in got) == 8
        # Everything node 1 has above min, then nothing: an answer, not an error.
        taken = 0
        while True:
            more = await zone1.alloc_for_peer(g.GFP_KERNEL, 0, 256, 0, wm.ALLOC_WMARK_MIN)
            if not more:
                break
            taken += sum(len(a.pfns) for a in more)
        assert taken > 0
        assert zone1.oom_rounds == {}
        assert not zone1.kswapd_sleeping(1)  # a failed pass woke kswapd1
        with pytest.raises(InvalidRequest):
            await zone1.alloc_for_peer(g.GFP_KERNEL, 0, 1, 0, wm.ALLOC_CPUSET)
        whole = ZoneAllocator(Machine(numa()), LocalBuddy())
        with pytest.raises(InvalidRequest, match="one node only"):
            await whole.alloc_for_peer(g.GFP_KERNEL, 0, 1, 0, wm.ALLOC_WMARK_LOW)
    finally:
        await zone0.stop()
        await zone1.stop()


async def test_a_free_of_an_unknown_nodes_pfn_is_refused_and_changes_nothing() -> None:
    zone0, zone1, _, _ = await pair()
    try:
        del zone0.peers[1]
        (mine,) = await zone0.alloc_pages(g.GFP_KERNEL, 0, 1, cpu=0)
        other = next(z for z in zone1.machine.owned_zones() if z.managed).arena_start_pfn
        with pytest.raises(BadFree, match="node 1"):
            await zone0.free_pages([(mine.pfns[0], 0), (other, 0)], cpu=0)
        assert mine.pfns[0] in mine.zone.handed_out
        # With no peer for node 1, node 0's instance does without it.
        refused = await take_until_refused(zone0)
        assert refused
        assert all(not z.handed_out for z in zone1.machine.zones.values())
    finally:
        await zone0.stop()
        await zone1.stop()


def test_the_node_and_its_peers_come_from_the_environment() -> None:
    env = {
        "MEMSIM_PROFILE": "numa",
        "MEMSIM_MEM": MEM,
        "MEMSIM_ZONE_NODE": "1",
        "MEMSIM_ZONE_PEERS": "0=10.0.0.1:50052, 1=10.0.0.2:50052",
    }
    config = ZoneConfig.from_env(env)
    assert config.node == 1
    assert config.peers == {0: "10.0.0.1:50052"}  # its own address is left out
    assert ZoneConfig.from_env({"MEMSIM_PROFILE": "numa"}).node is None
    for bad in (
        {"MEMSIM_ZONE_NODE": "2"},
        {"MEMSIM_ZONE_NODE": "x"},
        {"MEMSIM_ZONE_NODE": "0", "MEMSIM_ZONE_PEERS": "1=nowhere"},
        {"MEMSIM_ZONE_NODE": "0", "MEMSIM_ZONE_PEERS": "5=h:1"},
        {"MEMSIM_ZONE_PEERS": "1=h:1"},
    ):
        with pytest.raises(ConfigError):
            ZoneConfig.from_env({"MEMSIM_PROFILE": "numa", **bad})
