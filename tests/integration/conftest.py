"""Fixtures of the integration tests: a real buddy server on loopback.

Every test gets its own server (port 0, metrics on port 0), its own channel
from memsim.runtime.channel.open_channel, the raw stub (for requests the typed
client cannot express) and the typed BuddyClient.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest_asyncio

from memsim.buddy.v1 import buddy_pb2 as pb
from memsim.buddy.v1 import buddy_pb2_grpc
from memsim.common.v1 import common_pb2
from memsim.profiles.loader import load_profile
from memsim.runtime.channel import open_channel
from memsim.runtime.server import RunningServer, start_server
from memsim.services.buddy.allocator import BuddyAllocator
from memsim.services.buddy.client import BuddyClient
from memsim.services.buddy.server import buddy_service
from memsim.services.mmu.config import MmuConfig
from memsim.services.mmu.server import mmu_service
from memsim.services.zone.client import ZoneClient
from memsim.services.zone.config import ZoneConfig
from memsim.services.zone.server import zone_service

if TYPE_CHECKING:
    from memsim.buddy.v1.buddy_pb2_grpc import BuddyAllocatorAsyncStub

# The machine most tests run on: node 0 with a DMA and a Normal zone.
DMA = (0, "DMA", 0, 4096)  # 4 blocks of order 10
NORMAL = (0, "Normal", 4096, 229376 - 4096)  # 220 blocks of order 10
MAX_ORDER = 11


def ref(zone: str, node: int = 0) -> common_pb2.ArenaRef:
    return common_pb2.ArenaRef(node=node, zone=zone)


@dataclass(frozen=True)
class State:
    """What the server exposes of its arenas: to compare before and after a call."""

    buddyinfo: pb.GetBuddyInfoResponse
    arenas: pb.ListArenasResponse
    fragmentation: pb.GetFragmentationResponse


@dataclass
class BuddyHarness:
    running: RunningServer
    channel: grpc.aio.Channel
    stub: BuddyAllocatorAsyncStub
    client: BuddyClient
    allocator: BuddyAllocator

    async def state(self) -> State:
        return State(
            buddyinfo=await self.stub.GetBuddyInfo(pb.GetBuddyInfoRequest()),
            arenas=await self.stub.ListArenas(pb.ListArenasRequest()),
            fragmentation=await self.stub.GetFragmentation(pb.GetFragmentationRequest()),
        )

    async def nr_free(self, zone: str, node: int = 0) -> list[int]:
        (info,) = await self.client.buddyinfo(node, zone)
        return list(info.nr_free)

    async def assert_sound(self) -> None:
        """The server still answers, and every invariant of every arena holds."""
        audit = await self.client.audit()
        assert list(audit.problems) == []
        assert audit.ok is True


@pytest_asyncio.fixture
async def buddy() -> AsyncIterator[BuddyHarness]:
    """A buddy server without arenas."""
    allocator = BuddyAllocator()
    running = await start_server(buddy_service(allocator), "127.0.0.1:0", "127.0.0.1:0")
    channel = open_channel(running.address)
    try:
        yield BuddyHarness(
            running=running,
            channel=channel,
            stub=buddy_pb2_grpc.BuddyAllocatorStub(channel),
            client=BuddyClient(channel),
            allocator=allocator,
        )
    finally:
        await channel.close(None)
        await running.stop(0)


@pytest_asyncio.fixture
async def machine(buddy: BuddyHarness) -> BuddyHarness:
    """The buddy server with node 0's DMA and Normal arenas (MAX_ORDER 11)."""
    for node, zone, start_pfn, pages in (DMA, NORMAL):
        await buddy.client.create_arena(node, zone, start_pfn, pages)
    return buddy


@dataclass
class MmuStack:
    """Zone and MMU servers in process over a buddy fixture, with channels to both."""

    buddy: BuddyHarness
    zone: ZoneClient
    mmu_channel: grpc.aio.Channel

    async def buddy_state(self) -> list[list[int]]:
        """buddyinfo once the per-CPU lists are drained: what "back to boot" compares."""
        await self.zone.drain()
        return [list(a.nr_free) for a in await self.buddy.client.buddyinfo()]


@contextlib.asynccontextmanager
async def mmu_stack(
    buddy: BuddyHarness, data_dir: Path, swap_bytes: int, mem: str = "64M"
) -> AsyncIterator[MmuStack]:
    """x86_32 with `mem` of RAM and `swap_bytes` of swap."""
    profile = load_profile("x86_32", mem=mem)
    zone = await start_server(
        zone_service(ZoneConfig(profile, buddy.running.address)), "127.0.0.1:0", None
    )
    config = MmuConfig(profile, zone.address, swap_bytes=swap_bytes, data_dir=data_dir)
    mmu = await start_server(mmu_service(config), "127.0.0.1:0", None)
    zone_channel, mmu_channel = open_channel(zone.address), open_channel(mmu.address)
    try:
        yield MmuStack(buddy, ZoneClient(zone_channel), mmu_channel)
    finally:
        await mmu_channel.close(None)
        await zone_channel.close(None)
        await mmu.stop(0)  # before zone, and zone before the buddy fixture stops buddy
        await zone.stop(0)
