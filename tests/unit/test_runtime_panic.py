"""A halted machine (memsim.runtime.panic): the gate's rules, and a real
server whose gate is closed: mutating calls are FAILED_PRECONDITION with the
panic line, looking calls, health and reflection still answer, and the
refusals are counted as any other status."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import CollectorRegistry

from memsim.buddy.v1 import buddy_pb2 as pb
from memsim.buddy.v1 import buddy_pb2_grpc
from memsim.common.v1 import common_pb2
from memsim.runtime.channel import open_channel
from memsim.runtime.panic import PanicGate
from memsim.runtime.server import RunningServer, start_server
from memsim.services.buddy.allocator import BuddyAllocator
from memsim.services.buddy.server import buddy_service

LINE = "Kernel panic - not syncing: test"
BUDDY = "memsim.buddy.v1.BuddyAllocator"
TIMEOUT_S = 5.0


# -- the gate's rules --------------------------------------------------------------------


def test_an_open_gate_refuses_nothing() -> None:
    gate = PanicGate()
    assert gate.refusal(BUDDY, "CreateArena") is None


@pytest.mark.parametrize(
    ("service", "method", "refused"),
    [
        (BUDDY, "CreateArena", True),
        (BUDDY, "AllocPagesBulk", True),
        ("memsim.policy.v1.Policy", "SetSysctls", True),
        ("memsim.zone.v1.ZoneAllocator", "AllocPages", True),
        (BUDDY, "GetBuddyInfo", False),
        (BUDDY, "ListArenas", False),
        ("memsim.policy.v1.Policy", "WatchSysctls", False),
        ("memsim.policy.v1.Policy", "Reboot", False),
        ("grpc.health.v1.Health", "Check", False),
        ("grpc.reflection.v1alpha.ServerReflection", "ServerReflectionInfo", False),
    ],
)
def test_a_closed_gate_refuses_what_would_change_the_machine(
    service: str, method: str, refused: bool
) -> None:
    gate = PanicGate()
    gate.halt(LINE)
    assert gate.refusal(service, method) == (LINE if refused else None)
    gate.resume()
    assert gate.refusal(service, method) is None


# -- a real server --------------------------------------------------------------------


@dataclass
class Halting:
    running: RunningServer
    registry: CollectorRegistry
    channel: grpc.aio.Channel
    stub: buddy_pb2_grpc.BuddyAllocatorAsyncStub

    def handled(self, method: str, code: str) -> float:
        value = self.registry.get_sample_value(
            "grpc_server_handled_total",
            {
                "grpc_type": "unary",
                "grpc_service": BUDDY,
                "grpc_method": method,
                "grpc_code": code,
            },
        )
        return value or 0.0


@pytest_asyncio.fixture
async def halting() -> AsyncIterator[Halting]:
    registry = CollectorRegistry()
    running = await start_server(
        buddy_service(BuddyAllocator()), "127.0.0.1:0", None, registry=registry
    )
    channel = open_channel(running.address)
    try:
        yield Halting(running, registry, channel, buddy_pb2_grpc.BuddyAllocatorStub(channel))
    finally:
        await channel.close(None)
        await running.stop(0)


def create(start_pfn: int) -> pb.CreateArenaRequest:
    return pb.CreateArenaRequest(
        ref=common_pb2.ArenaRef(node=0, zone=f"Z{start_pfn}"), start_pfn=start_pfn, pages=1024
    )


async def test_a_halted_server_refuses_mutating_calls_and_answers_the_rest(
    halting: Halting,
) -> None:
    stub = halting.stub
    await asyncio.wait_for(stub.CreateArena(create(0)), TIMEOUT_S)
    arenas = await stub.ListArenas(pb.ListArenasRequest())
    info = await stub.GetBuddyInfo(pb.GetBuddyInfoRequest())

    halting.running.service.gate.halt(LINE)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await asyncio.wait_for(stub.CreateArena(create(4096)), TIMEOUT_S)
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert refused.value.details() == LINE
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.AllocPagesBulk(pb.AllocPagesBulkRequest())
    assert (refused.value.code(), refused.value.details()) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        LINE,
    )
    # Nothing changed, and the looking calls still answer.
    assert await stub.ListArenas(pb.ListArenasRequest()) == arenas
    assert await stub.GetBuddyInfo(pb.GetBuddyInfoRequest()) == info
    # Health and reflection are not the machine's: untouched.
    health = health_pb2_grpc.HealthStub(halting.channel)
    for name in ("", BUDDY):
        answer = await health.Check(health_pb2.HealthCheckRequest(service=name))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(halting.channel)
    call = reflection.ServerReflectionInfo()
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    listed = await asyncio.wait_for(call.read(), TIMEOUT_S)
    await call.done_writing()
    assert isinstance(listed, reflection_pb2.ServerReflectionResponse)
    assert BUDDY in [s.name for s in listed.list_services_response.service]
    # Counted as the status they got.
    assert halting.handled("CreateArena", "FAILED_PRECONDITION") == 1
    assert halting.handled("AllocPagesBulk", "FAILED_PRECONDITION") == 1
    assert halting.handled("CreateArena", "OK") == 1
    assert halting.handled("ListArenas", "OK") == 2

    halting.running.service.gate.resume()
    await asyncio.wait_for(stub.CreateArena(create(4096)), TIMEOUT_S)
    assert len((await stub.ListArenas(pb.ListArenasRequest())).arenas) == 2
    assert halting.handled("CreateArena", "OK") == 2
    assert halting.handled("CreateArena", "FAILED_PRECONDITION") == 1
