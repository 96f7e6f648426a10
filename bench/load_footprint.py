"""What the services cost, in memory and CPU, per simulated process and per
resident page, as the workload grows ten-fold.

Buddy, policy, zone, mmu and slab run as their own processes, started by this
benchmark. Simulated processes are made with the process client library
(memsim.clients.process): each is spawned, maps PAGES private anonymous pages
and writes to every one of them (Touch, 1 MiB at a time), so that it holds
PAGES resident pages to the end. First 10 such processes, then 90 more: 100.
Each service's resident set (psutil RSS) and CPU time (user + system, every
thread) are read before the first process, after the 10th and after the 100th;
nothing is freed in between, so the growth from 10 to 100 is not hidden by
memory the services freed and took back.

Rows: for buddy, zone and mmu, RSS per resident page at 10 and at 100
processes (bytes per simulated process in the detail: every process holds the
same PAGES pages, so per process is per page times PAGES) and the ratio of the
per-page cost at 100 processes to that at 10, in RSS and in CPU (the CPU per
page and per process in the detail); a linear service has ratios of 1. Policy
and slab are not on the page-fault path: one row each, what they grew by. Then
all services together per simulated process, at 10 and at 100.

The goal, <= 1.5: a cost per page that grows with the number of pages is what
this catches (a quadratic one would show ~10 here). Linear structures grow in
steps - a Python dict or list is resized by a factor of 2 to 4 - so the
per-page cost of the containers alone can differ by up to ~2x between two
sizes. The objects per page (page-table entries, frames, LRU entries) do not,
and dominate, so a linear service stays well inside 1.5 while anything growing
as pages x processes does not. The goal applies where the cost at 10 processes
is large enough to measure: at least MIN_RSS_BYTES of RSS (allocator arenas and
page-granular RSS make smaller growth noise) and MIN_CPU_S of CPU (the kernel
counts CPU time in 10 ms ticks); below that the ratio is shown without a goal.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import psutil

from bench.report import Report, Result
from bench.services import running
from memsim.clients.cli.state import ServiceRecord
from memsim.clients.process.process import Process
from memsim.mmu.v1 import mmu_pb2_grpc
from memsim.profiles.loader import load_profile
from memsim.runtime.channel import open_channel
from memsim.services.mmu.client import MmuClient

PROFILE = "x86_64"
MEM = "4G"  # 100 x 16 MiB resident fits with room to spare: no reclaim, no swap
SERVICES = ("buddy", "policy", "zone", "mmu", "slab")
# The services a resident page costs something: rows per page and ratios. The
# others (not on the page-fault path) get one row: what they grew by in all.
PAGE_PATH = ("buddy", "zone", "mmu")
SIZES = (10, 100)  # simulated processes, ten-fold
PAGES = 4096  # resident pages per simulated process (16 MiB of 4 KiB pages)
TOUCH_BYTES = 1 << 20  # per Touch call
CONCURRENT = 4  # processes being set up at once
GOAL = 1.5
MIN_RSS_BYTES = 2 << 20
MIN_CPU_S = 0.1
CALL_DEADLINE_S = 60.0
SETUP_TIMEOUT_S = 120.0  # the whole set-up of 100 processes, a bound


@dataclass(frozen=True)
class Usage:
    rss: int  # bytes
    cpu_s: float


def usage(processes: dict[str, psutil.Process]) -> dict[str, Usage]:
    out: dict[str, Usage] = {}
    for name, process in processes.items():
        times = process.cpu_times()
        out[name] = Usage(process.memory_info().rss, times.user + times.system)
    return out


async def _hold(mmu: mmu_pb2_grpc.MmuAsyncStub, index: int, page: int) -> Process:
    """A process that maps PAGES pages and writes every one: they stay resident."""
    process = await Process.spawn(mmu, f"hold{index}", uid=1000)
    length = PAGES * page
    address = await process.mmap(length)
    faults = 0
    for offset in range(0, length, TOUCH_BYTES):
        faults += (await process.touch(address + offset, min(TOUCH_BYTES, length - offset))).minor
    assert faults == PAGES, f"{faults} faults for {PAGES} pages"
    return process


async def _grow(mmu: mmu_pb2_grpc.MmuAsyncStub, first: int, last: int, page: int) -> None:
    """Processes first..last-1, CONCURRENT at a time."""
    limit = asyncio.Semaphore(CONCURRENT)

    async def one(index: int) -> None:
        async with limit:
            await _hold(mmu, index, page)

    await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(first, last))), SETUP_TIMEOUT_S)


def _per(value: float, count: int) -> float:
    return value / count if count else 0.0


def _ratio(big: float, small: float) -> float:
    return big / small if small > 0 else 0.0


async def _measure(report: Report, services: dict[str, ServiceRecord], page: int) -> None:
    watched = {name: psutil.Process(services[name].pid) for name in SERVICES}
    async with open_channel(services["mmu"].address, deadline_s=CALL_DEADLINE_S) as channel:
        mmu = mmu_pb2_grpc.MmuStub(channel)
        # Warm: code paths, connections, the MMU's per-CPU lists; one small
        # process that exits (a few pages the services may keep for reuse).
        warm = await Process.spawn(mmu, "warm", uid=1000)
        address = await warm.mmap(16 * page)
        await warm.touch(address, 16 * page)
        await warm.exit()
        anon_start = (await MmuClient(channel).stats()).anon_pages

        readings = [usage(watched)]
        wall = [time.perf_counter()]
        made = 0
        for size in SIZES:
            await _grow(mmu, made, size, page)
            made = size
            readings.append(usage(watched))
            wall.append(time.perf_counter())
        anon = (await MmuClient(channel).stats()).anon_pages - anon_start
        assert anon == SIZES[-1] * PAGES, f"{anon} anonymous pages for {SIZES[-1] * PAGES}"

    base = readings[0]
    rss: dict[str, list[float]] = {name: [] for name in SERVICES}  # bytes per page, by size
    cpu: dict[str, list[float]] = {name: [] for name in SERVICES}  # seconds per page
    grown_rss: dict[str, list[int]] = {name: [] for name in SERVICES}
    grown_cpu: dict[str, list[float]] = {name: [] for name in SERVICES}
    for name in SERVICES:
        for size, reading in zip(SIZES, readings[1:], strict=True):
            pages = size * PAGES
            grown_rss[name].append(reading[name].rss - base[name].rss)
            grown_cpu[name].append(reading[name].cpu_s - base[name].cpu_s)
            rss[name].append(_per(grown_rss[name][-1], pages))
            cpu[name].append(_per(grown_cpu[name][-1], pages))

    small, big = SIZES
    for name in PAGE_PATH:
        for i, size in enumerate(SIZES):
            report.add(
                Result(
                    f"{name} RSS per resident page, {size} processes x {PAGES} pages",
                    rss[name][i],
                    "bytes",
                    detail=f"{_per(grown_rss[name][i], size):.0f} bytes per process; "
                    f"+{grown_rss[name][i] / 2**20:.1f} MiB in all",
                )
            )
        measurable = grown_rss[name][0] >= MIN_RSS_BYTES
        ratio = _ratio(rss[name][1], rss[name][0])
        report.add(
            Result(
                f"{name} RSS per page, {big} / {small} processes",
                ratio,
                "ratio",
                f"<= {GOAL:g}" if measurable else "",
                ratio <= GOAL if measurable else None,
            )
        )
        measurable = grown_cpu[name][0] >= MIN_CPU_S
        ratio = _ratio(cpu[name][1], cpu[name][0])
        report.add(
            Result(
                f"{name} CPU per page, {big} / {small} processes",
                ratio,
                "ratio",
                f"<= {GOAL:g}" if measurable else "",
                ratio <= GOAL if measurable else None,
                detail="; ".join(
                    f"{cpu[name][i] * 1e6:.2f} us per page "
                    f"({_per(grown_cpu[name][i], size) * 1e3:.1f} ms per process) at {size}"
                    for i, size in enumerate(SIZES)
                ),
            )
        )
    for name in SERVICES:
        if name in PAGE_PATH:
            continue
        report.add(
            Result(
                f"{name} RSS growth, {big} processes x {PAGES} pages",
                grown_rss[name][1] / 2**10,
                "KiB",
                detail=f"CPU {grown_cpu[name][1] * 1e3:.0f} ms; "
                f"{small} processes: {grown_rss[name][0] / 2**10:.0f} KiB, "
                f"CPU {grown_cpu[name][0] * 1e3:.0f} ms",
            )
        )
    for i, size in enumerate(SIZES):
        total_rss = sum(grown_rss[name][i] for name in SERVICES)
        total_cpu = sum(grown_cpu[name][i] for name in SERVICES)
        report.add(
            Result(
                f"all services RSS per simulated process, {size} processes",
                _per(total_rss, size) / 2**10,
                "KiB",
                detail=f"{_per(total_rss, size * PAGES):.1f} bytes per page; "
                f"{_per(total_cpu, size) * 1e3:.1f} ms CPU per process; "
                f"set-up {wall[i + 1] - wall[i]:.1f} s",
            )
        )


def run(report: Report) -> None:
    print(f"service footprint as the load grows ten-fold (own processes, {PROFILE} {MEM})")
    profile = load_profile(PROFILE, mem=MEM)
    with running(profile, "buddy", "policy", "zone", "mmu", "slab") as services:
        asyncio.run(_measure(report, services, profile.page_size))
