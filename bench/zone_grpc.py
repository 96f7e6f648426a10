"""The zone service over gRPC against an echo service on the same bootstrap.

Echo, buddy and zone run as their own processes, started by this benchmark. An
order-0 allocate+free on cpu 0 is served from the pcp list, so the ratio says
what the zone's own work costs on top of a gRPC call that does nothing.
"""

from __future__ import annotations

import asyncio

from bench.report import Report
from bench.rounds import add_paired, echo_call, paired_rounds, warm_up
from bench.services import running
from memsim.profiles.loader import load_profile
from memsim.runtime.channel import open_channel
from memsim.services.zone.client import ZoneClient
from memsim.services.zone.gfp import GFP_KERNEL

PROFILE = "x86_32"
GOAL = 0.8


async def _measure(report: Report, echo_addr: str, zone_addr: str) -> None:
    async with open_channel(echo_addr) as echo_ch, open_channel(zone_addr) as zone_ch:
        echo = echo_call(echo_ch)
        zone = ZoneClient(zone_ch)

        async def alloc_free() -> int:
            blocks = await zone.alloc(GFP_KERNEL, order=0, count=1, cpu=0)
            await zone.free(blocks, cpu=0)
            return 2

        await warm_up(echo, alloc_free)  # connections, caches and pcp lists

        for in_flight in (1, 32):
            add_paired(
                report,
                await paired_rounds(in_flight, echo, alloc_free),
                echo=f"echo calls/s, {in_flight} in flight (zone run)",
                rate=f"zone order-0 alloc/free calls/s, {in_flight} in flight",
                ratio=f"zone / echo calls/s, {in_flight} in flight",
                goal=GOAL,
            )


def run(report: Report) -> None:
    print(f"zone over gRPC (own processes, {PROFILE}, against echo)")
    with running(load_profile(PROFILE), "echo", "buddy", "zone") as services:
        asyncio.run(_measure(report, services["echo"].address, services["zone"].address))
