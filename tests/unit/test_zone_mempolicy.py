"""MPOL_BIND in the zone allocator (2.6.24's alloc_pages_current,
zonelist_policy and bind_zonelist of mm/mempolicy.c, constrained_alloc of
mm/oom_kill.c): a process bound to some nodes gets its pages only there,
user and kernel alike, reclaims only there, and when they run out the OOM
killer hears CONSTRAINT_MEMORY_POLICY with the nodemask; with a cpuset too,
the cpuset's check comes first. On the `numa` profile with 64 MiB: node 0
has DMA (1992 managed pages) and DMA32 (4040), node 1 DMA32 (8080); CPUs 0,
1 are node 0's, 2, 3 node 1's; policy_zone is DMA32."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from memsim.policy.v1 import policy_pb2 as policy_pb
from memsim.services.buddy.local import LocalBuddy
from memsim.services.zone import gfp as g
from memsim.services.zone.allocator import ZoneAllocator
from memsim.services.zone.cpuset import (
    MemsAllowed,
    bind_zonelist,
    constrained_alloc,
    memory_nodes,
    policy_zone,
)
from memsim.services.zone.errors import InvalidRequest, OutOfMemory
from memsim.services.zone.oom_client import PolicyOom
from memsim.services.zone.ports import (
    CONSTRAINT_CPUSET,
    CONSTRAINT_MEMORY_POLICY,
    CONSTRAINT_NONE,
    OomVerdict,
)
from tests.unit.zone_fakes import (
    DEADLINE_S,
    RecordingOom,
    ScriptedPolicy,
    ZoneRecorder,
    booted,
    free_by_zone,
    take_until_refused,
    zone_of,
)

PID = 7
NODE0_DMA, NODE0_DMA32, NODE1 = (0, "DMA"), (0, "DMA32"), (1, "DMA32")


@pytest_asyncio.fixture
async def numa() -> AsyncIterator[ZoneAllocator]:
    async with booted("numa", mem="64M") as allocator:
        yield allocator


async def take(
    allocator: ZoneAllocator,
    gfp_mask: int,
    count: int,
    bind: tuple[int, ...],
    nodes: tuple[int, ...] = (),
    cpu: int = 0,
    extra: int = 0,
) -> list[int]:
    got = await allocator.alloc_pages(
        gfp_mask,
        0,
        count,
        cpu,
        deadline_s=DEADLINE_S,
        extra=extra,
        pid=PID,
        nodes=nodes,
        mempolicy_nodes=bind,
    )
    return [pfn for a in got for pfn in a.pfns]


async def fill(
    allocator: ZoneAllocator, gfp_mask: int, bind: tuple[int, ...], nodes: tuple[int, ...] = ()
) -> list[int]:
    return await take_until_refused(lambda: take(allocator, gfp_mask, 256, bind, nodes))


def node0_free(allocator: ZoneAllocator) -> dict[tuple[int, str], int]:
    return {k: v for k, v in free_by_zone(allocator).items() if k[0] == 0}


def test_bind_zonelist_and_policy_zone_as_2_6_24_builds_them(numa: ZoneAllocator) -> None:
    machine = numa.machine
    assert policy_zone(machine) == machine.zone_types.index("DMA32")
    assert memory_nodes(machine) == {0, 1}
    # The highest zone type of every node in node order, then the next lower:
    # not the local node first, as a default zonelist is.
    keys = [z.key for z in bind_zonelist(machine, {1, 0}, "Movable")]
    assert keys == [NODE0_DMA32, NODE1, NODE0_DMA]
    assert [z.key for z in bind_zonelist(machine, {1}, "Normal")] == [NODE1]
    # Zones above the request's highest are filtered out.
    assert [z.key for z in bind_zonelist(machine, {0, 1}, "DMA")] == [NODE0_DMA]


async def test_a_process_bound_to_node_1_gets_pages_only_there(numa: ZoneAllocator) -> None:
    # From a CPU of node 0, whose default zonelist starts with node 0's
    # zones: one page, a bulk (the fast path), a bulk with extra pages.
    for count, extra in ((1, 0), (40, 0), (8, 31)):
        pages = await take(numa, g.GFP_HIGHUSER_MOVABLE, count, (1,), extra=extra)
        assert len(pages) >= count
        assert {zone_of(numa, pfn) for pfn in pages} == {NODE1}
    # Kernel allocations too: alloc_pages_current applies the task's policy
    # to GFP_KERNEL (Normal is not below policy_zone), page tables included.
    assert {zone_of(numa, p) for p in await take(numa, g.GFP_KERNEL, 10, (1,))} == {NODE1}
    assert {zone_of(numa, p) for p in await take(numa, g.GFP_DMA32, 3, (1,))} == {NODE1}
    # Bound to node 0 from a CPU of node 1: node 0's pages.
    pages = await take(numa, g.GFP_HIGHUSER_MOVABLE, 50, (0,), cpu=2)
    assert {zone_of(numa, pfn)[0] for pfn in pages} == {0}
    # Bound to both, from a CPU of node 1: bind_zonelist's order, node 0's
    # DMA32 first (2.6.24's MPOL_BIND ignores locality).
    pages = await take(numa, g.GFP_HIGHUSER_MOVABLE, 20, (0, 1), cpu=2)
    assert {zone_of(numa, pfn) for pfn in pages} == {NODE0_DMA32}


async def test_lower_zones_and_thisnode_get_no_policy(numa: ZoneAllocator) -> None:
    # GFP_DMA is below policy_zone: "Lower zones don't get a policy applied".
    assert {zone_of(numa, p) for p in await take(numa, g.GFP_DMA, 3, (1,))} == {NODE0_DMA}
    # __GFP_THISNODE: the default policy, the CPU's node.
    pages = await take(numa, g.GFP_KERNEL | g.THISNODE, 3, (1,))
    assert {zone_of(numa, pfn)[0] for pfn in pages} == {0}


async def test_a_full_binding_does_not_spill_and_its_oom_is_a_mempolicy_one(
    numa: ZoneAllocator,
) -> None:
    before = node0_free(numa)
    pages = await fill(numa, g.GFP_HIGHUSER_MOVABLE, (1,))
    assert {zone_of(numa, pfn) for pfn in pages} == {NODE1}
    assert len(pages) > 7800  # node 1's 8080 less its watermark
    assert node0_free(numa) == before
    oom = RecordingOom()
    numa.oom = oom
    with pytest.raises(OutOfMemory):
        await take(numa, g.GFP_HIGHUSER_MOVABLE, 1, (1,))
    # constrained_alloc: the zonelist leaves out node 0, which has memory.
    assert oom.calls == [(g.GFP_HIGHUSER_MOVABLE, 0, PID, (1,), CONSTRAINT_MEMORY_POLICY)]
    # Unlike a cpuset (softwall), a binding holds kernel allocations too.
    with pytest.raises(OutOfMemory):
        await take(numa, g.GFP_KERNEL, 1, (1,))
    assert oom.calls[-1] == (g.GFP_KERNEL, 0, PID, (1,), CONSTRAINT_MEMORY_POLICY)
    assert node0_free(numa) == before
    # A process with no policy is served from node 0 and its OOM, when the
    # whole machine is full, is unconstrained.
    assert {zone_of(numa, p)[0] for p in await take(numa, g.GFP_HIGHUSER_MOVABLE, 5, ())} == {0}
    await fill(numa, g.GFP_HIGHUSER_MOVABLE, ())
    assert oom.calls.pop() == (g.GFP_HIGHUSER_MOVABLE, 0, PID, (), CONSTRAINT_NONE)


async def test_a_binding_to_every_node_is_no_constraint(numa: ZoneAllocator) -> None:
    oom = RecordingOom()
    numa.oom = oom
    pages = await fill(numa, g.GFP_HIGHUSER_MOVABLE, (0, 1))
    assert {zone_of(numa, pfn)[0] for pfn in pages} == {0, 1}
    assert oom.calls
    assert {(call[3], call[4]) for call in oom.calls} == {((), CONSTRAINT_NONE)}


async def test_cpuset_and_mempolicy_intersect_and_the_cpuset_is_checked_first(
    numa: ZoneAllocator,
) -> None:
    oom = RecordingOom()
    numa.oom = oom
    # cpuset {1}, bound to {0, 1}: user pages only on node 1 (hardwall), and
    # the OOM is the cpuset's: the bind zonelist has node 0's zones, which
    # cpuset_zone_allowed_softwall refuses a __GFP_HARDWALL request.
    pages = await fill(numa, g.GFP_HIGHUSER_MOVABLE, (0, 1), nodes=(1,))
    assert {zone_of(numa, pfn) for pfn in pages} == {NODE1}
    assert oom.calls[-1] == (g.GFP_HIGHUSER_MOVABLE, 0, PID, (1,), CONSTRAINT_CPUSET)
    # cpuset {1}, bound to {1}: every zone of the zonelist passes the cpuset,
    # node 0 is left out: the mempolicy's.
    with pytest.raises(OutOfMemory):
        await take(numa, g.GFP_HIGHUSER_MOVABLE, 1, (1,), nodes=(1,))
    assert oom.calls[-1] == (g.GFP_HIGHUSER_MOVABLE, 0, PID, (1,), CONSTRAINT_MEMORY_POLICY)


async def test_a_binding_outside_the_cpuset_is_ignored(numa: ZoneAllocator) -> None:
    """cpuset_zonelist_valid_mems_allowed: no zone of the bind zonelist in
    the task's mems_allowed, the default zonelist is used (the cpuset then
    keeps the pages on its nodes)."""
    pages = await take(numa, g.GFP_HIGHUSER_MOVABLE, 30, (0,), nodes=(1,))
    assert {zone_of(numa, pfn) for pfn in pages} == {NODE1}


async def test_direct_reclaim_stays_on_the_bound_nodes(numa: ZoneAllocator) -> None:
    recorder = ZoneRecorder()
    numa.register_reclaimer("recorder", recorder)
    await fill(numa, g.GFP_HIGHUSER_MOVABLE, (1,))
    direct = {(node, zone) for node, zone, kswapd in recorder.asked if not kswapd}
    assert direct == {NODE1}
    for _ in range(400):  # until node 1's kswapd, woken by the fill, is done
        if numa.kswapd_sleeping(1):
            break
        await asyncio.sleep(0.005)
    assert {(node, zone) for node, zone, kswapd in recorder.asked if kswapd} == {NODE1}


@pytest.mark.parametrize("bind", [(2,), (0, 2), (-1,), (1, 5)])
async def test_a_bind_node_the_machine_lacks_is_invalid_and_changes_nothing(
    numa: ZoneAllocator, bind: tuple[int, ...]
) -> None:
    buddy = numa.buddy
    assert isinstance(buddy, LocalBuddy)
    before: Any = (free_by_zone(numa), buddy.calls, dict(numa.machine.events.counts))
    with pytest.raises(InvalidRequest, match=r"mempolicy nodes .* outside 0\.\.1"):
        await take(numa, g.GFP_HIGHUSER_MOVABLE, 1, bind)
    assert (free_by_zone(numa), buddy.calls, dict(numa.machine.events.counts)) == before


def test_constrained_alloc_follows_the_kernels_order(numa: ZoneAllocator) -> None:
    machine = numa.machine
    with_memory = memory_nodes(machine)
    default = machine.zonelist(0, "Movable")
    one = MemsAllowed.of((1,), 2)
    user, kernel = g.GFP_HIGHUSER_MOVABLE, g.GFP_KERNEL
    assert constrained_alloc(default, user, MemsAllowed.of((), 2), with_memory) == (
        CONSTRAINT_NONE,
        (),
    )
    assert constrained_alloc(default, user, one, with_memory) == (CONSTRAINT_CPUSET, (1,))
    # A kernel request passes the softwall check everywhere: no cpuset's.
    assert constrained_alloc(default, kernel, one, with_memory) == (CONSTRAINT_NONE, ())
    bound = bind_zonelist(machine, {1}, "Movable")
    assert constrained_alloc(bound, user, one, with_memory) == (CONSTRAINT_MEMORY_POLICY, (1,))
    # Any zonelist that leaves out a node with memory, as 2.6.24 reads it:
    # a __GFP_DMA one on this machine has node 0's DMA only.
    dma = machine.zonelist(1, "DMA")
    assert constrained_alloc(dma, g.GFP_DMA, MemsAllowed.of((), 2), with_memory) == (
        CONSTRAINT_MEMORY_POLICY,
        (0,),
    )


async def test_the_policy_client_carries_the_constraint_and_the_nodemask() -> None:
    policy = ScriptedPolicy()
    oom = PolicyOom(policy, nodes=2)
    assert await oom.out_of_memory(g.GFP_KERNEL, 0, 9, (1,), CONSTRAINT_MEMORY_POLICY) == (
        OomVerdict("killed", (9,))
    )
    await oom.out_of_memory(g.GFP_KERNEL, 0, 9, (1,), CONSTRAINT_CPUSET)
    await oom.out_of_memory(g.GFP_KERNEL, 0, 9, (), CONSTRAINT_NONE)
    # A caller that does not say: the cpuset's rule of old.
    await oom.out_of_memory(g.GFP_KERNEL, 0, 9, (1,))
    await oom.out_of_memory(g.GFP_KERNEL, 0, 9, (0, 1))
    assert policy.requests == [
        (g.GFP_KERNEL, 0, 9, policy_pb.CONSTRAINT_MEMORY_POLICY, (1,)),
        (g.GFP_KERNEL, 0, 9, policy_pb.CONSTRAINT_CPUSET, (1,)),
        (g.GFP_KERNEL, 0, 9, policy_pb.CONSTRAINT_NONE, ()),
        (g.GFP_KERNEL, 0, 9, policy_pb.CONSTRAINT_CPUSET, (1,)),
        (g.GFP_KERNEL, 0, 9, policy_pb.CONSTRAINT_NONE, ()),
    ]
