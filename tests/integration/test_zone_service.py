"""The zone service over gRPC, on a real buddy server on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
import pytest
import pytest_asyncio

from memsim.profiles.loader import load_profile
from memsim.runtime.channel import open_channel
from memsim.runtime.server import RunningServer, start_server
from memsim.services.zone import gfp as g
from memsim.services.zone.client import ZoneClient
from memsim.services.zone.config import ZoneConfig
from memsim.services.zone.server import zone_service
from memsim.zone.v1 import zone_pb2 as pb
from memsim.zone.v1 import zone_pb2_grpc
from tests.integration.conftest import BuddyHarness

if TYPE_CHECKING:
    from memsim.zone.v1.zone_pb2_grpc import ZoneAllocatorAsyncStub


@dataclass
class ZoneHarness:
    running: RunningServer
    stub: ZoneAllocatorAsyncStub
    client: ZoneClient


async def _zone(buddy: BuddyHarness, profile: str) -> AsyncIterator[ZoneHarness]:
    config = ZoneConfig(load_profile(profile), buddy_address=buddy.running.address)
    running = await start_server(zone_service(config), "127.0.0.1:0", "127.0.0.1:0")
    channel = open_channel(running.address)
    try:
        yield ZoneHarness(running, zone_pb2_grpc.ZoneAllocatorStub(channel), ZoneClient(channel))
    finally:
        await channel.close(None)
        await running.stop(0)  # before the buddy fixture stops buddy


@pytest_asyncio.fixture
async def zone(buddy: BuddyHarness) -> AsyncIterator[ZoneHarness]:
    async for harness in _zone(buddy, "x86_32"):
        yield harness


@pytest_asyncio.fixture
async def small(buddy: BuddyHarness) -> AsyncIterator[ZoneHarness]:
    async for harness in _zone(buddy, "nommu"):
        yield harness


async def status_of(call: Awaitable[Any]) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value.code()


def zones_by_name(info: pb.GetZoneInfoResponse) -> dict[str, pb.Zone]:
    return {z.ref.zone: z for n in info.nodes for z in n.zones}


async def test_alloc_free_round_trip(zone: ZoneHarness, buddy: BuddyHarness) -> None:
    blocks = await zone.client.alloc(g.GFP_KERNEL, order=0, count=40, cpu=1)
    assert len(blocks) == 40
    big = await zone.client.alloc(g.GFP_HIGHUSER_MOVABLE, order=3)
    response = await zone.client.alloc_pages(g.GFP_KERNEL, count=2)
    assert response.allocated == 2
    assert [b.zone.zone for b in response.blocks] == ["Normal"]
    zones = zones_by_name(await zone.client.zoneinfo())
    assert zones["HighMem"].free_pages == zones["HighMem"].managed_pages - 8
    assert await zone.client.free(blocks + big, cpu=0) == 48
    assert await zone.client.drain() > 0
    zones = zones_by_name(await zone.client.zoneinfo())
    assert zones["Normal"].free_pages == zones["Normal"].managed_pages - 2
    assert zones["HighMem"].free_pages == zones["HighMem"].managed_pages
    await buddy.assert_sound()


async def test_zoneinfo_fields(zone: ZoneHarness) -> None:
    info = await zone.client.zoneinfo()
    assert (info.profile, info.page_size_bytes, info.max_order, info.mmu) == (
        "x86_32",
        4096,
        11,
        True,
    )
    zones = zones_by_name(info)
    assert list(zones) == ["DMA", "Normal", "HighMem"]
    for z in zones.values():
        assert 0 < z.managed_pages <= z.present_pages <= z.spanned_pages
        assert z.free_pages == z.managed_pages
        assert z.stats["nr_free_pages"] == z.free_pages
    assert zones["DMA"].managed_pages < zones["DMA"].present_pages  # kernel at 1 MiB
    normal = zones["Normal"]
    assert (normal.min_pages, normal.low_pages, normal.high_pages) == (936, 1170, 1404)
    assert list(zones["DMA"].lowmem_reserve_pages) == [0, 873, 1000, 1000]
    assert list(normal.lowmem_reserve_pages) == [0, 0, 1016, 1016]
    assert [(p.cpu, p.high, p.batch) for p in normal.pagesets] == [
        (0, 186, 31),
        (0, 62, 15),
        (1, 186, 31),
        (1, 62, 15),
    ]


async def test_vmstat_order_and_counts(zone: ZoneHarness) -> None:
    await zone.client.alloc(g.GFP_KERNEL, count=7)
    items = await zone.client.vmstat()
    names = [n for n, _ in items]
    assert names[0] == "nr_free_pages"
    values = dict(items)
    assert values["pgalloc_normal"] == 7
    assert "numa_hit" not in values


async def test_set_watermark_settings(zone: ZoneHarness) -> None:
    settings = await zone.stub.GetWatermarkSettings(pb.GetWatermarkSettingsRequest())
    assert (settings.min_free_kbytes, list(settings.lowmem_reserve_ratio)) == (3816, [256, 32, 32])
    before = await zone.client.zoneinfo()
    bad = [
        pb.SetWatermarkSettingsRequest(min_free_kbytes=-1),
        pb.SetWatermarkSettingsRequest(lowmem_reserve_ratio=[256, 32]),
        pb.SetWatermarkSettingsRequest(min_free_kbytes=7632, lowmem_reserve_ratio=[1, 2, 3, 4]),
    ]
    for request in bad:
        code = await status_of(zone.stub.SetWatermarkSettings(request))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert await zone.client.zoneinfo() == before
    settings = await zone.client.set_watermarks(min_free_kbytes=7632)
    assert settings.min_free_kbytes == 7632
    normal = zones_by_name(await zone.client.zoneinfo())["Normal"]
    # pages_min 1908; tmp = 1908 * 223520 // 227584 = 1873
    assert (normal.min_pages, normal.low_pages, normal.high_pages) == (1873, 2341, 2809)
    await zone.client.set_watermarks(lowmem_reserve_ratio=[128, 32, 32])
    dma = zones_by_name(await zone.client.zoneinfo())["DMA"]
    assert list(dma.lowmem_reserve_pages) == [0, 1746, 2000, 2000]


@pytest.mark.parametrize(
    ("gfp_mask", "order", "count", "cpu"),
    [
        (g.GFP_DMA | 0x02, 0, 1, 0),
        (1 << 22, 0, 1, 0),
        (g.GFP_KERNEL, 11, 1, 0),
        (g.GFP_KERNEL, 0, 0, 0),
        (g.GFP_KERNEL, 0, 1, 9),
    ],
)
async def test_bad_alloc_is_invalid_argument(
    zone: ZoneHarness, gfp_mask: int, order: int, count: int, cpu: int
) -> None:
    before = await zone.client.zoneinfo()
    code = await status_of(zone.client.alloc(gfp_mask, order, count, cpu))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert await zone.client.zoneinfo() == before


async def test_bad_free_is_failed_precondition(zone: ZoneHarness) -> None:
    ((pfn, _),) = await zone.client.alloc(g.GFP_KERNEL)
    before = await zone.client.zoneinfo()
    for blocks in ([(pfn + 1, 0)], [(pfn, 1)], [(pfn, 0), (pfn, 0)]):
        code = await status_of(zone.client.free(blocks))
        assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert await zone.client.zoneinfo() == before
    assert await zone.client.free([(pfn, 0)]) == 1
    code = await status_of(zone.client.free([(pfn, 0)]))
    assert code == grpc.StatusCode.FAILED_PRECONDITION


async def test_reclaimer_registration_errors(zone: ZoneHarness) -> None:
    code = await status_of(zone.client.register_reclaimer("lru", "no port"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code = await status_of(
        zone.stub.UnregisterReclaimer(pb.UnregisterReclaimerRequest(name="nobody"))
    )
    assert code == grpc.StatusCode.NOT_FOUND


async def test_resource_exhausted(small: ZoneHarness) -> None:
    response = await small.client.alloc_pages(g.GFP_KERNEL, count=5000)
    assert response.allocated == 1776 - 90  # managed less min
    code = await status_of(small.client.alloc(g.GFP_KERNEL | g.NOWARN))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert len(await small.client.alloc(g.GFP_ATOMIC)) == 1


class HoldingReclaimer(zone_pb2_grpc.ReclaimerServicer):
    """A reclaimer that gives back pages it holds, through the zone's FreePages."""

    def __init__(self, client: ZoneClient) -> None:
        self.client = client
        self.held: list[int] = []
        self.asked = 0

    async def ShrinkZone(
        self, request: pb.ShrinkZoneRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ShrinkZoneResponse:
        self.asked += 1
        count = min(request.nr_to_reclaim, len(self.held))
        give, self.held = self.held[:count], self.held[count:]
        if give:
            await self.client.free([(pfn, 0) for pfn in give])
        return pb.ShrinkZoneResponse(nr_scanned=2 * count, nr_reclaimed=count)

    async def DrainCache(
        self, request: pb.DrainCacheRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.DrainCacheResponse:
        give, self.held = self.held, []
        if give:
            await self.client.free([(pfn, 0) for pfn in give])
        return pb.DrainCacheResponse(drained_pages=len(give))


async def test_reclaim_asks_a_reclaimer_over_grpc(small: ZoneHarness) -> None:
    """zone -> reclaimer -> zone.FreePages -> zone: the call back in is served
    while the zone waits for the reclaimer, and the allocation then succeeds."""
    reclaimer = HoldingReclaimer(small.client)
    server = grpc.aio.server()
    zone_pb2_grpc.add_ReclaimerServicer_to_server(reclaimer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        assert await small.client.register_reclaimer("test", f"127.0.0.1:{port}") == 1
        got = await small.client.alloc(g.GFP_KERNEL, 0, 5000)
        reclaimer.held = [pfn for pfn, _ in got]
        before = len(reclaimer.held)
        ((pfn, order),) = await small.client.alloc(g.GFP_KERNEL)
        assert order == 0
        assert pfn not in reclaimer.held
        assert reclaimer.asked >= 1
        assert len(reclaimer.held) < before
        vmstat = dict(await small.client.vmstat())
        assert vmstat["pgsteal_normal"] >= 1
        assert vmstat["pgscan_direct_normal"] + vmstat["pgscan_kswapd_normal"] >= 2
    finally:
        await server.stop(0)


async def test_drain_takes_a_reclaimers_own_lists_back_to_buddy(small: ZoneHarness) -> None:
    """DrainPages asks every reclaimer to drain its per-CPU lists before the
    zone drains its own, so buddy gets all of them at once."""
    reclaimer = HoldingReclaimer(small.client)
    server = grpc.aio.server()
    zone_pb2_grpc.add_ReclaimerServicer_to_server(reclaimer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        await small.client.register_reclaimer("test", f"127.0.0.1:{port}")
        await small.client.drain()
        boot = await _free_pages(small.client)
        reclaimer.held = [pfn for pfn, _ in await small.client.alloc(g.GFP_KERNEL, 0, 100)]
        assert await _free_pages(small.client) != boot
        await small.client.drain()
        assert reclaimer.held == []
        assert await _free_pages(small.client) == boot
    finally:
        await server.stop(0)


async def _free_pages(client: ZoneClient) -> list[tuple[int, str, int]]:
    info = await client.zoneinfo()
    return [(node.node, z.ref.zone, z.free_pages) for node in info.nodes for z in node.zones]
