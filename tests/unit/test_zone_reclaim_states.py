"""NUMA misses, all_unreclaimable and __GFP_NOFAIL: the zone allocator's
behaviour once memory is short (2.6.24's zone_statistics, balance_pgdat,
free_pages_bulk and __alloc_pages' retry loop)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from memsim.profiles.loader import load_profile
from memsim.services.buddy.local import LocalBuddy
from memsim.services.zone import gfp as g
from memsim.services.zone.allocator import ZoneAllocator
from memsim.services.zone.errors import OutOfMemory
from memsim.services.zone.machine import DEF_PRIORITY, Machine
from memsim.services.zone.ports import ShrinkResult
from tests.unit.zone_fakes import booted


@pytest_asyncio.fixture
async def nommu() -> AsyncIterator[ZoneAllocator]:
    # One Normal zone: 1776 managed pages, watermarks 90/112/135, pcp high 0.
    async with booted("nommu") as allocator:
        yield allocator


async def take(allocator: ZoneAllocator, gfp_mask: int, count: int, cpu: int = 0) -> list[int]:
    got = await allocator.alloc_pages(gfp_mask, 0, count, cpu)
    return [pfn for a in got for pfn in a.pfns]


async def until_kswapd_idle(allocator: ZoneAllocator) -> None:
    """Lets kswapd (woken or not) run to the end of its balance_pgdat."""
    for _ in range(200):
        await asyncio.sleep(0.005)
        if allocator.kswapd_sleeping(0):
            return
    raise AssertionError("kswapd did not go back to sleep")


class Recorder:
    """A reclaimer that scans `scanned` pages per call and frees what it holds
    only once `release_at` (a loop time) has passed."""

    def __init__(self, allocator: ZoneAllocator, scanned: int = 0) -> None:
        self.allocator = allocator
        self.scanned = scanned
        self.pages: list[int] = []
        self.release_at = 0.0
        self.calls: list[tuple[int, bool]] = []

    async def drain_cache(self) -> int:
        return 0  # no lists of its own

    async def shrink_zone(
        self, node: int, zone: str, nr_to_reclaim: int, gfp_mask: int, priority: int, kswapd: bool
    ) -> ShrinkResult:
        self.calls.append((priority, kswapd))
        if asyncio.get_running_loop().time() < self.release_at:
            return ShrinkResult(self.scanned, 0)
        give, self.pages = self.pages[:nr_to_reclaim], self.pages[nr_to_reclaim:]
        if give:
            await self.allocator.free_pages([(pfn, 0) for pfn in give], cpu=0)
        return ShrinkResult(self.scanned + len(give), len(give))


async def test_numa_allocations_that_leave_their_node_are_misses_and_foreign() -> None:
    # 64 MiB over two nodes: node 0 has DMA and DMA32 (0-32 MiB), node 1 the
    # DMA32 pages of 32-64 MiB. CPU 0 is on node 0, whose zonelist (node order)
    # is node 0 DMA32, node 0 DMA, node 1 DMA32.
    allocator = ZoneAllocator(Machine(load_profile("numa", mem="64M")), LocalBuddy())
    await allocator.boot()
    try:
        zones = allocator.machine.zones
        assert [z.key for z in allocator.machine.zonelist(0, "Normal")] == [
            (0, "DMA32"),
            (0, "DMA"),
            (1, "DMA32"),
        ]
        pfns = await take(allocator, g.GFP_KERNEL, 6000, cpu=0)
        assert len(pfns) == 6000
        away = sum(1 for pfn in pfns if allocator.machine.zone_of_pfn(pfn) is zones[(1, "DMA32")])
        # Node 0 gives pages down to its low watermarks (and DMA's lowmem_reserve),
        # the rest come from node 1.
        assert away > 0
        remote, preferred = zones[(1, "DMA32")].numa_stats, zones[(0, "DMA32")].numa_stats
        assert remote["numa_miss"] == away
        assert remote["numa_other"] == away
        assert remote["numa_hit"] == 0
        assert preferred["numa_foreign"] == away
        # Pages from node 0's DMA are hits too: same node as the preferred zone.
        local_hits = preferred["numa_hit"] + zones[(0, "DMA")].numa_stats["numa_hit"]
        assert local_hits == 6000 - away
    finally:
        await allocator.stop()


async def test_a_zone_with_nothing_to_reclaim_becomes_all_unreclaimable(
    nommu: ZoneAllocator,
) -> None:
    normal = nommu.machine.zones[(0, "Normal")]
    # No reclaimer and no LRU pages: kswapd's first pass frees nothing and
    # pages_scanned (0) >= 6 * lru pages (0).
    held = await take(nommu, g.GFP_KERNEL, 1776 - normal.marks.low + 1)
    assert nommu.kswapd_wakeups == 1
    await until_kswapd_idle(nommu)
    assert normal.all_unreclaimable
    # free_pages_bulk: any page back in buddy makes the zone reclaimable again.
    await nommu.free_pages([(held[0], 0)], cpu=0)
    assert not normal.all_unreclaimable
    assert normal.pages_scanned == 0


async def test_scanning_less_than_six_times_the_lru_keeps_a_zone_reclaimable(
    nommu: ZoneAllocator,
) -> None:
    normal = nommu.machine.zones[(0, "Normal")]
    normal.lru_pages = 100
    recorder = Recorder(nommu, scanned=10)
    nommu.register_reclaimer("recorder", recorder)
    await take(nommu, g.GFP_KERNEL, 1776 - normal.marks.low + 1)
    await until_kswapd_idle(nommu)
    # 13 priorities x 10 pages scanned = 130 < 6 * 100: still worth scanning.
    assert normal.pages_scanned == 130
    assert not normal.all_unreclaimable
    # Another round reaches 260 ... until 600 is passed.
    normal.lru_pages = 20
    nommu.wakeup_kswapd(normal, 0)
    await until_kswapd_idle(nommu)
    assert normal.pages_scanned >= 120
    assert normal.all_unreclaimable


async def test_direct_reclaim_asks_an_all_unreclaimable_zone_only_at_def_priority(
    nommu: ZoneAllocator,
) -> None:
    normal = nommu.machine.zones[(0, "Normal")]
    await take(nommu, g.GFP_KERNEL, 5000)  # down to min
    await until_kswapd_idle(nommu)
    assert normal.all_unreclaimable
    recorder = Recorder(nommu)
    nommu.register_reclaimer("recorder", recorder)
    with pytest.raises(OutOfMemory):
        await nommu.alloc_pages(g.GFP_KERNEL | g.NOWARN, 0, 1, 0)
    direct = [priority for priority, kswapd in recorder.calls if not kswapd]
    assert direct == [DEF_PRIORITY]


async def test_nofail_retries_until_its_deadline(nommu: ZoneAllocator) -> None:
    await take(nommu, g.GFP_KERNEL, 5000)
    start = time.monotonic()
    with pytest.raises(OutOfMemory):
        await nommu.alloc_pages(g.GFP_KERNEL | g.NOWARN, 0, 1, 0, deadline_s=0.3)
    plain = time.monotonic() - start
    assert plain < 0.1  # GFP_KERNEL with nothing to reclaim fails at once
    start = time.monotonic()
    with pytest.raises(OutOfMemory):
        await nommu.alloc_pages(g.GFP_KERNEL | g.NOFAIL | g.NOWARN, 0, 1, 0, deadline_s=0.3)
    assert 0.29 <= time.monotonic() - start < 2.0


async def test_nofail_succeeds_once_reclaim_brings_pages_back(nommu: ZoneAllocator) -> None:
    recorder = Recorder(nommu)
    nommu.register_reclaimer("recorder", recorder)
    recorder.pages = await take(nommu, g.GFP_KERNEL, 5000)
    loop = asyncio.get_running_loop()
    recorder.release_at = loop.time() + 0.15
    start = loop.time()
    got = await nommu.alloc_pages(g.GFP_KERNEL | g.NOFAIL, 0, 1, 0, deadline_s=2.0)
    assert len(got[0].pfns) == 1
    assert loop.time() - start >= 0.15
    assert nommu.machine.events.counts["allocstall"] > 1  # it went round more than once
