"""The zone allocator in process, over LocalBuddy: how often it calls buddy,
and whether a 1 TiB machine costs per operation what a 1 GiB one does."""

from __future__ import annotations

import asyncio
import statistics
import time

from bench.report import Report, Result
from memsim.profiles.loader import load_profile
from memsim.services.buddy.local import LocalBuddy
from memsim.services.zone.allocator import ZoneAllocator
from memsim.services.zone.gfp import GFP_KERNEL
from memsim.services.zone.machine import Machine

ALLOCATIONS = 10_000
WARMUP = 1_000
# Allocate this many pages, then free them all: far more than a pcp list holds
# (high 186), so the list refills from buddy on the way up and drains to it on
# the way down, batch pages per call, as a zone under real churn does.
WAVE = 1_000
PAIRS = 20_000
ROUNDS = 5
ZONE = (0, "Normal")


async def _pairs(allocator: ZoneAllocator, pairs: int) -> None:
    """Order-0 alloc+free pairs on cpu 0: GFP_KERNEL, then FreePages of that block."""
    for _ in range(pairs):
        (allocation,) = await allocator.alloc_pages(GFP_KERNEL, 0, 1, cpu=0)
        await allocator.free_pages([(allocation.pfns[0], 0)], cpu=0)


async def _waves(allocator: ZoneAllocator, allocations: int) -> None:
    """Waves of WAVE order-0 allocations on cpu 0, each followed by freeing them all."""
    for _ in range(allocations // WAVE):
        held = [
            (await allocator.alloc_pages(GFP_KERNEL, 0, 1, cpu=0))[0].pfns[0] for _ in range(WAVE)
        ]
        await allocator.free_pages([(pfn, 0) for pfn in held], cpu=0)


async def _buddy_calls(report: Report) -> None:
    buddy = LocalBuddy()
    allocator = ZoneAllocator(Machine(load_profile("x86_32")), buddy)
    await allocator.boot()
    try:
        await _waves(allocator, WARMUP)
        before = buddy.calls
        await _waves(allocator, ALLOCATIONS)
        calls = buddy.calls - before
        batch = allocator.machine.zones[ZONE].pcp[0][0].batch
    finally:
        await allocator.stop()
    goal = 2 * ALLOCATIONS / batch
    report.add(
        Result(
            f"zone->buddy calls per {ALLOCATIONS:,} order-0 allocs (x86_32, batch {batch})",
            calls,
            "calls",
            f"<= {goal:.0f}",
            calls <= goal,
            detail=f"goal 2 x {ALLOCATIONS} / batch {batch} = {goal:.1f}",
        )
    )


async def _boot(mem: str) -> tuple[ZoneAllocator, float]:
    start = time.perf_counter()
    allocator = ZoneAllocator(Machine(load_profile("x86_64", mem=mem)), LocalBuddy())
    await allocator.boot()
    return allocator, time.perf_counter() - start


async def _rate(allocator: ZoneAllocator) -> float:
    start = time.perf_counter()
    await _pairs(allocator, PAIRS)
    return PAIRS / (time.perf_counter() - start)


async def _scaling(report: Report) -> None:
    small, _ = await _boot("1G")
    large, boot_s = await _boot("1T")
    try:
        await _pairs(small, WARMUP)
        await _pairs(large, WARMUP)
        rates: dict[str, list[float]] = {"1G": [], "1T": []}
        for _ in range(ROUNDS):  # interleaved so that machine noise hits both alike
            rates["1G"].append(await _rate(small))
            rates["1T"].append(await _rate(large))
    finally:
        await small.stop()
        await large.stop()
    g, t = statistics.median(rates["1G"]), statistics.median(rates["1T"])
    report.add(Result("zone order-0 alloc+free pairs/s, x86_64 1 GiB", g, "pairs/s"))
    report.add(Result("zone order-0 alloc+free pairs/s, x86_64 1 TiB", t, "pairs/s"))
    ratio = g / t  # time per op on 1 TiB over time per op on 1 GiB
    report.add(Result("zone per-op time 1 TiB / 1 GiB", ratio, "ratio", "<= 1.3", ratio <= 1.3))
    report.add(Result("zone boot of a 1 TiB x86_64 machine", boot_s * 1000, "ms"))


def run(report: Report) -> None:
    print("zone core (in process, LocalBuddy)")
    asyncio.run(_buddy_calls(report))
    asyncio.run(_scaling(report))
