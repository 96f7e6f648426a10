"""The zone service over gRPC against an echo service on the same bootstrap.

Echo, buddy and zone run as their own processes, started by this benchmark. An
order-0 allocate+free on cpu 0 is served from the pcp list, so the ratio says
what the zone's own work costs on top of a gRPC call that does nothing.
"""

from __future__ import annotations

import asyncio
import statistics

from bench.buddy_grpc import ROUNDS, _calls_per_second
from bench.report import Report, Result
from bench.services import running
from memsim.echo.v1 import echo_pb2, echo_pb2_grpc
from memsim.profiles.loader import load_profile
from memsim.runtime.channel import open_channel
from memsim.services.zone.client import ZoneClient
from memsim.services.zone.gfp import GFP_KERNEL

PROFILE = "x86_32"
GOAL = 0.8


async def _measure(report: Report, echo_addr: str, zone_addr: str) -> None:
    async with open_channel(echo_addr) as echo_ch, open_channel(zone_addr) as zone_ch:
        echo = echo_pb2_grpc.EchoStub(echo_ch)
        zone = ZoneClient(zone_ch)
        request = echo_pb2.EchoRequest(payload=b"x" * 16)

        async def echo_call() -> int:
            await echo.Echo(request)
            return 1

        async def alloc_free() -> int:
            blocks = await zone.alloc(GFP_KERNEL, order=0, count=1, cpu=0)
            await zone.free(blocks, cpu=0)
            return 2

        for fn in (echo_call, alloc_free):  # warm up connections, caches and pcp lists
            await _calls_per_second(1, fn)

        for in_flight in (1, 32):
            echo_rates, zone_rates, ratios = [], [], []
            for _ in range(ROUNDS):
                echo_rates.append(await _calls_per_second(in_flight, echo_call))
                zone_rates.append(await _calls_per_second(in_flight, alloc_free))
                ratios.append(zone_rates[-1] / echo_rates[-1])
            ratio = statistics.median(ratios)
            report.add(
                Result(
                    f"echo calls/s, {in_flight} in flight (zone run)",
                    statistics.median(echo_rates),
                    "calls/s",
                )
            )
            report.add(
                Result(
                    f"zone order-0 alloc/free calls/s, {in_flight} in flight",
                    statistics.median(zone_rates),
                    "calls/s",
                )
            )
            report.add(
                Result(
                    f"zone / echo calls/s, {in_flight} in flight",
                    ratio,
                    "ratio",
                    f">= {GOAL}",
                    ratio >= GOAL,
                )
            )


def run(report: Report) -> None:
    print(f"zone over gRPC (own processes, {PROFILE}, against echo)")
    with running(load_profile(PROFILE), "echo", "buddy", "zone") as services:
        asyncio.run(_measure(report, services["echo"].address, services["zone"].address))
