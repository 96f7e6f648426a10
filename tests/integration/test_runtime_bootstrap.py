"""The bootstrap every service shares (memsim.runtime): health, reflection, the
/metrics endpoint and the RPC interceptor, graceful shutdown, the channel helper."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import aiohttp
import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from memsim.buddy.v1 import buddy_pb2 as pb
from memsim.common.v1 import common_pb2
from memsim.echo.v1 import echo_pb2, echo_pb2_grpc
from memsim.runtime.channel import open_channel
from memsim.runtime.server import RunningServer, Service, start_server
from memsim.services.echo.server import EchoServicer

if TYPE_CHECKING:
    from tests.integration.conftest import BuddyHarness

BUDDY = "memsim.buddy.v1.BuddyAllocator"
HEALTH = "grpc.health.v1.Health"
REFLECTION = "grpc.reflection.v1alpha.ServerReflection"
ECHO = "memsim.echo.v1.Echo"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

Context = grpc.aio.ServicerContext[Any, Any]
Labels = frozenset[tuple[str, str]]


# -- test-only echo servicers -------------------------------------------------------


class SlowEcho(EchoServicer):
    """Echo that takes `delay` seconds, and says when a call has begun."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.begun = asyncio.Event()
        self.calls = 0

    async def Echo(self, request: echo_pb2.EchoRequest, context: Context) -> echo_pb2.EchoResponse:
        self.calls += 1
        self.begun.set()
        await asyncio.sleep(self.delay)
        return echo_pb2.EchoResponse(payload=request.payload)


