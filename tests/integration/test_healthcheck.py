"""python -m memsim.runtime.healthcheck against a real server on loopback: the
command the compose healthchecks and the Kubernetes init containers run."""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import AsyncIterator

import pytest_asyncio
from grpc_health.v1 import health_pb2

from memsim.runtime.healthcheck import check, main, wait_serving
from memsim.runtime.server import RunningServer, start_server
from memsim.services.buddy.allocator import BuddyAllocator
from memsim.services.buddy.server import buddy_service

BUDDY = "memsim.buddy.v1.BuddyAllocator"


@pytest_asyncio.fixture
async def server() -> AsyncIterator[RunningServer]:
    running = await start_server(buddy_service(BuddyAllocator()), "127.0.0.1:0", None)
    try:
        yield running
    finally:
        await running.stop(0)


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run_command(*args: str) -> tuple[int, str]:
    """The module as a container runs it: a separate process."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "memsim.runtime.healthcheck",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_a_serving_server_exits_0(server: RunningServer) -> None:
    code, out = await run_command(server.address)
    assert (code, out) == (0, f"{server.address}: SERVING\n")


async def test_a_named_service_is_checked(server: RunningServer) -> None:
    assert await asyncio.to_thread(check, server.address, BUDDY) == (True, "SERVING")
    code, out = await run_command("--service", "no.such.Service", server.address)
    assert (code, out) == (1, f"{server.address}: NOT_FOUND\n")


async def test_not_serving_exits_1(server: RunningServer) -> None:
    await server.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    code, out = await run_command(server.address)
    assert (code, out) == (1, f"{server.address}: NOT_SERVING\n")
    # One of several addresses not serving is enough to fail.
    assert await asyncio.to_thread(main, [server.address, server.address]) == 1


async def test_nothing_listening_exits_1_within_the_timeout() -> None:
    address = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    code, out = await run_command("--timeout", "1", address)
    assert code == 1
    assert out == f"{address}: UNAVAILABLE\n"
    assert time.monotonic() - started < 15


async def test_a_bad_address_is_a_usage_error() -> None:
    code, out = await run_command("buddy")
    assert code == 2
    assert "'buddy' is not host:port" in out


async def test_wait_keeps_asking_until_the_server_serves(server: RunningServer) -> None:
    await server.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)

    async def serve_later() -> None:
        await asyncio.sleep(1.5)
        await server.health.set("", health_pb2.HealthCheckResponse.SERVING)

    later = asyncio.create_task(serve_later())
    results = await asyncio.to_thread(wait_serving, [server.address], "", 1.0, 20.0)
    await later
    assert results == [(server.address, True, "SERVING")]
    # Without --wait the first answer is final.
    await server.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    started = time.monotonic()
    assert await asyncio.to_thread(wait_serving, [server.address]) == [
        (server.address, False, "NOT_SERVING")
    ]
    assert time.monotonic() - started < 5
