"""A server interceptor that times every RPC and learns its status code, and
the observers it reports to: Prometheus RPC metrics and structured logs.

The metric names are the conventional ones of go-grpc-prometheus, so that
existing dashboards and alerts read them unchanged.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram

from memsim.runtime.logs import get_logger
from memsim.runtime.panic import PanicGate

HANDLING_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class RpcObserver(Protocol):
    def started(self, rpc: RpcName) -> None: ...
    def handled(
        self, rpc: RpcName, code: grpc.StatusCode, seconds: float, details: str | None
    ) -> None: ...


class RpcName:
    __slots__ = ("method", "service", "type")

    def __init__(self, full_method: str, rpc_type: str) -> None:
        # "/memsim.buddy.v1.BuddyAllocator/AllocPages"
        self.service, _, self.method = full_method.lstrip("/").rpartition("/")
        self.type = rpc_type


class RpcMetrics:
    """grpc_server_started_total, grpc_server_handled_total, grpc_server_handling_seconds."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ("grpc_type", "grpc_service", "grpc_method")
        self._started = Counter(
            "grpc_server_started", "RPCs started on the server.", labels, registry=registry
        )
        self._handled = Counter(
            "grpc_server_handled",
            "RPCs completed on the server, by status code.",
            (*labels, "grpc_code"),
            registry=registry,
        )
        self._seconds = Histogram(
            "grpc_server_handling_seconds",
            "Time the server took to handle an RPC.",
            labels,
            buckets=HANDLING_BUCKETS,
            registry=registry,
        )

    def started(self, rpc: RpcName) -> None:
        self._started.labels(rpc.type, rpc.service, rpc.method).inc()

    def handled(
        self, rpc: RpcName, code: grpc.StatusCode, seconds: float, details: str | None
    ) -> None:
        self._handled.labels(rpc.type, rpc.service, rpc.method, code.name).inc()
        self._seconds.labels(rpc.type, rpc.service, rpc.method).observe(seconds)


class RpcLog:
    """Every RPC at debug; refused and failed ones at info, with the reason."""

    def __init__(self, service: str) -> None:
        self._log = get_logger(f"memsim.{service}.rpc")

    def started(self, rpc: RpcName) -> None:
        pass

    def handled(
        self, rpc: RpcName, code: grpc.StatusCode, seconds: float, details: str | None
    ) -> None:
        log = self._log.debug if code is grpc.StatusCode.OK else self._log.info
        log(
            "rpc",
            service=rpc.service,
            method=rpc.method,
            code=code.name,
            ms=round(seconds * 1000, 3),
            details=details,
        )


def _outcome(
    context: grpc.aio.ServicerContext[Any, Any], exc: BaseException | None
) -> grpc.StatusCode:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if exc is None:
        return grpc.StatusCode.OK
    if isinstance(exc, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


# The handler attribute that holds the behaviour, the grpc_type label (the
# go-grpc-prometheus spelling) and the factory that rebuilds such a handler.
_KINDS: tuple[tuple[str, str, Callable[..., Any]], ...] = (
    ("unary_unary", "unary", grpc.unary_unary_rpc_method_handler),
    ("unary_stream", "server_stream", grpc.unary_stream_rpc_method_handler),
    ("stream_unary", "client_stream", grpc.stream_unary_rpc_method_handler),
    ("stream_stream", "bidi_stream", grpc.stream_stream_rpc_method_handler),
)

if TYPE_CHECKING:
    _ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
else:  # generic only in the stubs
    _ServerInterceptor = grpc.aio.ServerInterceptor


class ObservingInterceptor(_ServerInterceptor):
    def __init__(self, observers: list[RpcObserver], gate: PanicGate | None = None) -> None:
        self._observers = observers
        # A halted machine refuses what would change it (runtime.panic).
        self._gate = gate or PanicGate()
        # Wrapped handlers by method: the handler for a method never changes.
        self._handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        method = handler_call_details.method
        wrapped = self._handlers.get(method)
        if wrapped is None:
            handler = await continuation(handler_call_details)
            if handler is None:  # unknown method: grpc answers UNIMPLEMENTED
                return handler
            wrapped = self._wrap(method, handler)
            self._handlers[method] = wrapped
        return wrapped

    def _wrap(
        self, method: str, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        for attribute, rpc_type, factory in _KINDS:
            behavior = getattr(handler, attribute)
            if behavior is not None:
                observed = self._observe(RpcName(method, rpc_type), behavior)
                wrapped: grpc.RpcMethodHandler[Any, Any] = factory(
                    observed,
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
                return wrapped
        raise ValueError(f"{method}: the handler has no behaviour to call")

    def _observe(self, rpc: RpcName, behavior: Callable[..., Any]) -> Callable[..., Any]:
        observers = self._observers
        gate = self._gate

        async def check_halted(context: grpc.aio.ServicerContext[Any, Any]) -> None:
            message = gate.refusal(rpc.service, rpc.method)
            if message is not None:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, message)

        def finish(
            context: grpc.aio.ServicerContext[Any, Any], start: float, exc: BaseException | None
        ) -> None:
            code = _outcome(context, exc)
            seconds = time.perf_counter() - start
            details = context.details() if code is not grpc.StatusCode.OK else None
            if details is None and exc is not None and code is grpc.StatusCode.UNKNOWN:
                details = repr(exc)
            for observer in observers:
                observer.handled(rpc, code, seconds, details)

        if inspect.isasyncgenfunction(behavior):

            async def stream(
                request: Any, context: grpc.aio.ServicerContext[Any, Any]
            ) -> AsyncIterator[Any]:
                for observer in observers:
                    observer.started(rpc)
                start = time.perf_counter()
                try:
                    await check_halted(context)
                    async for item in behavior(request, context):
                        yield item
                except BaseException as exc:
                    finish(context, start, exc)
                    raise
                finish(context, start, None)

            return stream

        async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            for observer in observers:
                observer.started(rpc)
            start = time.perf_counter()
            try:
                await check_halted(context)
                result = behavior(request, context)
                if inspect.isawaitable(result):
                    result = await result
            except BaseException as exc:
                finish(context, start, exc)
                raise
            finish(context, start, None)
            return result

        return call
