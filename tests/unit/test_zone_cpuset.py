"""cpusets in the zone allocator (2.6.24's __alloc_pages with ALLOC_CPUSET and
cpuset_zone_allowed_softwall/_hardwall): a process held to some nodes gets
user pages only there, reclaims only there, and an OOM there is constrained
to them. On the `numa` profile with 64 MiB: node 0 has DMA (1992 managed
pages) and DMA32 (4040), node 1 DMA32 (8080); CPUs 0, 1 are node 0's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from memsim.services.buddy.local import LocalBuddy
from memsim.services.zone import gfp as g
from memsim.services.zone.allocator import ZoneAllocator
from memsim.services.zone.errors import InvalidRequest, OutOfMemory
from memsim.services.zone.machine import Zone
from memsim.services.zone.ports import CONSTRAINT_CPUSET, CONSTRAINT_NONE
from tests.unit.zone_fakes import (
    DEADLINE_S,
    RecordingOom,
    ZoneRecorder,
    booted,
    free_by_zone,
    take_until_refused,
    zone_of,
)

PID = 7
NODE1 = (1, "DMA32")


@pytest_asyncio.fixture
async def numa() -> AsyncIterator[ZoneAllocator]:
    async with booted("numa", mem="64M") as allocator:
        yield allocator


async def take(
    allocator: ZoneAllocator,
    gfp_mask: int,
    count: int,
    nodes: tuple[int, ...],
    cpu: int = 0,
    extra: int = 0,
) -> list[int]:
    got = await allocator.alloc_pages(
        gfp_mask, 0, count, cpu, deadline_s=DEADLINE_S, extra=extra, pid=PID, nodes=nodes
    )
    return [pfn for a in got for pfn in a.pfns]


async def fill(
    allocator: ZoneAllocator, gfp_mask: int, nodes: tuple[int, ...], cpu: int = 0
) -> list[int]:
    return await take_until_refused(lambda: take(allocator, gfp_mask, 256, nodes, cpu))


async def test_a_process_held_to_node_1_gets_user_pages_only_there(
    numa: ZoneAllocator,
) -> None:
    node1 = numa.machine.zones[NODE1]
    # From a CPU of node 0, whose zonelist starts with node 0's zones: one
    # page, a bulk (the fast path), a bulk with extra pages (a pcp refill).
    for count, extra in ((1, 0), (40, 0), (8, 31)):
        pages = await take(numa, g.GFP_HIGHUSER_MOVABLE, count, (1,), extra=extra)
        assert len(pages) >= count
        assert all(node1.start_pfn <= pfn < node1.end_pfn for pfn in pages)
    # And one held to node 0 from a CPU of node 1 gets node 0's pages.
    pages = await take(numa, g.GFP_HIGHUSER_MOVABLE, 50, (0,), cpu=2)
    assert {zone_of(numa, pfn)[0] for pfn in pages} == {0}
    # A kernel allocation's first pass is hardwall too.
    pages = await take(numa, g.GFP_KERNEL, 10, (1,))
    assert {zone_of(numa, pfn) for pfn in pages} == {NODE1}


async def test_a_full_cpuset_does_not_spill_user_pages_and_its_oom_is_constrained(
    numa: ZoneAllocator,
) -> None:
    pages = await fill(numa, g.GFP_HIGHUSER_MOVABLE, (1,))
    assert {zone_of(numa, pfn) for pfn in pages} == {NODE1}
    assert len(pages) > 7800  # node 1's 8080 less its watermark
    node0_free = {k: v for k, v in free_by_zone(numa).items() if k[0] == 0}
    assert all(v > 1900 for v in node0_free.values())  # untouched
    oom = RecordingOom()
    numa.oom = oom
    with pytest.raises(OutOfMemory):
        await take(numa, g.GFP_HIGHUSER_MOVABLE, 1, (1,))
    # constrained_alloc: CONSTRAINT_CPUSET, the killer told of node 1.
    assert oom.calls == [(g.GFP_HIGHUSER_MOVABLE, 0, PID, (1,), CONSTRAINT_CPUSET)]
    assert {k: v for k, v in free_by_zone(numa).items() if k[0] == 0} == node0_free
    # A process allowed every node (empty, or both listed) is served from node 0,
    # and when it runs out its OOM is unconstrained.
    assert {zone_of(numa, p)[0] for p in await take(numa, g.GFP_HIGHUSER_MOVABLE, 5, ())} == {0}
    assert {zone_of(numa, p)[0] for p in await take(numa, g.GFP_HIGHUSER_MOVABLE, 5, (0, 1))} == {0}
    await fill(numa, g.GFP_HIGHUSER_MOVABLE, (0, 1))
    assert oom.calls[-1] == (g.GFP_HIGHUSER_MOVABLE, 0, PID, (), CONSTRAINT_NONE)


async def test_kernel_allocations_are_softwall_they_may_leave_the_cpuset(
    numa: ZoneAllocator,
) -> None:
    """cpuset_zone_allowed_softwall: without __GFP_HARDWALL a request below
    the first pass may use the nearest mem_exclusive ancestor's nodes (the top
    cpuset: all), and its OOM is not a cpuset's."""
    await fill(numa, g.GFP_HIGHUSER_MOVABLE, (1,))
    before = free_by_zone(numa)
    pages = await take(numa, g.GFP_KERNEL, 20, (1,))
    assert {zone_of(numa, pfn)[0] for pfn in pages} == {0}
    assert free_by_zone(numa)[(0, "DMA32")] < before[(0, "DMA32")]
    oom = RecordingOom()
    numa.oom = oom
    await fill(numa, g.GFP_KERNEL, (1,))
    assert oom.calls
    assert all(nodes == () for _, _, _, nodes, _ in oom.calls)


