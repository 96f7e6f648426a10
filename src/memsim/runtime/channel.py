"""The one way a memsim process opens a gRPC channel to another.

Every call that returns one response gets a default deadline, and UNAVAILABLE
is retried with backoff, so that no caller can forget either. The deadline is
set by an interceptor, not by the service config's "timeout": grpc Python
applies that one 1-2 s early (grpc/grpc#34547, #40633). Streams that return
many responses (watches) are long-lived by design and set their own.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import grpc

DEFAULT_DEADLINE_S = 5.0
DEFAULT_MAX_ATTEMPTS = 4


def service_config(max_attempts: int) -> str:
    method: dict[str, object] = {"name": [{}]}  # every method of every service
    if max_attempts > 1:  # gRPC rejects a retry policy of fewer than 2 attempts
        method["retryPolicy"] = {
            "maxAttempts": max_attempts,
            "initialBackoff": "0.05s",
            "maxBackoff": "1s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        }
    return json.dumps({"methodConfig": [method]})


if TYPE_CHECKING:
    _UnaryUnary = grpc.aio.UnaryUnaryClientInterceptor[Any, Any]
    _StreamUnary = grpc.aio.StreamUnaryClientInterceptor[Any, Any]
else:  # generic only in the stubs
    _UnaryUnary = grpc.aio.UnaryUnaryClientInterceptor
    _StreamUnary = grpc.aio.StreamUnaryClientInterceptor


class DefaultDeadline(_UnaryUnary, _StreamUnary):
    """Gives a call with no timeout of its own the channel's default one."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def _with_deadline(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        if details.timeout is not None:
            return details
        return grpc.aio.ClientCallDetails(
            details.method,
            self.seconds,
            details.metadata,
            details.credentials,
            details.wait_for_ready,
        )

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        return await continuation(self._with_deadline(client_call_details), request)

    async def intercept_stream_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: AsyncIterable[Any] | Iterable[Any],
    ) -> Any:
        return await continuation(self._with_deadline(client_call_details), request_iterator)


def open_channel(
    address: str,
    *,
    deadline_s: float = DEFAULT_DEADLINE_S,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> grpc.aio.Channel:
    options = [
        ("grpc.service_config", service_config(max_attempts)),
        ("grpc.enable_retries", 1),
    ]
    # grpc-stubs type this list as unfinished and ask callers to ignore it.
    interceptors: list[Any] = [DefaultDeadline(deadline_s)]
    return grpc.aio.insecure_channel(address, options=options, interceptors=interceptors)
