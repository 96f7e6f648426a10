"""A NUMA machine split by node, in process: two buddies, two zone instances
(MEMSIM_ZONE_NODE 0 and 1, peers of each other) and the MMU routing to them
(MEMSIM_ZONE_NODES). A process on node 0's CPU that needs more than node 0
has gets node 1's pages through the zonelist's fallback, and on exit every
page goes back to the buddy of its own node."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from memsim.clients.process.process import Process
from memsim.profiles.loader import load_profile
from memsim.runtime.channel import open_channel
from memsim.runtime.server import start_server
from memsim.services.buddy.client import BuddyClient
from memsim.services.buddy.server import buddy_service
from memsim.services.mmu.config import MmuConfig
from memsim.services.mmu.server import mmu_service
from memsim.services.zone.client import ZoneClient
from memsim.services.zone.config import ZoneConfig
from memsim.services.zone.router import ZoneRouter
from memsim.services.zone.server import zone_service

PROFILE = load_profile("numa", mem="64M")
MIB = 1 << 20


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Split:
    buddies: dict[int, BuddyClient]
    zones: dict[int, ZoneClient]
    router: ZoneRouter
    mmu_channel: grpc.aio.Channel

    async def buddyinfo(self) -> dict[int, list[tuple[str, list[int]]]]:
        """Each node's buddy lists once every per-CPU list is drained."""
        await self.router.drain()
        return {
            node: [(r.arena.zone, list(r.nr_free)) for r in await buddy.buddyinfo()]
            for node, buddy in self.buddies.items()
        }


@contextlib.asynccontextmanager
async def split_machine(data_dir: Path) -> AsyncIterator[Split]:
    async with contextlib.AsyncExitStack() as stack:
        buddies = {}
        for node in (0, 1):
            server = await start_server(buddy_service(), "127.0.0.1:0", None)
            stack.push_async_callback(server.stop, 0)
            buddies[node] = server.address
        ports = {node: free_port() for node in (0, 1)}
        zones = {node: f"127.0.0.1:{port}" for node, port in ports.items()}
        for node in (0, 1):
            config = ZoneConfig(
                PROFILE, buddies[node], None, node=node, peers={1 - node: zones[1 - node]}
            )
            server = await start_server(zone_service(config), zones[node], None)
            stack.push_async_callback(server.stop, 0)
        mmu = await start_server(
            mmu_service(MmuConfig(PROFILE, "", data_dir=data_dir, zone_nodes=zones)),
            "127.0.0.1:0",
            None,
        )
        stack.push_async_callback(mmu.stop, 0)

        def channel(address: str) -> grpc.aio.Channel:
            opened = open_channel(address, deadline_s=30.0)
            stack.push_async_callback(opened.close, None)
            return opened

        zone_clients = {node: ZoneClient(channel(a)) for node, a in zones.items()}
        yield Split(
            {node: BuddyClient(channel(a)) for node, a in buddies.items()},
            zone_clients,
            ZoneRouter(PROFILE, zone_clients),
            channel(mmu.address),
        )


async def test_each_instance_serves_its_own_node() -> None:
    async with split_machine(Path("/nonexistent")) as m:
        for node, zone in m.zones.items():
            info = await zone.zoneinfo()
            assert [n.node for n in info.nodes] == [node]
            frames = await zone.zone_frames()
            assert {z.zone.node for z in frames.zones} == {node}
        merged = await m.router.zoneinfo()
        assert [n.node for n in merged.nodes] == [0, 1]
        for node, buddy in m.buddies.items():
            assert {r.arena.node for r in await buddy.buddyinfo()} == {node}


async def test_a_process_past_node_0_gets_node_1s_pages_and_gives_them_back(
    tmp_path: Path,
) -> None:
    async with split_machine(tmp_path) as m:
        boot = await m.buddyinfo()
        node0 = sum(z.managed_pages for z in (await m.zones[0].zoneinfo()).nodes[0].zones)
        before1 = sum(z.free_pages for z in (await m.zones[1].zoneinfo()).nodes[0].zones)
        proc = await Process.spawn(m.mmu_channel, "big")
        # memsim's MMU runs a process on a CPU of nodes[pid % nodes]: pid 2 on node 0.
        assert proc.pid % PROFILE.nodes == 0
        size = (node0 * PROFILE.page_size) + 8 * MIB  # more than node 0 has
        address = await proc.mmap(size)
        for offset in range(0, size, 4 * MIB):
            await proc.touch(address + offset, min(4 * MIB, size - offset))
        after1 = await m.zones[1].zoneinfo()
        taken1 = before1 - sum(z.free_pages for z in after1.nodes[0].zones)
        assert taken1 >= 8 * MIB // PROFILE.page_size // 2
        assert sum(z.stats["numa_miss"] for z in after1.nodes[0].zones) > 0
        vmstat = dict(await m.router.vmstat())
        assert vmstat["numa_miss"] == vmstat["numa_foreign"] > 0
        await proc.exit()
        assert await m.buddyinfo() == boot
