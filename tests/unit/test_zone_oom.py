"""The zone allocator and the OOM killer (2.6.24's __alloc_pages after
try_to_free_pages freed nothing): over an in-process buddy, with a fake
OomPort whose verdicts the test scripts and which, on a kill, frees the
victim's pages as its exit would. No reclaimer is registered, so reclaim
fails at once on a full machine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio

from memsim.policy.v1 import policy_pb2 as policy_pb
from memsim.services.buddy.local import LocalBuddy
from memsim.services.zone import gfp as g
from memsim.services.zone.allocator import ZoneAllocator
from memsim.services.zone.errors import Halted, KillerUnavailable, OutOfMemory
from memsim.services.zone.oom_client import PolicyOom
from memsim.services.zone.ports import CONSTRAINT_NONE, OomVerdict
from tests.unit.zone_fakes import (
    DEADLINE_S,
    RecordingOom,
    ScriptedPolicy,
    booted,
    take_until_refused,
)

VICTIM, CALLER, BYSTANDER = 10, 20, 30
PANIC = "Kernel panic - not syncing: Out of memory and no killable processes..."


class FakeOom(RecordingOom):
    """The policy service's OutOfMemory in process: answers the scripted
    verdicts in turn (then give_up), and a kill frees what the test said the
    victim holds, before the verdict comes back (the victim's exit)."""

    def __init__(self, allocator: ZoneAllocator, script: list[OomVerdict]) -> None:
        super().__init__()
        self.allocator = allocator
        self.script = list(script)
        self.holdings: dict[int, list[int]] = {}

    async def verdict(self) -> OomVerdict:
        verdict = self.script.pop(0) if self.script else OomVerdict("give_up")
        for victim in verdict.killed:
            pages = self.holdings.pop(victim, [])
            if pages:
                await self.allocator.free_pages([(pfn, 0) for pfn in pages], cpu=0)
        return verdict


@pytest_asyncio.fixture
async def nommu() -> AsyncIterator[ZoneAllocator]:
    # One Normal zone: 1776 managed pages, watermarks 90/112/135, pcp high 0.
    async with booted("nommu") as allocator:
        yield allocator


async def take(
    allocator: ZoneAllocator, gfp_mask: int, count: int = 1, pid: int = 0, order: int = 0
) -> list[int]:
    got = await allocator.alloc_pages(gfp_mask, order, count, 0, deadline_s=DEADLINE_S, pid=pid)
    return [pfn for a in got for pfn in a.pfns]


async def fill(allocator: ZoneAllocator, pid: int, gfp_mask: int = g.GFP_KERNEL) -> list[int]:
    """pid's pages, taken until the zone refuses (no killer yet)."""
    assert allocator.oom is None
    return await take_until_refused(lambda: take(allocator, gfp_mask, 64, pid))


def zone_state(allocator: ZoneAllocator) -> Any:
    """What a refused allocation must leave as it was."""
    return [
        (z.free_pages + z.pcp_pages, dict(z.handed_out)) for z in allocator.machine.zones.values()
    ]


async def full_with_killer(allocator: ZoneAllocator, script: list[OomVerdict]) -> FakeOom:
    """The victim holds nearly all memory; then the killer is plugged in."""
    oom = FakeOom(allocator, script)
    oom.holdings[VICTIM] = await fill(allocator, VICTIM)
    assert len(oom.holdings[VICTIM]) > 1500
    allocator.oom = oom
    return oom


async def test_killed_with_memory_freed_the_allocation_succeeds(nommu: ZoneAllocator) -> None:
    oom = await full_with_killer(nommu, [OomVerdict("killed", (VICTIM,))])
    normal = nommu.machine.zones[(0, "Normal")]
    before, failures = normal.free_pages, len(nommu.failures)
    pages = await take(nommu, g.GFP_KERNEL, pid=CALLER)
    assert len(pages) == 1
    assert oom.calls == [(g.GFP_KERNEL, 0, CALLER, (), CONSTRAINT_NONE)]
    assert nommu.oom_rounds == {"killed": 1}
    assert nommu.oom_killed == {VICTIM}
    assert normal.free_pages > before + 1500  # the victim's pages are back
    assert len(nommu.failures) == failures  # served: no failure warning


async def test_wait_then_killed_succeeds_after_two_rounds(nommu: ZoneAllocator) -> None:
    oom = await full_with_killer(nommu, [OomVerdict("wait"), OomVerdict("killed", (VICTIM,))])
    assert len(await take(nommu, g.GFP_HIGHUSER_MOVABLE, pid=CALLER)) == 1
    assert oom.calls == [(g.GFP_HIGHUSER_MOVABLE, 0, CALLER, (), CONSTRAINT_NONE)] * 2
    assert nommu.oom_rounds == {"wait": 1, "killed": 1}


async def test_each_round_that_frees_nothing_calls_the_killer_again(
    nommu: ZoneAllocator,
) -> None:
    # A kill whose memory does not come back (the victim holds nothing here):
    # the allocation goes round again and the next kill frees enough.
    oom = await full_with_killer(
        nommu, [OomVerdict("killed", (BYSTANDER,)), OomVerdict("killed", (VICTIM,))]
    )
    assert len(await take(nommu, g.GFP_KERNEL, pid=CALLER)) == 1
    assert [pid for _, _, pid, _, _ in oom.calls] == [CALLER, CALLER]
    assert nommu.oom_killed == {BYSTANDER, VICTIM}


async def test_after_a_kill_the_allocation_restarts_from_the_low_watermark(
    nommu: ZoneAllocator,
) -> None:
    """goto restart: a victim whose exit leaves the zone between min and high
    serves the allocation (the min pass); a second kill would be one too many."""
    oom = await full_with_killer(nommu, [OomVerdict("killed", (VICTIM,))])
    normal = nommu.machine.zones[(0, "Normal")]
    small = VICTIM + 1
    oom.holdings[small] = oom.holdings[VICTIM][:20]
    del oom.holdings[VICTIM][:20]
    oom.script = [OomVerdict("killed", (small,))]  # then give_up
    pages = await take(nommu, g.GFP_KERNEL, pid=CALLER)
    assert len(pages) == 1
    assert len(oom.calls) == 1
    assert nommu.oom_killed == {small}
    assert normal.marks.min < normal.free_pages < normal.marks.high


async def test_give_up_fails_and_allocates_nothing(nommu: ZoneAllocator) -> None:
    oom = await full_with_killer(nommu, [OomVerdict("give_up")])
    before = zone_state(nommu)
    with pytest.raises(OutOfMemory, match=r"page allocation failure\. order:0"):
        await take(nommu, g.GFP_KERNEL, pid=CALLER)
    assert zone_state(nommu) == before
    assert oom.calls == [(g.GFP_KERNEL, 0, CALLER, (), CONSTRAINT_NONE)]
    assert nommu.oom_rounds == {"give_up": 1}
    assert nommu.failures[-1] == "memsim: page allocation failure. order:0, mode:0xd0"


async def test_panic_halts(nommu: ZoneAllocator) -> None:
    oom = await full_with_killer(nommu, [OomVerdict("panic", message=PANIC)])
    before = zone_state(nommu)
    with pytest.raises(Halted) as info:
        await take(nommu, g.GFP_KERNEL, pid=CALLER)
    assert str(info.value) == PANIC
    assert zone_state(nommu) == before
    assert len(oom.calls) == 1
    assert nommu.oom_rounds == {"panic": 1}


async def test_a_panic_mid_bulk_gives_back_the_blocks_already_taken(
    nommu: ZoneAllocator,
) -> None:
    oom = await full_with_killer(nommu, [OomVerdict("panic", message=PANIC)])
    # A few pages back: the bulk's first blocks can be had, then the killer panics.
    freed = oom.holdings[VICTIM][:8]
    del oom.holdings[VICTIM][:8]
    await nommu.free_pages([(pfn, 0) for pfn in freed], cpu=0)
    before = zone_state(nommu)
    with pytest.raises(Halted):
        await take(nommu, g.GFP_KERNEL, 64, pid=CALLER)
    assert zone_state(nommu) == before
    assert len(oom.calls) == 1


class StuckOom(RecordingOom):
    """A killer that never answers (a policy service hung): the caller gives up."""

    def __init__(self) -> None:
        super().__init__()
        self.called = asyncio.Event()

    async def verdict(self) -> OomVerdict:
        self.called.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_a_bulk_cancelled_while_the_killer_runs_gives_its_blocks_back(
    nommu: ZoneAllocator,
) -> None:
    pages = await fill(nommu, VICTIM)
    await nommu.free_pages([(pfn, 0) for pfn in pages[:8]], cpu=0)
    stuck = StuckOom()
    nommu.oom = stuck
    before = zone_state(nommu)
    call = asyncio.create_task(take(nommu, g.GFP_KERNEL, 64, pid=CALLER))
    await asyncio.wait_for(stuck.called.wait(), DEADLINE_S)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert zone_state(nommu) == before


async def test_the_allocating_task_killed_fails_and_is_refused_from_then_on(
    nommu: ZoneAllocator,
) -> None:
    oom = await full_with_killer(nommu, [OomVerdict("killed", (CALLER,))])
    oom.holdings[CALLER] = oom.holdings.pop(VICTIM)  # the caller is the hog
    with pytest.raises(OutOfMemory, match=f"process {CALLER} was killed by the OOM killer"):
        await take(nommu, g.GFP_KERNEL, pid=CALLER)
    assert nommu.oom_killed == {CALLER}
    # Refused at once: no reclaim, no killer, no buddy call.
    buddy = nommu.buddy
    assert isinstance(buddy, LocalBuddy)
    calls, stalls = buddy.calls, nommu.machine.events.counts.get("allocstall", 0)
    for gfp_mask in (g.GFP_KERNEL, g.GFP_ATOMIC, g.GFP_HIGHUSER_MOVABLE):
        with pytest.raises(OutOfMemory, match="was killed by the OOM killer"):
            await take(nommu, gfp_mask, 3, pid=CALLER)
    assert (buddy.calls, nommu.machine.events.counts.get("allocstall", 0)) == (calls, stalls)
    assert len(oom.calls) == 1
    # Everyone else is served from the memory the kill gave back.
    assert len(await take(nommu, g.GFP_KERNEL, 10, pid=BYSTANDER)) == 10
    assert len(await take(nommu, g.GFP_KERNEL)) == 1


async def test_past_page_alloc_costly_order_the_killer_is_not_called(
    nommu: ZoneAllocator,
) -> None:
    oom = await full_with_killer(nommu, [OomVerdict("killed", (VICTIM,))])
    before = zone_state(nommu)
    with pytest.raises(OutOfMemory, match="order:4"):
        await take(nommu, g.GFP_KERNEL, pid=CALLER, order=g.PAGE_ALLOC_COSTLY_ORDER + 1)
    assert oom.calls == []
    assert zone_state(nommu) == before
    # PAGE_ALLOC_COSTLY_ORDER itself still is worth a kill.
    (pfn,) = await take(nommu, g.GFP_KERNEL, pid=CALLER, order=g.PAGE_ALLOC_COSTLY_ORDER)
    assert pfn % (1 << g.PAGE_ALLOC_COSTLY_ORDER) == 0
    assert oom.calls == [(g.GFP_KERNEL, g.PAGE_ALLOC_COSTLY_ORDER, CALLER, (), CONSTRAINT_NONE)]


@pytest.mark.parametrize(
    ("gfp_mask", "why"),
    [
        (g.GFP_ATOMIC, "no __GFP_WAIT: cannot reclaim, never kills"),
        (g.GFP_NOWAIT, "no __GFP_WAIT"),
        (g.GFP_KERNEL | g.NORETRY, "__GFP_NORETRY"),
        (g.GFP_NOFS, "no __GFP_FS: the killer is not called"),
    ],
)
async def test_allocations_that_may_not_kill_never_call_the_killer(
    nommu: ZoneAllocator, gfp_mask: int, why: str
) -> None:
    oom = await full_with_killer(nommu, [OomVerdict("killed", (VICTIM,))] * 4)

    # GFP_ATOMIC may dig below min, down to its own floor: take all it can.
    async def take_all() -> None:
        while True:
            await take(nommu, gfp_mask, pid=CALLER)

    with pytest.raises(OutOfMemory):
        await take_all()
    assert oom.calls == [], why
    assert nommu.oom_rounds == {}
    assert nommu.oom_killed == set()


async def test_without_an_oom_port_reclaim_failure_is_out_of_memory(
    nommu: ZoneAllocator,
) -> None:
    pages = await fill(nommu, VICTIM)
    before = zone_state(nommu)
    with pytest.raises(OutOfMemory, match=r"page allocation failure\. order:0, mode:0xd0"):
        await take(nommu, g.GFP_KERNEL, pid=CALLER)
    assert zone_state(nommu) == before
    assert (nommu.oom_rounds, nommu.oom_killed) == ({}, set())
    # No one is refused: the pages freed serve the same pid again.
    await nommu.free_pages([(pfn, 0) for pfn in pages[:50]], cpu=0)
    assert len(await take(nommu, g.GFP_KERNEL, 5, pid=CALLER)) == 5


# -- the policy client's answers ----------------------------------------------------------


def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details, None)