async def test_direct_reclaim_and_kswapd_stay_in_the_cpuset(numa: ZoneAllocator) -> None:
    recorder = ZoneRecorder()
    numa.register_reclaimer("recorder", recorder)
    await fill(numa, g.GFP_HIGHUSER_MOVABLE, (1,))
    direct = [(node, zone) for node, zone, kswapd in recorder.asked if not kswapd]
    assert direct
    assert set(direct) == {NODE1}
    for _ in range(400):  # until node 1's kswapd, woken by the fill, is done
        if numa.kswapd_sleeping(1):
            break
        await asyncio.sleep(0.005)
    assert numa.kswapd_runs >= 1
    assert {(node, zone) for node, zone, kswapd in recorder.asked if kswapd} == {NODE1}


async def test_this_node_is_allowed_whatever_the_cpuset(numa: ZoneAllocator) -> None:
    # __GFP_THISNODE passes cpuset_zone_allowed: node 0 for a CPU of node 0.
    pages = await take(numa, g.GFP_KERNEL | g.THISNODE, 3, (1,))
    assert {zone_of(numa, pfn)[0] for pfn in pages} == {0}


@pytest.mark.parametrize("nodes", [(2,), (0, 2), (-1,), (1, 5)])
async def test_a_node_the_machine_lacks_is_invalid_and_changes_nothing(
    numa: ZoneAllocator, nodes: tuple[int, ...]
) -> None:
    buddy = numa.buddy
    assert isinstance(buddy, LocalBuddy)
    before: Any = (free_by_zone(numa), buddy.calls, dict(numa.machine.events.counts))
    with pytest.raises(InvalidRequest, match=r"outside 0\.\.1"):
        await take(numa, g.GFP_HIGHUSER_MOVABLE, 1, nodes)
    assert (free_by_zone(numa), buddy.calls, dict(numa.machine.events.counts)) == before


async def test_a_single_node_machine_treats_node_0_as_every_node() -> None:
    async with booted("nommu") as allocator:
        got = await allocator.alloc_pages(g.GFP_KERNEL, 0, 1, 0, nodes=(0,))
        zone: Zone = got[0].zone
        assert zone.key == (0, "Normal")
        with pytest.raises(InvalidRequest):
            await allocator.alloc_pages(g.GFP_KERNEL, 0, 1, 0, nodes=(1,))
