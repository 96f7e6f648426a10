"""Domain exceptions to gRPC status codes, at the edge only.

A servicer names, once, which of its core's exceptions mean which status; the
decorator turns a raised one into context.abort with the exception's message.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

import grpc

S = TypeVar("S")
Req = TypeVar("Req")
Resp = TypeVar("Resp")


def status_for(
    exc: BaseException, mapping: Mapping[type[Exception], grpc.StatusCode]
) -> grpc.StatusCode | None:
    for cls in type(exc).__mro__:
        code = mapping.get(cls)
        if code is not None:
            return code
    return None


def translate_errors(
    mapping: Mapping[type[Exception], grpc.StatusCode],
) -> Callable[
    [Callable[[S, Req, grpc.aio.ServicerContext[Req, Resp]], Awaitable[Resp]]],
    Callable[[S, Req, grpc.aio.ServicerContext[Req, Resp]], Awaitable[Resp]],
]:
    caught = tuple(mapping)

    def decorate(
        method: Callable[[S, Req, grpc.aio.ServicerContext[Req, Resp]], Awaitable[Resp]],
    ) -> Callable[[S, Req, grpc.aio.ServicerContext[Req, Resp]], Awaitable[Resp]]:
        @functools.wraps(method)
        async def wrapper(
            self: S, request: Req, context: grpc.aio.ServicerContext[Req, Resp]
        ) -> Resp:
            try:
                return await method(self, request, context)
            except caught as exc:
                code = status_for(exc, mapping)
                assert code is not None
                await context.abort(code, str(exc))
                raise  # abort raises; this line only satisfies the type checker

        return wrapper

    return decorate
