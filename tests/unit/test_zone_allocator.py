"""The zone allocator over an in-process buddy: GFP rules, watermarks,
lowmem_reserve, pcp accounting, bad requests, kswapd and NUMA counters."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio

from memsim.profiles.loader import load_profile
from memsim.services.buddy.local import LocalBuddy
from memsim.services.zone import gfp as g
from memsim.services.zone.allocator import ZoneAllocator
from memsim.services.zone.errors import BadFree, InvalidRequest, OutOfMemory
from memsim.services.zone.machine import Machine, Zone
from memsim.services.zone.ports import ShrinkResult

Booted = tuple[ZoneAllocator, LocalBuddy]


async def _boot(profile: str) -> Booted:
    buddy = LocalBuddy()
    allocator = ZoneAllocator(Machine(load_profile(profile)), buddy)
    await allocator.boot()
    return allocator, buddy


@pytest_asyncio.fixture
async def x86() -> AsyncIterator[Booted]:
    allocator, buddy = await _boot("x86_32")
    try:
        yield allocator, buddy
    finally:
        await allocator.stop()


@pytest_asyncio.fixture
async def nommu() -> AsyncIterator[Booted]:
    allocator, buddy = await _boot("nommu")
    try:
        yield allocator, buddy
    finally:
        await allocator.stop()


def zone(allocator: ZoneAllocator, name: str, node: int = 0) -> Zone:
    return allocator.machine.zones[(node, name)]


async def alloc_pfns(
    allocator: ZoneAllocator, gfp_mask: int, order: int = 0, count: int = 1, cpu: int = 0
) -> list[tuple[Zone, int]]:
    got = await allocator.alloc_pages(gfp_mask, order, count, cpu)
    return [(a.zone, pfn) for a in got for pfn in a.pfns]


async def alloc_until_oom(
    allocator: ZoneAllocator, gfp_mask: int, order: int = 0
) -> list[tuple[Zone, int]]:
    out: list[tuple[Zone, int]] = []
    while True:
        try:
            out += await alloc_pfns(allocator, gfp_mask, order, 1 << 16)
        except OutOfMemory:
            return out


def snapshot(allocator: ZoneAllocator, buddy: LocalBuddy) -> Any:
    return (
        buddy.calls,
        dict(allocator.machine.events.counts),
        list(allocator.failures),
        [
            (z.free_pages, dict(z.handed_out), [(list(h.pages), list(c.pages)) for h, c in z.pcp])
            for z in allocator.machine.zones.values()
        ],
    )


def assert_accounted(allocator: ZoneAllocator, buddy: LocalBuddy) -> None:
    for z in allocator.machine.zones.values():
        if not z.managed:
            continue
        assert buddy.allocator.arena(z.node, z.name).free_pages == z.free_pages, z.key
        assert z.free_pages + z.pcp_pages + z.handed_out_pages == z.managed, z.key


# -- GFP rules --------------------------------------------------------------------


async def test_gfp_kernel_lands_in_normal_never_highmem(x86: Booted) -> None:
    allocator, _ = x86
    machine = allocator.machine
    highest = g.gfp_zone(g.GFP_KERNEL, machine.zone_types)
    assert "HighMem" not in [z.name for z in machine.zonelist(0, highest)]
    got = await alloc_pfns(allocator, g.GFP_KERNEL, count=100)
    assert {z.name for z, _ in got} == {"Normal"}
    normal = zone(allocator, "Normal")
    assert all(normal.start_pfn <= pfn < normal.end_pfn for _, pfn in got)
    assert machine.events.counts["pgalloc_normal"] == 100
    assert machine.events.counts["pgalloc_high"] == 0


async def test_gfp_highuser_movable_prefers_highmem(x86: Booted) -> None:
    allocator, _ = x86
    got = await alloc_pfns(allocator, g.GFP_HIGHUSER_MOVABLE, count=50)
    assert {z.name for z, _ in got} == {"HighMem"}
    assert allocator.machine.events.counts["pgalloc_high"] == 50


async def test_gfp_dma_never_leaves_dma(x86: Booted) -> None:
    allocator, buddy = x86
    normal = zone(allocator, "Normal")
    dma = zone(allocator, "DMA")
    got = await alloc_until_oom(allocator, g.GFP_DMA)
    assert len(got) > 2900
    assert all(z is dma and dma.start_pfn <= pfn < dma.end_pfn for z, pfn in got)
    assert normal.free_pages == normal.managed
    assert normal.handed_out == {}
    # GFP_DMA cannot wait: ALLOC_WMARK_MIN|ALLOC_HARDER, 17 - 17 // 4 = 13
    assert dma.free_pages == 13
    assert_accounted(allocator, buddy)


async def test_lowmem_reserve_protects_dma_from_normal_fallbacks(x86: Booted) -> None:
    allocator, buddy = x86
    dma = zone(allocator, "DMA")
    got = await alloc_until_oom(allocator, g.GFP_KERNEL, order=10)
    got += await alloc_until_oom(allocator, g.GFP_KERNEL)
    assert {z.name for z, _ in got} == {"Normal", "DMA"}  # the fallback did happen
    # classzone Normal: DMA serves only while free - 1 + 1 > min 17 + reserve 873
    assert dma.free_pages == 17 + 873
    assert zone(allocator, "HighMem").handed_out == {}
    assert_accounted(allocator, buddy)
    # GFP_DMA's classzone is DMA itself: no reserve, it still gets pages
    (z, _pfn), *_ = await alloc_pfns(allocator, g.GFP_DMA)
    assert z is dma


async def test_gfp_atomic_may_go_below_min(nommu: Booted) -> None:
    allocator, buddy = nommu
    normal = zone(allocator, "Normal")
    await alloc_until_oom(allocator, g.GFP_KERNEL)
    # GFP_KERNEL stops at min: free must be > 90
    assert normal.free_pages == 90
    atomic = await alloc_until_oom(allocator, g.GFP_ATOMIC)
    # ALLOC_HIGH: 90 - 45 = 45; ALLOC_HARDER: 45 - 45 // 4 = 34
    assert len(atomic) == 90 - 34
    assert normal.free_pages == 34 < normal.marks.min
    assert_accounted(allocator, buddy)


@pytest.mark.parametrize(
    ("gfp_mask", "order", "count", "cpu"),
    [
        (g.GFP_DMA | 0x02, 0, 1, 0),  # __GFP_DMA|__GFP_HIGHMEM
        (g.GFP_KERNEL | (1 << 21), 0, 1, 0),  # above __GFP_BITS_MASK
        (g.GFP_KERNEL | g.NOFAIL | g.NORETRY, 0, 1, 0),
        (g.GFP_KERNEL | 0x80000 | 0x100000, 0, 1, 0),  # RECLAIMABLE|MOVABLE
        (-1, 0, 1, 0),
        (g.GFP_KERNEL, -1, 1, 0),
        (g.GFP_KERNEL, 11, 1, 0),  # max_order
        (g.GFP_KERNEL, 0, 0, 0),
        (g.GFP_KERNEL, 0, (1 << 16) + 1, 0),
        (g.GFP_KERNEL, 0, 1, 2),  # 2 CPUs
        (g.GFP_KERNEL, 0, 1, -1),
    ],
)
async def test_bad_alloc_requests_change_nothing(
    x86: Booted, gfp_mask: int, order: int, count: int, cpu: int
) -> None:
    allocator, buddy = x86
    await alloc_pfns(allocator, g.GFP_KERNEL, count=3)
    before = snapshot(allocator, buddy)
    with pytest.raises(InvalidRequest):
        await allocator.alloc_pages(gfp_mask, order, count, cpu)
    assert snapshot(allocator, buddy) == before


async def test_bad_frees_change_nothing(x86: Booted) -> None:
    allocator, buddy = x86
    got = await alloc_pfns(allocator, g.GFP_KERNEL, count=3)
    (big,) = await alloc_pfns(allocator, g.GFP_KERNEL, order=2)
    pfn = got[0][1]
    await allocator.free_pages([(got[2][1], 0)], cpu=0)
    normal = zone(allocator, "Normal")
    never = next(p for p in range(normal.end_pfn - 1, 0, -1) if p not in normal.handed_out)
    before = snapshot(allocator, buddy)
    cases: list[tuple[type[Exception], list[tuple[int, int]], int]] = [
        (BadFree, [(never, 0)], 0),  # never handed out
        (BadFree, [(got[2][1], 0)], 0),  # already freed
        (BadFree, [(pfn, 0), (pfn, 0)], 0),  # double free in one batch
        (BadFree, [(got[1][1], 0), (pfn, 1)], 0),  # wrong order
        (BadFree, [(big[1], 0)], 0),  # an order-2 block freed as order 0
        (BadFree, [(0, 0)], 0),  # DMA's boot reservation, below the arena
        (InvalidRequest, [(1 << 40, 0)], 0),  # in no zone
        (InvalidRequest, [], 0),
        (InvalidRequest, [(pfn, 0)], 5),  # bad CPU
    ]
    for error, blocks, cpu in cases:
        with pytest.raises(error):
            await allocator.free_pages(blocks, cpu=cpu)
        assert snapshot(allocator, buddy) == before, blocks
    assert await allocator.free_pages([(pfn, 0), (got[1][1], 0), (big[1], 2)], cpu=1) == 6
    assert_accounted(allocator, buddy)


async def test_nowarn_suppresses_the_failure_message(nommu: Booted) -> None:
    allocator, _ = nommu
    await alloc_until_oom(allocator, g.GFP_KERNEL)
    allocator.failures.clear()
    with pytest.raises(OutOfMemory):
        await allocator.alloc_pages(g.GFP_KERNEL, 0, 1, 0)
    assert allocator.failures == ["memsim: page allocation failure. order:0, mode:0xd0"]
    with pytest.raises(OutOfMemory):
        await allocator.alloc_pages(g.GFP_KERNEL | g.NOWARN, 0, 1, 0)
    assert len(allocator.failures) == 1
    with pytest.raises(OutOfMemory, match="page allocation failure"):
        await allocator.alloc_pages(g.GFP_KERNEL, 3, 1, 0)
    assert allocator.failures[-1] == "memsim: page allocation failure. order:3, mode:0xd0"


async def test_bulk_returns_what_there_is(nommu: Booted) -> None:
    allocator, _ = nommu
    got = await alloc_pfns(allocator, g.GFP_KERNEL, count=5000)
    # 1776 managed, GFP_KERNEL stops when free reaches min 90
    assert len(got) == 1776 - 90


async def test_extra_pages_come_only_while_the_zone_stays_above_low(nommu: Booted) -> None:
    """A caller's list refill (extra) never reclaims, never wakes kswapd and
    never takes a zone below its low watermark; the count itself still can."""
    allocator, buddy = nommu
    normal = zone(allocator, "Normal")
    assert len(await alloc_pfns(allocator, g.GFP_KERNEL, count=1)) == 1
    got = await allocator.alloc_pages(g.GFP_KERNEL, 0, 2, 0, extra=30)
    assert sum(len(a.pfns) for a in got) == 32  # plenty free: all of it
    # Down to just above low + 2: the count is served, the extra is not.
    spare = normal.free_pages - normal.marks.low - 3
    await alloc_pfns(allocator, g.GFP_KERNEL, count=spare)
    got = await allocator.alloc_pages(g.GFP_KERNEL, 0, 2, 0, extra=30)
    assert sum(len(a.pfns) for a in got) == 2
    assert normal.free_pages > normal.marks.low
    assert allocator.machine.events.counts["allocstall"] == 0
    assert allocator.kswapd_sleeping(0)
    assert_accounted(allocator, buddy)


@pytest.mark.parametrize(("order", "count", "extra"), [(0, 1, -1), (1, 1, 1), (0, 1, 1 << 16)])
async def test_bad_extra_changes_nothing(x86: Booted, order: int, count: int, extra: int) -> None:
    allocator, buddy = x86
    before = snapshot(allocator, buddy)
    with pytest.raises(InvalidRequest, match="extra"):
        await allocator.alloc_pages(g.GFP_KERNEL, order, count, 0, extra=extra)
    assert snapshot(allocator, buddy) == before


# -- pcp accounting ----------------------------------------------------------------


async def test_pcp_accounting_over_a_mix(x86: Booted) -> None:
    allocator, buddy = x86
    held: list[tuple[int, int]] = []
    flags = [g.GFP_KERNEL, g.GFP_HIGHUSER_MOVABLE, g.GFP_KERNEL | g.COLD, g.GFP_DMA]
    for step in range(300):
        cpu = step % 2
        order = 0 if step % 5 else step % 4
        got = await allocator.alloc_pages(flags[step % 4], order, 1 + step % 7, cpu)
        held += [(pfn, a.order) for a in got for pfn in a.pfns]
        if step % 3 == 0 and len(held) > 1:
            give, held = held[: len(held) // 2], held[len(held) // 2 :]
            await allocator.free_pages(give, cpu=1 - cpu, cold=step % 2 == 0)
        assert_accounted(allocator, buddy)
    assert any(z.pcp_pages for z in allocator.machine.zones.values())
    assert all(
        hot.count < hot.high or hot.high == 0
        for z in allocator.machine.zones.values()
        for hot, _ in z.pcp
    )
    await allocator.free_pages(held, cpu=0)
    await allocator.drain_all_pages()
    assert_accounted(allocator, buddy)
    for z in allocator.machine.zones.values():
        assert (z.free_pages, z.pcp_pages, z.handed_out) == (z.managed, 0, {})


async def test_pcp_refills_and_drains_in_batches(x86: Booted) -> None:
    allocator, buddy = x86
    normal = zone(allocator, "Normal")
    batch = normal.pcp[0][0].batch
    assert batch == 31
    start = buddy.calls
    pairs = 10_000
    for _ in range(pairs):
        # allocate on CPU 0, free on CPU 1: CPU 0 refills, CPU 1 drains
        (a,) = await allocator.alloc_pages(g.GFP_KERNEL, 0, 1, 0)
        await allocator.free_pages([(a.pfns[0], 0)], cpu=1)
    calls = buddy.calls - start
    assert calls <= 2 * pairs // batch + 2
    assert normal.pcp[1][0].count < normal.pcp[1][0].high
    assert_accounted(allocator, buddy)


# -- kswapd ---------------------------------------------------------------------------


class Holder:
    """A reclaimer that owns pages and gives them back when asked."""

    def __init__(self, allocator: ZoneAllocator) -> None:
        self.allocator = allocator
        self.pages: list[int] = []
        self.asked: list[tuple[str, int, bool]] = []

    async def drain_cache(self) -> int:
        return 0  # no lists of its own

    async def shrink_zone(
        self, node: int, zone: str, nr_to_reclaim: int, gfp_mask: int, priority: int, kswapd: bool
    ) -> ShrinkResult:
        self.asked.append((zone, nr_to_reclaim, kswapd))
        give = self.pages[:nr_to_reclaim]
        del self.pages[:nr_to_reclaim]
        if give:
            await self.allocator.free_pages([(p, 0) for p in give], cpu=0)
        return ShrinkResult(2 * len(give), len(give))


async def wait_for(check: Callable[[], bool], seconds: float = 2.0) -> None:
    for _ in range(int(seconds / 0.005)):
        if check():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached in time")


async def test_kswapd_reclaims_to_the_high_watermark(nommu: Booted) -> None:
    allocator, buddy = nommu
    normal = zone(allocator, "Normal")
    holder = Holder(allocator)
    assert allocator.register_reclaimer("holder", holder) == 1
    while normal.free_pages > normal.marks.low:
        holder.pages += [pfn for _, pfn in await alloc_pfns(allocator, g.GFP_KERNEL)]
    assert allocator.kswapd_wakeups == 0
    before = dict(allocator.machine.events.counts)
    holder.pages += [pfn for _, pfn in await alloc_pfns(allocator, g.GFP_KERNEL)]
    assert allocator.kswapd_wakeups == 1
    await wait_for(lambda: allocator.kswapd_runs >= 1 and normal.free_pages > normal.marks.high)
    await asyncio.sleep(0.01)
    # 111 free, one pass of SWAP_CLUSTER_MAX = 32 pages makes 143 > high 135
    assert normal.marks.high < normal.free_pages <= normal.marks.high + 32
    assert holder.pages  # stopped at high, did not take everything
    assert all(kswapd for _, _, kswapd in holder.asked)
    counts = allocator.machine.events.counts
    reclaimed = counts["pgsteal_normal"] - before["pgsteal_normal"]
    assert reclaimed == 32
    assert counts["kswapd_steal"] - before["kswapd_steal"] == reclaimed
    assert counts["pgscan_kswapd_normal"] - before["pgscan_kswapd_normal"] == 2 * reclaimed
    assert counts["pageoutrun"] > before["pageoutrun"]
    assert counts["pgscan_direct_normal"] == 0
    assert_accounted(allocator, buddy)
    assert allocator.unregister_reclaimer("holder") == 0


async def test_direct_reclaim_lets_gfp_kernel_succeed(nommu: Booted) -> None:
    allocator, buddy = nommu
    holder = Holder(allocator)
    allocator.register_reclaimer("holder", holder)
    holder.pages += [pfn for _, pfn in await alloc_pfns(allocator, g.GFP_KERNEL, count=5000)]
    # at min: the next GFP_KERNEL allocation reclaims directly
    got = await alloc_pfns(allocator, g.GFP_KERNEL)
    assert len(got) == 1
    counts = allocator.machine.events.counts
    assert counts["allocstall"] >= 1
    assert counts["pgscan_direct_normal"] > 0
    assert_accounted(allocator, buddy)


# -- NUMA ------------------------------------------------------------------------------


async def test_numa_allocations_are_local_hits() -> None:
    allocator, buddy = await _boot("numa")
    try:
        # CPUs 0, 1 on node 0; 2, 3 on node 1
        (on1,) = await allocator.alloc_pages(g.GFP_KERNEL, 0, 5, 2)
        assert on1.zone.key == (1, "Normal")
        (on0,) = await allocator.alloc_pages(g.GFP_KERNEL, 0, 3, 1)
        assert on0.zone.key == (0, "DMA32")
        n1 = zone(allocator, "Normal", 1).numa_stats
        n0 = zone(allocator, "DMA32", 0).numa_stats
        assert (n1["numa_hit"], n1["numa_local"], n1["numa_miss"]) == (5, 5, 0)
        assert (n0["numa_hit"], n0["numa_local"], n0["numa_miss"]) == (3, 3, 0)
        (this,) = await allocator.alloc_pages(g.GFP_KERNEL | g.THISNODE, 0, 1, 3)
        assert this.zone.key == (1, "Normal")
        assert_accounted(allocator, buddy)
    finally:
        await allocator.stop()
