"""The buddy service over gRPC against an echo service on the same bootstrap.

Both run as their own processes, started by this benchmark, so the ratio says
what the buddy's own work costs on top of a gRPC call that does nothing.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

from bench.report import Report, Result
from bench.services import running
from memsim.echo.v1 import echo_pb2, echo_pb2_grpc
from memsim.profiles.loader import load_profile
from memsim.runtime.channel import open_channel
from memsim.services.buddy.client import BuddyClient

# Many short paired rounds: noise on a shared machine hits echo and buddy alike,
# and the median of per-round ratios ignores the rounds it hit hardest.
WINDOW_S = 0.5
ROUNDS = 9
BULK = 256
ZONE = "Normal"


async def _calls_per_second(in_flight: int, one: Callable[[], Awaitable[int]]) -> float:
    """Runs `in_flight` loops of `one()` for WINDOW_S; `one` says how many calls it made."""
    stop_at = time.perf_counter() + WINDOW_S
    counts = [0] * in_flight

    async def loop(i: int) -> None:
        while time.perf_counter() < stop_at:
            counts[i] += await one()

    start = time.perf_counter()
    await asyncio.gather(*(loop(i) for i in range(in_flight)))
    return sum(counts) / (time.perf_counter() - start)


async def _measure(report: Report, echo_addr: str, buddy_addr: str) -> None:
    async with open_channel(echo_addr) as echo_ch, open_channel(buddy_addr) as buddy_ch:
        echo = echo_pb2_grpc.EchoStub(echo_ch)
        buddy = BuddyClient(buddy_ch)
        await buddy.create_arena(0, ZONE, 4096, 225280)
        request = echo_pb2.EchoRequest(payload=b"x" * 16)

        async def echo_call() -> int:
            await echo.Echo(request)
            return 1

        async def alloc_free() -> int:
            pfn = await buddy.alloc(0, ZONE, 0)
            await buddy.free(0, ZONE, [(pfn, 0)])
            return 2

        pages = 0
        alloc_s = free_s = 0.0

        async def bulk() -> int:
            """AllocPagesBulk then FreePagesBulk of BULK pages, each call timed alone."""
            nonlocal alloc_s, free_s, pages
            start = time.perf_counter()
            held = await buddy.alloc_bulk(0, ZONE, 0, BULK)
            middle = time.perf_counter()
            await buddy.free_bulk(0, ZONE, 0, held)
            pages += len(held)
            alloc_s += middle - start
            free_s += time.perf_counter() - middle
            return 2

        for fn in (echo_call, alloc_free, bulk):  # warm up connections and caches
            await _calls_per_second(1, fn)

        for in_flight in (1, 32):
            echo_rates, buddy_rates, ratios = [], [], []
            for _ in range(ROUNDS):
                echo_rates.append(await _calls_per_second(in_flight, echo_call))
                buddy_rates.append(await _calls_per_second(in_flight, alloc_free))
                ratios.append(buddy_rates[-1] / echo_rates[-1])
            ratio = statistics.median(ratios)
            report.add(
                Result(
                    f"echo calls/s, {in_flight} in flight", statistics.median(echo_rates), "calls/s"
                )
            )
            report.add(
                Result(
                    f"buddy alloc/free calls/s, {in_flight} in flight",
                    statistics.median(buddy_rates),
                    "calls/s",
                )
            )
            report.add(
                Result(
                    f"buddy / echo calls/s, {in_flight} in flight",
                    ratio,
                    "ratio",
                    ">= 0.85",
                    ratio >= 0.85,
                )
            )

        ratios_by_call: dict[str, list[float]] = {"AllocPagesBulk": [], "FreePagesBulk": []}
        rates_by_call: dict[str, list[float]] = {"AllocPagesBulk": [], "FreePagesBulk": []}
        for _ in range(ROUNDS):
            echo_rate = await _calls_per_second(1, echo_call)
            alloc_s = free_s = 0.0
            pages = 0
            await _calls_per_second(1, bulk)
            for what, seconds in (("AllocPagesBulk", alloc_s), ("FreePagesBulk", free_s)):
                rates_by_call[what].append(pages / seconds)
                ratios_by_call[what].append(pages / seconds / echo_rate)
        for what, ratios in ratios_by_call.items():
            ratio = statistics.median(ratios)
            report.add(
                Result(
                    f"{what} of {BULK} order-0 pages, pages/s",
                    statistics.median(rates_by_call[what]),
                    "pages/s",
                )
            )
            report.add(
                Result(f"{what} pages/s / echo calls/s", ratio, "ratio", ">= 100", ratio >= 100)
            )


def run(report: Report) -> None:
    print("buddy over gRPC (own processes, against echo)")
    with running(load_profile("x86_32"), "echo", "buddy") as services:
        asyncio.run(_measure(report, services["echo"].address, services["buddy"].address))
