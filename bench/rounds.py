"""Paired rounds against an echo service: what the gRPC benchmarks share.

A service's rate alone says as much about the machine as about the service, so
every figure with a goal is a ratio to echo, a gRPC call that does nothing,
measured on the same bootstrap just before. Many short paired rounds: noise on
a shared machine hits echo and the service alike within a round, and the median
of the per-round ratios ignores the rounds it hit hardest.
"""

from __future__ import annotations

import asyncio
import functools
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, NamedTuple, TypeVar

import grpc

from bench.report import Report, Result
from memsim.echo.v1 import echo_pb2, echo_pb2_grpc

WINDOW_S = 0.5
ROUNDS = 9

# One call (or a few) to a service: how many calls it made.
Call = Callable[[], Awaitable[int]]
# One round's rate of a service, measured by the caller's own means.
Rate = Callable[[], Awaitable[float]]
T = TypeVar("T")


async def calls_per_second(in_flight: int, one: Call) -> float:
    """Runs `in_flight` loops of `one()` for WINDOW_S; `one` says how many calls it made."""
    stop_at = time.perf_counter() + WINDOW_S
    counts = [0] * in_flight

    async def loop(i: int) -> None:
        while time.perf_counter() < stop_at:
            counts[i] += await one()

    start = time.perf_counter()
    await asyncio.gather(*(loop(i) for i in range(in_flight)))
    return sum(counts) / (time.perf_counter() - start)


async def warm_up(*calls: Call) -> None:
    """One window of each, one in flight: connections, caches and free lists are warm
    before anything is measured."""
    for one in calls:
        await calls_per_second(1, one)


def echo_call(channel: grpc.aio.Channel) -> Call:
    """An Echo of 16 bytes over `channel`: the gRPC call every ratio is taken against."""
    echo = echo_pb2_grpc.EchoStub(channel)
    request = echo_pb2.EchoRequest(payload=b"x" * 16)

    async def call() -> int:
        await echo.Echo(request)
        return 1

    return call


class Medians(NamedTuple):
    """Medians over the rounds: echo's rate, the service's, and the per-round ratios'."""

    echo: float
    rate: float
    ratio: float


async def paired_rates(echo_rate: Rate, rate: Rate, *, rounds: int = ROUNDS) -> Medians:
    """`rounds` rounds of echo's rate then the service's: the ratio is taken per round,
    so that noise on a shared machine hits both sides of it alike, and its median
    ignores the rounds the noise hit hardest."""
    echo_rates: list[float] = []
    rates: list[float] = []
    ratios: list[float] = []
    for _ in range(rounds):
        echo_rates.append(await echo_rate())
        rates.append(await rate())
        ratios.append(rates[-1] / echo_rates[-1])
    return Medians(
        statistics.median(echo_rates), statistics.median(rates), statistics.median(ratios)
    )


async def paired_rounds(in_flight: int, echo: Call, one: Call) -> Medians:
    """paired_rates of echo calls/s and `one`'s calls/s, `in_flight` loops of each."""
    return await paired_rates(
        functools.partial(calls_per_second, in_flight, echo),
        functools.partial(calls_per_second, in_flight, one),
    )


def add_paired(
    report: Report,
    medians: Medians,
    *,
    echo: str,
    rate: str,
    ratio: str,
    goal: float,
    unit: str = "calls/s",
) -> None:
    """The three rows of paired rounds: echo's rate and the service's for context,
    and their ratio, which must be `goal` or more."""
    report.add(Result(echo, medians.echo, "calls/s"))
    report.add(Result(rate, medians.rate, unit))
    report.add(Result(ratio, medians.ratio, "ratio", f">= {goal:g}", medians.ratio >= goal))


class TimedPair(Generic[T]):
    """`take()` then `give()` of what it took, each call timed alone; the items and
    the seconds of each half add up until reset()."""

    def __init__(
        self,
        take: Callable[[], Awaitable[Sequence[T]]],
        give: Callable[[Sequence[T]], Awaitable[object]],
    ) -> None:
        self._take = take
        self._give = give
        self.reset()

    def reset(self) -> None:
        self.items = 0
        self.take_s = 0.0
        self.give_s = 0.0

    async def __call__(self) -> int:
        """One take and one give: two calls, as calls_per_second counts them."""
        start = time.perf_counter()
        held = await self._take()
        middle = time.perf_counter()
        await self._give(held)
        self.items += len(held)
        self.take_s += middle - start
        self.give_s += time.perf_counter() - middle
        return 2


async def bulk_rounds(
    report: Report,
    echo: Call,
    take: Callable[[], Awaitable[Sequence[T]]],
    give: Callable[[Sequence[T]], Awaitable[object]],
    *,
    calls: tuple[str, str],
    items: str,
    unit: str,
    goal: float,
) -> None:
    """ROUNDS rounds of echo calls/s then take/give pairs, one in flight; each half
    is timed alone and its items/s taken against the same round's echo, since a bulk
    call is worth its items, not one call. Medians of the per-round ratios, as in
    paired_rates.

    `calls` names the halves: the rows read "{call} of {items}, {unit}" and
    "{call} {unit} / echo calls/s", the second with `goal` or more to meet."""
    pair = TimedPair(take, give)
    rates: tuple[list[float], list[float]] = ([], [])
    ratios: tuple[list[float], list[float]] = ([], [])
    for _ in range(ROUNDS):
        echo_rate = await calls_per_second(1, echo)
        pair.reset()
        await calls_per_second(1, pair)
        for half, seconds in enumerate((pair.take_s, pair.give_s)):
            rates[half].append(pair.items / seconds)
            ratios[half].append(rates[half][-1] / echo_rate)
    for half, call in enumerate(calls):
        ratio = statistics.median(ratios[half])
        report.add(Result(f"{call} of {items}, {unit}", statistics.median(rates[half]), unit))
        report.add(
            Result(f"{call} {unit} / echo calls/s", ratio, "ratio", f">= {goal:g}", ratio >= goal)
        )
