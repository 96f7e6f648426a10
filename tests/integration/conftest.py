"""Fixtures of the integration tests: a real buddy server on loopback.

Every test gets its own server (port 0, metrics on port 0), its own channel
from memsim.runtime.channel.open_channel, the raw stub (for requests the typed
client cannot express) and the typed BuddyClient; and `running_servers`, the
zone, slab and MMU servers a test needs, in process.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest_asyncio

from memsim.buddy.v1 import buddy_pb2 as pb
from memsim.buddy.v1 import buddy_pb2_grpc
from memsim.common.v1 import common_pb2
from memsim.mmu.v1 import mmu_pb2_grpc
from memsim.profiles.loader import MachineProfile, load_profile
from memsim.runtime.channel import DEFAULT_DEADLINE_S, open_channel
from memsim.runtime.server import RunningServer, start_server
from memsim.services.buddy.allocator import BuddyAllocator
from memsim.services.buddy.client import BuddyClient
from memsim.services.buddy.local import LocalBuddy
from memsim.services.buddy.server import buddy_service
from memsim.services.mmu.client import MmuClient
from memsim.services.mmu.config import MmuConfig
from memsim.services.mmu.server import mmu_service
from memsim.services.slab.client import SlabClient
from memsim.services.slab.config import SlabConfig
from memsim.services.slab.server import slab_service
from memsim.services.zone.client import ZoneClient
from memsim.services.zone.config import ZoneConfig
from memsim.services.zone.server import zone_service

if TYPE_CHECKING:
    from memsim.buddy.v1.buddy_pb2_grpc import BuddyAllocatorAsyncStub
    from memsim.mmu.v1.mmu_pb2_grpc import MmuAsyncStub

# The machine most tests run on: node 0 with a DMA and a Normal zone.
DMA = (0, "DMA", 0, 4096)  # 4 blocks of order 10
NORMAL = (0, "Normal", 4096, 229376 - 4096)  # 220 blocks of order 10
MAX_ORDER = 11
# How long `until` polls by default: a watch or a sysctl reaching a service.
WAIT_S = 5.0


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


async def until(
    read: Callable[[], Awaitable[Any]], done: Callable[[Any], bool], seconds: float = WAIT_S
) -> Any:
    """Polls read() until done(value), for at most `seconds`; the last value."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while True:
        value = await asyncio.wait_for(read(), seconds)
        if done(value) or loop.time() >= end:
            break
        await asyncio.sleep(0.02)
    assert done(value), f"not reached in {seconds} s: {value!r}"
    return value


# An address where nothing serves: for a service that must not be dialled.
UNREACHABLE = "127.0.0.1:1"


@dataclass
class Servers:
    """Zone, MMU and (when asked for) slab servers in process, with channels."""

    zone: ZoneClient
    zone_address: str
    mmu_address: str
    mmu_channel: grpc.aio.Channel
    slab_channel: grpc.aio.Channel | None

    @property
    def mmu(self) -> MmuClient:
        return MmuClient(self.mmu_channel)

    @property
    def mmu_stub(self) -> MmuAsyncStub:
        return mmu_pb2_grpc.MmuStub(self.mmu_channel)

    @property
    def slab(self) -> SlabClient:
        assert self.slab_channel is not None, "started without slab=True"
        return SlabClient(self.slab_channel)


@contextlib.asynccontextmanager
async def running_servers(
    profile: MachineProfile,
    data_dir: Path,
    *,
    buddy_address: str | None = None,
    buddy: LocalBuddy | None = None,
    policy_address: str | None = None,
    zone_policy: bool = True,
    swap_bytes: int = 0,
    slab: bool = False,
    slab_reap_s: float = 2.0,
    kswapd: bool = True,
    deadline_s: float = DEFAULT_DEADLINE_S,
) -> AsyncIterator[Servers]:
    """The zone (dialling the buddy at `buddy_address`, or else over the
    in-process `buddy`, a new LocalBuddy by default), the slab (with `slab`)
    and the MMU (using the slab when there is one), each told of the policy at
    `policy_address` if given (the MMU only, without `zone_policy`); channels
    with `deadline_s`. On the way out the channels close, then each server
    stops before the one it asks (MMU, slab, zone)."""
    async with contextlib.AsyncExitStack() as stack:
        zone = await start_server(
            zone_service(
                ZoneConfig(
                    profile,
                    buddy_address or UNREACHABLE,
                    policy_address if zone_policy else None,
                    kswapd=kswapd,
                ),
                None if buddy_address else buddy or LocalBuddy(),
            ),
            "127.0.0.1:0",
            None,
        )
        stack.push_async_callback(zone.stop, 0)
        slab_address = None
        if slab:
            slab_server = await start_server(
                slab_service(SlabConfig(profile, zone.address, reap_interval_s=slab_reap_s)),
                "127.0.0.1:0",
                None,
            )
            stack.push_async_callback(slab_server.stop, 0)
            slab_address = slab_server.address
        config = MmuConfig(
            profile,
            zone.address,
            swap_bytes=swap_bytes,
            data_dir=data_dir,
            slab_address=slab_address,
            policy_address=policy_address,
        )
        mmu = await start_server(mmu_service(config), "127.0.0.1:0", None)
        stack.push_async_callback(mmu.stop, 0)

        def channel(address: str) -> grpc.aio.Channel:
            opened = open_channel(address, deadline_s=deadline_s)
            stack.push_async_callback(opened.close, None)
            return opened

        yield Servers(
            ZoneClient(channel(zone.address)),
            zone.address,
            mmu.address,
            channel(mmu.address),
            channel(slab_address) if slab_address else None,
        )


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
    async with running_servers(
        profile, data_dir, buddy_address=buddy.running.address, swap_bytes=swap_bytes
    ) as servers:
        yield MmuStack(buddy, servers.zone, servers.mmu_channel)