async def test_the_policy_client_maps_verdicts_and_the_cpuset_constraint() -> None:
    killed = policy_pb.OutOfMemoryResponse(
        decision=policy_pb.OOM_DECISION_KILLED, victim_pid=5, also_killed_pids=[6]
    )
    policy = ScriptedPolicy(killed)
    oom = PolicyOom(policy, nodes=2)
    assert await oom.out_of_memory(g.GFP_KERNEL, 0, 9, ()) == OomVerdict("killed", (5, 6), "")
    assert await oom.out_of_memory(g.GFP_HIGHUSER, 1, 9, (1,)) == OomVerdict("killed", (5, 6))
    assert await oom.out_of_memory(g.GFP_HIGHUSER, 1, 9, (0, 1)) == OomVerdict("killed", (5, 6))
    assert policy.requests == [
        (g.GFP_KERNEL, 0, 9, policy_pb.CONSTRAINT_NONE, ()),
        (g.GFP_HIGHUSER, 1, 9, policy_pb.CONSTRAINT_CPUSET, (1,)),
        (g.GFP_HIGHUSER, 1, 9, policy_pb.CONSTRAINT_NONE, ()),
    ]
    policy.answer = policy_pb.OutOfMemoryResponse(
        decision=policy_pb.OOM_DECISION_PANIC, message=PANIC
    )
    assert await oom.out_of_memory(g.GFP_KERNEL, 0, 0, ()) == OomVerdict("panic", (), PANIC)


async def test_a_policy_already_panicked_is_a_panic_and_one_away_is_unavailable(
    nommu: ZoneAllocator,
) -> None:
    await fill(nommu, VICTIM)
    policy = ScriptedPolicy(rpc_error(grpc.StatusCode.FAILED_PRECONDITION, PANIC))
    nommu.oom = PolicyOom(policy, nodes=1)
    before = zone_state(nommu)
    with pytest.raises(Halted) as halted:
        await take(nommu, g.GFP_KERNEL, 8, pid=CALLER)
    assert str(halted.value) == PANIC
    policy.answer = rpc_error(grpc.StatusCode.UNAVAILABLE, "failed to connect")
    with pytest.raises(KillerUnavailable, match="UNAVAILABLE: failed to connect"):
        await take(nommu, g.GFP_KERNEL, 8, pid=CALLER)
    assert zone_state(nommu) == before
    assert len(policy.requests) == 2
