"""What the zone allocator's unit tests share: a booted allocator over an
in-process buddy, ways to read where its pages are, and fakes of the ports it
calls (the OOM killer, a reclaimer, the policy service's client)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

import grpc

from memsim.policy.v1 import policy_pb2 as policy_pb
from memsim.profiles.loader import load_profile
from memsim.services.buddy.local import LocalBuddy
from memsim.services.policy.client import PolicyClient
from memsim.services.zone.allocator import ZoneAllocator
from memsim.services.zone.errors import OutOfMemory
from memsim.services.zone.machine import Machine
from memsim.services.zone.ports import Constraint, OomVerdict, ShrinkResult

DEADLINE_S = 2.0

# gfp_mask, order, pid, nodes and constraint of one call to the OOM killer.
OomCall = tuple[int, int, int, tuple[int, ...], Constraint | None]


@contextlib.asynccontextmanager
async def booted(profile: str, mem: str | None = None) -> AsyncIterator[ZoneAllocator]:
    """A zone allocator on `profile` (with `mem` of RAM) over a LocalBuddy,
    booted, and stopped on the way out."""
    allocator = ZoneAllocator(Machine(load_profile(profile, mem=mem)), LocalBuddy())
    await allocator.boot()
    try:
        yield allocator
    finally:
        await allocator.stop()


async def take_until_refused(take: Callable[[], Awaitable[list[int]]]) -> list[int]:
    """The pages `take` gets, called until the allocator refuses."""
    pages: list[int] = []
    while True:
        try:
            pages += await take()
        except OutOfMemory:
            return pages


def zone_of(allocator: ZoneAllocator, pfn: int) -> tuple[int, str]:
    zone = allocator.machine.zone_of_pfn(pfn)
    assert zone is not None
    return zone.key


def free_by_zone(allocator: ZoneAllocator) -> dict[tuple[int, str], int]:
    return {key: z.free_pages + z.pcp_pages for key, z in allocator.machine.zones.items()}


class RecordingOom:
    """An OomPort that records each call and gives up (a subclass's
    `verdict` may say otherwise)."""

    def __init__(self) -> None:
        self.calls: list[OomCall] = []

    async def out_of_memory(
        self,
        gfp_mask: int,
        order: int,
        pid: int,
        nodes: tuple[int, ...],
        constraint: Constraint | None = None,
    ) -> OomVerdict:
        self.calls.append((gfp_mask, order, pid, nodes, constraint))
        return await self.verdict()

    async def verdict(self) -> OomVerdict:
        return OomVerdict("give_up")


class ZoneRecorder:
    """A reclaimer that frees nothing and says which zones it was asked about."""

    def __init__(self) -> None:
        self.asked: list[tuple[int, str, bool]] = []

    async def drain_cache(self) -> int:
        return 0

    async def shrink_zone(
        self, node: int, zone: str, nr_to_reclaim: int, gfp_mask: int, priority: int, kswapd: bool
    ) -> ShrinkResult:
        self.asked.append((node, zone, kswapd))
        return ShrinkResult(0, 0)


class ScriptedPolicy(PolicyClient):
    """PolicyClient's OutOfMemory without a channel: records the requests and
    answers as told (raising it, if an error), by default that the caller was
    killed."""

    def __init__(self, answer: policy_pb.OutOfMemoryResponse | grpc.aio.AioRpcError | None = None):
        self.answer = answer
        self.requests: list[tuple[int, int, int, int, tuple[int, ...]]] = []

    async def out_of_memory(
        self,
        gfp_mask: int,
        order: int = 0,
        pid: int = 0,
        constraint: policy_pb.Constraint.ValueType = policy_pb.CONSTRAINT_NONE,
        nodemask: Iterable[int] = (),
        memcg: str = "",
    ) -> policy_pb.OutOfMemoryResponse:
        self.requests.append((gfp_mask, order, pid, constraint, tuple(nodemask)))
        if isinstance(self.answer, grpc.aio.AioRpcError):
            raise self.answer
        if self.answer is None:
            return policy_pb.OutOfMemoryResponse(
                decision=policy_pb.OOM_DECISION_KILLED, victim_pid=pid
            )
        return self.answer
