"""The load workloads without an event loop: for Locust (gevent) and any other
synchronous caller.

The workloads (workloads.py), the Ops facade (ops.py) and the process client
library are coroutines, but nothing in them waits on the event loop itself:
every suspension is an awaited RPC, and the only asyncio primitives they use
(the heap locks of Process and Malloc) are never contended, because one
simulated process makes one call at a time. So when an RPC completes as soon
as it is awaited (a synchronous gRPC call wrapped in a coroutine), a whole
workload runs on the first `send(None)` of its coroutine, with no event loop:
`run_sync` does that, and raises if anything ever suspends on a real future.

AwaitableChannel is that transport. To the generated stubs it looks like a
grpc.aio.Channel (unary_unary only, which is every RPC the load makes); each
call runs on a synchronous grpc.Channel, with the deadline and retry policy of
runtime/channel.py, and a refusal comes back as grpc.aio.AioRpcError, so that
the client libraries turn it into the same errno exceptions as over grpc.aio
and ops.classify() counts it the same way. The same workload definitions thus
drive `memsim load` (asyncio) and the Locust users (clients/locustfile.py).

Under gevent (`grpc.experimental.gevent.init_gevent()` before any channel is
made) a call blocks only its own greenlet. `wait` decides how the caller waits
for a call in flight: Locust's users pass one that lets the call finish even
when the user is being stopped, so that no spawn or fork is left half booked.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar, cast

import grpc

from memsim.clients.load.machine import MachineBackend, MachineInfo, machine_info
from memsim.mmu.v1 import mmu_pb2_grpc
from memsim.runtime.channel import DEFAULT_MAX_ATTEMPTS, service_config
from memsim.services.slab.client import SlabClient

T = TypeVar("T")
Wait = Callable[["grpc.Future[Any]"], Any]


class Suspended(RuntimeError):
    """A coroutine given to run_sync waited on the event loop, which it has not."""


def run_sync(awaitable: Awaitable[T]) -> T:
    """Run a coroutine whose awaits all complete at once (AwaitableChannel's
    calls, uncontended locks) to its end, without an event loop."""
    steps = awaitable.__await__()
    try:
        suspended_on = steps.send(None)
    except StopIteration as done:
        return cast(T, done.value)
    steps.close()
    raise Suspended(
        f"{awaitable!r} waited on {suspended_on!r}: only coroutines whose awaits "
        "complete at once can run without an event loop"
    )


def open_sync_channel(address: str, *, max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> grpc.Channel:
    """A synchronous channel with the retry policy of runtime/channel.py
    (UNAVAILABLE retried with backoff); the deadline is AwaitableChannel's."""
    options = [
        ("grpc.service_config", service_config(max_attempts)),
        ("grpc.enable_retries", 1),
    ]
    return grpc.insecure_channel(address, options=options)


def aio_error(error: grpc.RpcError) -> grpc.aio.AioRpcError:
    """A synchronous call's refusal as grpc.aio reports it."""
    call = cast(grpc.Call, error)
    debug: Callable[[], str] | None = getattr(error, "debug_error_string", None)
    return grpc.aio.AioRpcError(
        call.code(),
        grpc.aio.Metadata(*(call.initial_metadata() or ())),
        grpc.aio.Metadata(*(call.trailing_metadata() or ())),
        call.details(),
        debug() if debug is not None else None,
    )


def _result(future: grpc.Future[Any]) -> Any:
    return future.result()


class AwaitableUnaryUnary:
    """One method: calling it gives a coroutine that performs the call when awaited."""

    def __init__(
        self, callable_: grpc.UnaryUnaryMultiCallable[Any, Any], deadline_s: float, wait: Wait
    ) -> None:
        self._callable = callable_
        self._deadline_s = deadline_s
        self._wait = wait

    def __call__(
        self,
        request: Any,
        *,
        timeout: float | None = None,
        metadata: Any = None,
        **_: Any,
    ) -> Coroutine[Any, Any, Any]:
        return self._invoke(request, self._deadline_s if timeout is None else timeout, metadata)

    async def _invoke(self, request: Any, deadline_s: float, metadata: Any) -> Any:
        future = self._callable.future(request, timeout=deadline_s, metadata=metadata)
        try:
            return self._wait(future)
        except grpc.RpcError as error:
            raise aio_error(error) from None


class AwaitableChannel:
    """Stands for a grpc.aio.Channel in front of a synchronous one; every call
    gets `deadline_s` unless it sets its own timeout."""

    def __init__(self, channel: grpc.Channel, *, deadline_s: float, wait: Wait = _result) -> None:
        self.channel = channel
        self.deadline_s = deadline_s
        self.wait = wait

    def unary_unary(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool = False,
    ) -> AwaitableUnaryUnary:
        callable_ = self.channel.unary_unary(
            method,
            request_serializer=request_serializer,
            response_deserializer=response_deserializer,
        )
        return AwaitableUnaryUnary(callable_, self.deadline_s, self.wait)

    def as_aio(self) -> grpc.aio.Channel:
        """This channel where the generated stubs and the typed clients expect
        a grpc.aio.Channel (they only ever call unary_unary on it)."""
        return cast(grpc.aio.Channel, self)


def sync_backend(
    mmu: AwaitableChannel, slab: AwaitableChannel, profile: str | None = None
) -> tuple[MachineBackend, MachineInfo]:
    """memsim load's MachineBackend over synchronous channels, and the
    machine's page size and MMU mode (one GetStats call)."""
    stub = mmu_pb2_grpc.MmuStub(mmu.as_aio())
    info = run_sync(machine_info(stub, profile))
    return MachineBackend(stub, SlabClient(slab.as_aio()), info.page_size), info
