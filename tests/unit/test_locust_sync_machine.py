"""load/sync_machine.py, what the Locust users run on: the workloads without an
event loop (the same calls as under asyncio), and the awaitable channel over
a synchronous one (deadlines, refusals as the client libraries expect them).

The locustfile itself is run by tests/e2e/test_locust.py: importing Locust
here would monkey-patch this test process with gevent."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import Callable
from typing import Any, cast

import grpc
import pytest

from memsim.clients.load.ops import ENOMEM, OK, Ops, ProcessDied, Result, Stop, classify
from memsim.clients.load.schema import KINDS, Param
from memsim.clients.load.sync_machine import (
    AwaitableChannel,
    Suspended,
    aio_error,
    run_sync,
)
from memsim.clients.load.workloads import WORKLOADS, Context
from memsim.clients.process.errors import OutOfMemory, ProcessGone
from memsim.clients.process.process import Process
from memsim.mmu.v1 import mmu_pb2 as pb
from memsim.mmu.v1 import mmu_pb2_grpc

# -- run_sync -----------------------------------------------------------------------------


async def _answer(value: int) -> int:
    return value


async def _add_twice(value: int) -> int:
    return await _answer(value) + await _answer(value)


async def _sleeps() -> None:
    await asyncio.sleep(0)


def test_run_sync_runs_a_coroutine_whose_awaits_complete_at_once() -> None:
    assert run_sync(_add_twice(21)) == 42


def test_run_sync_refuses_a_coroutine_that_waits_on_the_event_loop() -> None:
    with pytest.raises(Suspended, match="without an event loop"):
        run_sync(_sleeps())


# -- the same workloads, with and without an event loop ---------------------------------


class Budget:
    """A Session of Ops: so many calls, each recorded with its outcome."""

    def __init__(self, calls: int) -> None:
        self.stop_event = asyncio.Event()
        self.left = calls
        self.calls: list[tuple[str, str, str]] = []

    @property
    def in_flight(self) -> asyncio.Semaphore | None:
        return None

    def ticket(self) -> None:
        if self.left <= 0:
            raise Stop
        self.left -= 1

    def complete(
        self,
        slot: int,
        op: str,
        args: dict[str, Any],
        ret: int | None,
        result: Result,
        latency_s: float,
        message: str,
    ) -> None:
        self.calls.append((op, json.dumps(args, sort_keys=True), result.outcome))


class Answers:
    """A backend that never waits: every 7th malloc is ENOMEM, every 23rd
    touch finds its process killed."""

    def __init__(self) -> None:
        self.count = 0

    async def execute(self, op: str, args: dict[str, Any], resolve: Callable[[int], Any]) -> Any:
        for key in ("proc", "at", "obj", "cache"):
            if key in args:
                resolve(args[key])
        self.count += 1
        if op == "malloc" and self.count % 7 == 0:
            raise OutOfMemory("malloc returned NULL")
        if op == "touch" and self.count % 23 == 0:
            raise ProcessGone("killed by the OOM killer")
        return self.count


async def lives(kind: str, params: dict[str, Any], calls: int) -> list[tuple[str, str, str]]:
    """A slot's lives as the Locust user runs them: the workload until it ends
    or its process dies, then what it left exits; until the budget is spent."""
    session = Budget(calls)
    ops = Ops(0, Answers(), session)
    rng = random.Random(f"sync:{kind}")
    try:
        while True:
            context = Context(ops, rng, params, 4096, False, kind)
            with contextlib.suppress(ProcessDied):
                await WORKLOADS[kind](context)
            await ops.reap()
    except Stop:
        pass
    await ops.cleanup()
    return session.calls


def defaults(specs: dict[str, Param]) -> dict[str, Any]:
    return {key: spec.default for key, spec in specs.items()}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_workload_makes_the_same_calls_without_an_event_loop(kind: str) -> None:
    params = defaults(KINDS[kind])
    under_asyncio = asyncio.run(lives(kind, params, 300))
    without_loop = run_sync(lives(kind, params, 300))
    assert without_loop == under_asyncio
    assert sum(1 for op, _, outcome in without_loop if outcome == OK) > 50


# -- AwaitableChannel ---------------------------------------------------------------------


class Refusal(grpc.RpcError, grpc.Call):
    """What a synchronous call raises: an RpcError that is also the call."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def initial_metadata(self) -> Any:
        return ()

    def trailing_metadata(self) -> Any:
        return (("x-why", "test"),)

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float:
        return 0.0

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: Any) -> bool:
        return False


class Done:
    """A finished call as grpc.Future's result() gives it."""

    def __init__(self, value: Any = None, error: Exception | None = None) -> None:
        self.value = value
        self.error = error

    def result(self, timeout: float | None = None) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


class SyncChannel:
    """A synchronous channel whose calls are answered by `answer(method, request)`."""

    def __init__(self, answer: Callable[[str, Any], Done]) -> None:
        self.answer = answer
        self.timeouts: list[float | None] = []

    def unary_unary(self, method: str, **_: Any) -> Any:
        channel = self

        class Method:
            def future(self, request: Any, timeout: float | None = None, **__: Any) -> Done:
                channel.timeouts.append(timeout)
                return channel.answer(method, request)

        return Method()


def mmu(answer: Callable[[str, Any], Done], **kw: Any) -> tuple[SyncChannel, AwaitableChannel]:
    sync = SyncChannel(answer)
    return sync, AwaitableChannel(cast(grpc.Channel, sync), deadline_s=7.0, **kw)


def test_a_process_runs_over_a_synchronous_channel_with_its_deadline() -> None:
    def answer(method: str, request: Any) -> Done:
        if method.endswith("/CreateProcess"):
            assert request.name == "db"
            return Done(pb.CreateProcessResponse(pid=12, token="t"))
        assert method.endswith("/Mmap")
        return Done(pb.MmapResponse(address=0x7F0000000000))

    waited: list[Any] = []

    def wait(future: Any) -> Any:
        waited.append(future)
        return future.result()

    sync, channel = mmu(answer, wait=wait)
    stub = mmu_pb2_grpc.MmuStub(channel.as_aio())
    process = run_sync(Process.spawn(stub, "db"))
    assert (process.pid, process.token) == (12, "t")
    assert run_sync(process.mmap(8192)) == 0x7F0000000000
    assert sync.timeouts == [7.0, 7.0]
    assert len(waited) == 2


def test_a_refusal_comes_back_as_the_client_library_expects_it() -> None:
    def answer(method: str, request: Any) -> Done:
        if method.endswith("/CreateProcess"):
            return Done(pb.CreateProcessResponse(pid=12, token="t"))
        return Done(error=Refusal(grpc.StatusCode.RESOURCE_EXHAUSTED, "no frames"))

    _, channel = mmu(answer)
    process = run_sync(Process.spawn(mmu_pb2_grpc.MmuStub(channel.as_aio()), "db"))
    with pytest.raises(OutOfMemory, match="no frames"):
        run_sync(process.mmap(8192))


def test_aio_error_keeps_code_details_and_metadata() -> None:
    error = aio_error(Refusal(grpc.StatusCode.RESOURCE_EXHAUSTED, "no frames"))
    assert isinstance(error, grpc.aio.AioRpcError)
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.details() == "no frames"
    assert list(cast(Any, error.trailing_metadata())) == [("x-why", "test")]
    assert classify(error)[0] == ENOMEM
