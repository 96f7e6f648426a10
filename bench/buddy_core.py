"""The buddy core in process: a 1 TiB arena must cost what a 1 GiB one does."""

from __future__ import annotations

import gc
import statistics
import time
import tracemalloc

import psutil

from bench.report import Report, Result
from memsim.services.buddy.allocator import BuddyAllocator
from memsim.services.buddy.arena import Arena, ArenaSpec

GIB_PAGES = (1 << 30) >> 12
TIB_PAGES = (1 << 40) >> 12
PAIRS = 20_000
WORKING_SET = 2_000
ROUNDS = 5


def _pairs_per_second(arena: Arena) -> float:
    """Order-0 alloc+free pairs with a working set held, as a zone under load."""
    held = arena.alloc_bulk(0, WORKING_SET)
    start = time.perf_counter()
    for i in range(PAIRS):
        pfn = arena.alloc(0)
        arena.free(((held[i % WORKING_SET], 0),))
        held[i % WORKING_SET] = pfn
    elapsed = time.perf_counter() - start
    arena.free((pfn, 0) for pfn in held)
    return PAIRS / elapsed


def run(report: Report) -> None:
    print("buddy core (in process)")
    small = Arena(ArenaSpec(0, "Normal", 0, GIB_PAGES))
    large = Arena(ArenaSpec(0, "Normal", 0, TIB_PAGES))
    rates: dict[str, list[float]] = {"1G": [], "1T": []}
    for _ in range(ROUNDS):  # interleaved so that machine noise hits both alike
        rates["1G"].append(_pairs_per_second(small))
        rates["1T"].append(_pairs_per_second(large))
    g, t = statistics.median(rates["1G"]), statistics.median(rates["1T"])
    report.add(Result("order-0 alloc+free pairs/s, 1 GiB arena", g, "pairs/s"))
    report.add(Result("order-0 alloc+free pairs/s, 1 TiB arena", t, "pairs/s"))
    ratio = g / t  # time per op on 1 TiB over time per op on 1 GiB
    report.add(Result("per-op time 1 TiB / 1 GiB", ratio, "ratio", "<= 1.3", ratio <= 1.3))

    gc.collect()
    process = psutil.Process()
    rss_before = process.memory_info().rss
    tracemalloc.start()
    start = time.perf_counter()
    allocator = BuddyAllocator()
    allocator.create_arena(ArenaSpec(0, "Normal", 0, TIB_PAGES))
    boot_s = time.perf_counter() - start
    traced, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_mib = (process.memory_info().rss - rss_before) / (1 << 20)
    report.add(Result("boot of a 1 TiB arena", boot_s * 1000, "ms", "<= 1000", boot_s <= 1.0))
    report.add(
        Result(
            "resident memory added by a 1 TiB arena (RSS)", rss_mib, "MiB", "<= 50", rss_mib <= 50
        )
    )
    report.add(Result("Python heap added by a 1 TiB arena (tracemalloc)", traced / 1024, "KiB"))