class FlakyEcho(EchoServicer):
    """Echo that answers UNAVAILABLE to its first `failures` calls."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def Echo(self, request: echo_pb2.EchoRequest, context: Context) -> echo_pb2.EchoResponse:
        self.calls += 1
        if self.calls <= self.failures:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"attempt {self.calls} refused")
        return echo_pb2.EchoResponse(payload=request.payload)


def echo_service(servicer: EchoServicer) -> Service:
    return Service(
        name="echo-test",
        service_names=[ECHO],
        add_to_server=lambda server: echo_pb2_grpc.add_EchoServicer_to_server(servicer, server),
    )


@contextlib.asynccontextmanager
async def serving(servicer: EchoServicer) -> AsyncIterator[RunningServer]:
    running = await start_server(echo_service(servicer), "127.0.0.1:0", None)
    try:
        yield running
    finally:
        await running.stop(0)


# -- metrics helpers ----------------------------------------------------------------


async def fetch(url: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, response.headers.get("Content-Type", ""), await response.text()


async def scrape(address: str | None) -> dict[str, dict[Labels, float]]:
    """Every sample of the endpoint: sample name -> labels -> value."""
    assert address is not None
    status, content_type, text = await fetch(f"http://{address}/metrics")
    assert status == 200
    assert content_type.startswith("text/plain")
    samples: dict[str, dict[Labels, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return samples


def by(samples: dict[Labels, float], *keys: str) -> dict[tuple[str, ...], float]:
    """The samples keyed by the values of some of their labels."""
    return {tuple(dict(labels)[k] for k in keys): value for labels, value in samples.items()}


def rpc_samples(
    samples: dict[str, dict[Labels, float]], name: str, service: str
) -> dict[Labels, float]:
    return {
        labels: value
        for labels, value in samples.get(name, {}).items()
        if dict(labels)["grpc_service"] == service
    }


# -- health -------------------------------------------------------------------------


async def test_health_serving_for_server_and_service(buddy: BuddyHarness) -> None:
    health = health_pb2_grpc.HealthStub(buddy.channel)
    for service in ("", BUDDY):
        response = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert response.status == SERVING, service


async def test_health_unknown_service_is_not_found(buddy: BuddyHarness) -> None:
    health = health_pb2_grpc.HealthStub(buddy.channel)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await health.Check(health_pb2.HealthCheckRequest(service="memsim.nope.v1.Nope"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


# -- reflection ---------------------------------------------------------------------


async def reflect(
    channel: grpc.aio.Channel, *requests: reflection_pb2.ServerReflectionRequest
) -> list[reflection_pb2.ServerReflectionResponse]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(iter(requests))
    return [response async for response in call]


async def test_reflection_lists_the_services(buddy: BuddyHarness) -> None:
    (response,) = await reflect(
        buddy.channel, reflection_pb2.ServerReflectionRequest(list_services="")
    )
    names = sorted(s.name for s in response.list_services_response.service)
    assert names == sorted([BUDDY, HEALTH, REFLECTION])


async def test_reflection_file_containing_symbol(buddy: BuddyHarness) -> None:
    (response,) = await reflect(
        buddy.channel, reflection_pb2.ServerReflectionRequest(file_containing_symbol=BUDDY)
    )
    assert response.WhichOneof("message_response") == "file_descriptor_response"
    files = {}
    for raw in response.file_descriptor_response.file_descriptor_proto:
        proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
        files[proto.name] = proto
    buddy_file = files["memsim/buddy/v1/buddy.proto"]
    assert buddy_file.package == "memsim.buddy.v1"
    assert list(buddy_file.dependency) == ["memsim/common/v1/common.proto"]
    (service,) = buddy_file.service
    assert service.name == "BuddyAllocator"
    methods = [m.name for m in service.method]
    # What the server was built from, whatever RPCs have been added since.
    assert methods == [m.name for m in pb.DESCRIPTOR.services_by_name["BuddyAllocator"].methods]
    assert set(methods) >= {
        "CreateArena",
        "ListArenas",
        "AllocPages",
        "AllocPagesBulk",
        "FreePages",
        "GetBuddyInfo",
        "GetFragmentation",
        "Audit",
    }
    assert (
        service.method[methods.index("AllocPages")].input_type
        == ".memsim.buddy.v1.AllocPagesRequest"
    )


async def test_reflection_unknown_symbol_is_an_error_response(buddy: BuddyHarness) -> None:
    (response,) = await reflect(
        buddy.channel,
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="memsim.nope.v1.Nope"),
    )
    assert response.WhichOneof("message_response") == "error_response"
    assert response.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


# -- the /metrics endpoint ----------------------------------------------------------


async def buddy_sequence(buddy: BuddyHarness) -> None:
    """A known sequence of buddy RPCs, four of them refused."""
    client, stub = buddy.client, buddy.stub
    await client.create_arena(0, "DMA", 0, 4096)
    await client.create_arena(0, "Normal", 4096, 225280)
    with pytest.raises(grpc.aio.AioRpcError):  # ALREADY_EXISTS
        await client.create_arena(0, "DMA", 300000, 16)
    assert await client.alloc(0, "DMA", 0) == 0  # 10 splits
    assert await client.alloc(0, "DMA", 3) == 8  # no split: 8 was free at order 3
    assert await client.alloc_bulk(0, "DMA", 10, 5) == [1024, 2048, 3072]  # 1 failure
    with pytest.raises(grpc.aio.AioRpcError):  # RESOURCE_EXHAUSTED, 1 failure
        await client.alloc(0, "DMA", 10)
    with pytest.raises(grpc.aio.AioRpcError):  # NOT_FOUND
        await stub.AllocPages(pb.AllocPagesRequest(arena=common_pb2.ArenaRef(zone="Nope")))
    assert await client.free(0, "DMA", [(0, 0)]) == 1  # merges with 1, 2, 4
    assert await client.free(0, "DMA", [(8, 3)]) == 8  # merges 8..512: back to order 10
    with pytest.raises(grpc.aio.AioRpcError):  # FAILED_PRECONDITION
        await client.free(0, "DMA", [(8, 3)])


async def test_metrics_rpc_counters(buddy: BuddyHarness) -> None:
    await buddy_sequence(buddy)
    await buddy.client.buddyinfo()

    samples = await scrape(buddy.running.metrics_address)

    started = rpc_samples(samples, "grpc_server_started_total", BUDDY)
    assert {dict(labels)["grpc_type"] for labels in started} == {"unary"}
    assert by(started, "grpc_method") == {
        ("CreateArena",): 3,
        ("AllocPages",): 4,
        ("AllocPagesBulk",): 1,
        ("FreePages",): 3,
        ("GetBuddyInfo",): 1,
    }
    handled = rpc_samples(samples, "grpc_server_handled_total", BUDDY)
    assert {dict(labels)["grpc_type"] for labels in handled} == {"unary"}
    assert by(handled, "grpc_method", "grpc_code") == {
        ("CreateArena", "OK"): 2,
        ("CreateArena", "ALREADY_EXISTS"): 1,
        ("AllocPages", "OK"): 2,
        ("AllocPages", "RESOURCE_EXHAUSTED"): 1,
        ("AllocPages", "NOT_FOUND"): 1,
        ("AllocPagesBulk", "OK"): 1,
        ("FreePages", "OK"): 2,
        ("FreePages", "FAILED_PRECONDITION"): 1,
        ("GetBuddyInfo", "OK"): 1,
    }
    counts = rpc_samples(samples, "grpc_server_handling_seconds_count", BUDDY)
    assert by(counts, "grpc_method") == by(started, "grpc_method")
    sums = rpc_samples(samples, "grpc_server_handling_seconds_sum", BUDDY)
    assert all(0 < value < 5 for value in sums.values())
    buckets = rpc_samples(samples, "grpc_server_handling_seconds_bucket", BUDDY)
    inf = {k: v for k, v in by(buckets, "grpc_method", "le").items() if k[1] == "+Inf"}
    assert inf == {(method, "+Inf"): n for (method,), n in by(started, "grpc_method").items()}


async def test_metrics_label_streaming_rpcs_and_other_services(buddy: BuddyHarness) -> None:
    health = health_pb2_grpc.HealthStub(buddy.channel)
    await health.Check(health_pb2.HealthCheckRequest(service=""))
    await reflect(buddy.channel, reflection_pb2.ServerReflectionRequest(list_services=""))

    samples = await scrape(buddy.running.metrics_address)

    handled = samples["grpc_server_handled_total"]
    assert by(handled, "grpc_service", "grpc_method", "grpc_type", "grpc_code") == {
        (HEALTH, "Check", "unary", "OK"): 1,
        (REFLECTION, "ServerReflectionInfo", "bidi_stream", "OK"): 1,
    }


async def test_metrics_buddy_gauges_and_counters(buddy: BuddyHarness) -> None:
    await buddy_sequence(buddy)
    samples = await scrape(buddy.running.metrics_address)

    # free blocks: exactly what GetBuddyInfo says, for every arena and order.
    expected = {
        (str(info.arena.node), info.arena.zone, str(order)): float(n)
        for info in await buddy.client.buddyinfo()
        for order, n in enumerate(info.nr_free)
    }
    free_blocks = by(samples["memsim_buddy_free_blocks"], "node", "zone", "order")
    assert free_blocks == expected
    assert free_blocks[("0", "DMA", "10")] == 1
    assert free_blocks[("0", "Normal", "10")] == 220
    assert sum(free_blocks.values()) == 221

    def per_order(name: str) -> dict[int, float]:
        values = by(samples[name], "node", "zone", "order")
        assert all(v == 0 for (_, zone, _), v in values.items() if zone == "Normal")
        return {int(o): v for (_, zone, o), v in values.items() if zone == "DMA" and v}

    assert per_order("memsim_buddy_allocations_total") == {0: 1, 3: 1, 10: 3}
    assert per_order("memsim_buddy_frees_total") == {0: 1, 3: 1}
    assert per_order("memsim_buddy_failed_allocations_total") == {10: 2}
    assert by(samples["memsim_buddy_splits_total"], "zone") == {("DMA",): 10, ("Normal",): 0}
    assert by(samples["memsim_buddy_merges_total"], "zone") == {("DMA",): 10, ("Normal",): 0}
    assert by(samples["memsim_buddy_free_pages"], "zone") == {("DMA",): 1024, ("Normal",): 225280}
    assert by(samples["memsim_buddy_allocated_pages"], "zone") == {("DMA",): 3072, ("Normal",): 0}
    assert by(samples["memsim_buddy_spanned_pages"], "zone") == {
        ("DMA",): 4096,
        ("Normal",): 225280,
    }
    # The one free DMA block is of order 10: nothing is unusable, everything succeeds.
    unusable = by(samples["memsim_buddy_unusable_free_index_ratio"], "zone", "order")
    assert {o: v for (z, o), v in unusable.items() if z == "DMA"} == {
        str(o): 0.0 for o in range(11)
    }
    extfrag = by(samples["memsim_buddy_fragmentation_index_ratio"], "zone", "order")
    assert {o: v for (z, o), v in extfrag.items() if z == "DMA"} == {
        str(o): -1.0 for o in range(11)
    }
    # The process collector of the bootstrap is there too.
    assert samples["process_resident_memory_bytes"][frozenset()] > 0


async def test_metrics_index_page(buddy: BuddyHarness) -> None:
    address = buddy.running.metrics_address
    status, _, text = await fetch(f"http://{address}/")
    assert status == 200
    assert "/metrics" in text
    status, _, _ = await fetch(f"http://{address}/nope")
    assert status == 404


async def test_server_addresses_are_bound_loopback_ports(buddy: BuddyHarness) -> None:
    running = buddy.running
    host, _, port = running.address.rpartition(":")
    assert host == "127.0.0.1"
    assert int(port) > 0
    assert running.metrics_address is not None
    metrics_host, _, metrics_port = running.metrics_address.rpartition(":")
    assert metrics_host == "127.0.0.1"
    assert int(metrics_port) > 0
    assert metrics_port != port


# -- graceful shutdown --------------------------------------------------------------


async def test_graceful_shutdown() -> None:
    servicer = SlowEcho(delay=0.5)
    running = await start_server(echo_service(servicer), "127.0.0.1:0", None)
    assert running.metrics_address is None
    channel = open_channel(running.address, max_attempts=1)
    stub = echo_pb2_grpc.EchoStub(channel)
    health = health_pb2_grpc.HealthStub(channel)
    try:
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
        updates = watch.__aiter__()
        assert (await anext(updates)).status == SERVING
        service_watch = health.Watch(health_pb2.HealthCheckRequest(service=ECHO))
        service_updates = service_watch.__aiter__()
        assert (await anext(service_updates)).status == SERVING

        in_flight = asyncio.ensure_future(stub.Echo(echo_pb2.EchoRequest(payload=b"in flight")))
        await asyncio.wait_for(servicer.begun.wait(), 2)
        started = time.monotonic()
        stopping = asyncio.ensure_future(running.stop(5.0))

        # Health turns NOT_SERVING first, for the server and for the service.
        assert (await asyncio.wait_for(anext(updates), 2)).status == NOT_SERVING
        assert (await asyncio.wait_for(anext(service_updates), 2)).status == NOT_SERVING
        watch.cancel()
        service_watch.cancel()

        # Then no new call is accepted, while the call in flight still runs.
        await asyncio.sleep(0.1)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Echo(echo_pb2.EchoRequest(payload=b"too late"))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert not in_flight.done()
        assert not stopping.done()

        # The call in flight ends normally within the grace, and so does stop().
        response = await asyncio.wait_for(in_flight, 2)
        assert response.payload == b"in flight"
        await asyncio.wait_for(stopping, 2)
        assert time.monotonic() - started < 2.0  # did not wait for the whole grace
        assert servicer.calls == 1
    finally:
        await channel.close(None)
        await running.stop(0)


async def test_shutdown_grace_cuts_calls_that_outlast_it() -> None:
    servicer = SlowEcho(delay=3.0)
    running = await start_server(echo_service(servicer), "127.0.0.1:0", None)
    channel = open_channel(running.address, max_attempts=1)
    try:
        in_flight = asyncio.ensure_future(
            echo_pb2_grpc.EchoStub(channel).Echo(echo_pb2.EchoRequest(payload=b"slow"))
        )
        await asyncio.wait_for(servicer.begun.wait(), 2)
        started = time.monotonic()
        await running.stop(0.2)
        assert 0.15 < time.monotonic() - started < 1.5
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await asyncio.wait_for(in_flight, 2)
        assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
    finally:
        await channel.close(None)


# -- the channel helper -------------------------------------------------------------


async def test_channel_deadline_expires_a_slow_call() -> None:
    servicer = SlowEcho(delay=1.0)
    async with serving(servicer) as running:
        channel = open_channel(running.address, deadline_s=0.1)
        try:
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await echo_pb2_grpc.EchoStub(channel).Echo(echo_pb2.EchoRequest(payload=b"x"))
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert time.monotonic() - started < 0.9
        finally:
            await channel.close(None)


async def test_channel_deadline_lets_a_call_shorter_than_it_finish() -> None:
    servicer = SlowEcho(delay=0.1)
    async with serving(servicer) as running:
        channel = open_channel(running.address, deadline_s=1.0)
        try:
            response = await echo_pb2_grpc.EchoStub(channel).Echo(
                echo_pb2.EchoRequest(payload=b"in time")
            )
            assert response.payload == b"in time"
        finally:
            await channel.close(None)


async def test_channel_per_call_timeout_still_applies() -> None:
    servicer = SlowEcho(delay=1.0)
    async with serving(servicer) as running:
        channel = open_channel(running.address)
        try:
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await echo_pb2_grpc.EchoStub(channel).Echo(
                    echo_pb2.EchoRequest(payload=b"x"), timeout=0.15
                )
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert 0.1 < time.monotonic() - started < 0.9
        finally:
            await channel.close(None)


async def test_channel_retries_unavailable() -> None:
    servicer = FlakyEcho(failures=2)
    async with serving(servicer) as running:
        channel = open_channel(running.address)
        try:
            response = await echo_pb2_grpc.EchoStub(channel).Echo(
                echo_pb2.EchoRequest(payload=b"third time")
            )
            assert response.payload == b"third time"
            assert servicer.calls == 3
        finally:
            await channel.close(None)


@pytest.mark.parametrize(
    ("max_attempts", "failures"),
    [(1, 2), (3, 10)],
    ids=["without-retries-gives-up-at-once", "retries-stop-at-max-attempts"],
)
async def test_channel_attempts_are_bounded(max_attempts: int, failures: int) -> None:
    servicer = FlakyEcho(failures=failures)
    async with serving(servicer) as running:
        channel = open_channel(running.address, max_attempts=max_attempts)
        try:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await echo_pb2_grpc.EchoStub(channel).Echo(echo_pb2.EchoRequest(payload=b"x"))
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert info.value.details() == f"attempt {max_attempts} refused"
            assert servicer.calls == max_attempts
        finally:
            await channel.close(None)
