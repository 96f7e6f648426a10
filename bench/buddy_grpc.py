"""The buddy service over gRPC against an echo service on the same bootstrap.

Both run as their own processes, started by this benchmark, so the ratio says
what the buddy's own work costs on top of a gRPC call that does nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from bench.report import Report
from bench.rounds import TimedPair, add_paired, bulk_rounds, echo_call, paired_rounds, warm_up
from bench.services import running
from memsim.profiles.loader import load_profile
from memsim.runtime.channel import open_channel
from memsim.services.buddy.client import BuddyClient

BULK = 256
ZONE = "Normal"
GOAL = 0.85
BULK_GOAL = 100


async def _measure(report: Report, echo_addr: str, buddy_addr: str) -> None:
    async with open_channel(echo_addr) as echo_ch, open_channel(buddy_addr) as buddy_ch:
        echo = echo_call(echo_ch)
        buddy = BuddyClient(buddy_ch)
        await buddy.create_arena(0, ZONE, 4096, 225280)

        async def alloc_free() -> int:
            pfn = await buddy.alloc(0, ZONE, 0)
            await buddy.free(0, ZONE, [(pfn, 0)])
            return 2

        async def alloc_bulk() -> list[int]:
            return await buddy.alloc_bulk(0, ZONE, 0, BULK)

        async def free_bulk(pfns: Sequence[int]) -> None:
            await buddy.free_bulk(0, ZONE, 0, pfns)

        # warm up connections and caches
        await warm_up(echo, alloc_free, TimedPair(alloc_bulk, free_bulk))

        for in_flight in (1, 32):
            add_paired(
                report,
                await paired_rounds(in_flight, echo, alloc_free),
                echo=f"echo calls/s, {in_flight} in flight",
                rate=f"buddy alloc/free calls/s, {in_flight} in flight",
                ratio=f"buddy / echo calls/s, {in_flight} in flight",
                goal=GOAL,
            )

        await bulk_rounds(
            report,
            echo,
            alloc_bulk,
            free_bulk,
            calls=("AllocPagesBulk", "FreePagesBulk"),
            items=f"{BULK} order-0 pages",
            unit="pages/s",
            goal=BULK_GOAL,
        )


def run(report: Report) -> None:
    print("buddy over gRPC (own processes, against echo)")
    with running(load_profile("x86_32"), "echo", "buddy") as services:
        asyncio.run(_measure(report, services["echo"].address, services["buddy"].address))
