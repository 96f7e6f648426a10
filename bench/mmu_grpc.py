"""The MMU service over gRPC against an echo service on the same bootstrap.

Echo, buddy, zone and mmu run as their own processes, started by this
benchmark. A first touch plans the faults, takes frames and table pages from
the MMU's per-CPU lists (or, when they are short, from the zone in one call
that refills them) and maps them, so the ratios say what demand paging costs
on top of a gRPC call that does nothing. Only the Touch calls are timed: the
mmap and munmap around them are not.

The goals are measured as a process runs that maps, touches and unmaps: the
frames munmap frees serve the next touch. A second figure (no goal) keeps
every mapping until the round ends, so each touch refills from the zone.
"""

from __future__ import annotations

import asyncio
import functools
import time

from bench.report import Report, Result
from bench.rounds import Call, add_paired, calls_per_second, echo_call, paired_rates, warm_up
from bench.services import running
from memsim.mmu.v1 import mmu_pb2 as pb
from memsim.mmu.v1 import mmu_pb2_grpc
from memsim.profiles.loader import load_profile
from memsim.runtime.channel import open_channel
from memsim.services.mmu.client import MmuClient
from memsim.services.mmu.vma import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE

PROFILE = "x86_64"
MEM = "4G"  # frames never run out: no reclaim, and no swap (MEMSIM_SWAP=0)
BULK_BYTES = 1 << 20  # 256 pages in one Touch
SINGLE_REGION = 16 << 20  # mapped once; its pages are touched one per call
BULK_GOAL = 100
SINGLE_GOAL = 0.4


async def _measure(report: Report, echo_addr: str, mmu_addr: str, page: int) -> None:
    async with open_channel(echo_addr) as echo_ch, open_channel(mmu_addr) as mmu_ch:
        echo = echo_call(echo_ch)
        mmu = mmu_pb2_grpc.MmuStub(mmu_ch)
        pid, token = await MmuClient(mmu_ch).create_process("bench")
        caller = pb.Caller(pid=pid, token=token)

        async def mmap(length: int) -> int:
            response = await mmu.Mmap(
                pb.MmapRequest(
                    caller=caller,
                    length_bytes=length,
                    prot=PROT_READ | PROT_WRITE,
                    flags=MAP_PRIVATE | MAP_ANONYMOUS,
                )
            )
            return response.address

        async def munmap(address: int, length: int) -> None:
            await mmu.Munmap(pb.MunmapRequest(caller=caller, address=address, length_bytes=length))

        async def touch(address: int, length: int) -> float:
            """One Touch (write) of fresh pages: the seconds it took."""
            start = time.perf_counter()
            response = await mmu.Touch(
                pb.TouchRequest(caller=caller, address=address, length_bytes=length)
            )
            seconds = time.perf_counter() - start
            assert response.signal == 0, response.fault_reason
            assert response.minor_faults == length // page, response.minor_faults
            return seconds

        touch_s = 0.0
        touches = 0

        async def bulk() -> int:
            """mmap 1 MiB, Touch all of it (timed), munmap."""
            nonlocal touch_s, touches
            address = await mmap(BULK_BYTES)
            touch_s += await touch(address, BULK_BYTES)
            touches += 1
            await munmap(address, BULK_BYTES)
            return 1

        kept: list[int] = []

        async def bulk_cold() -> int:
            """mmap 1 MiB and Touch it (timed); the mapping stays until the round ends."""
            nonlocal touch_s, touches
            address = await mmap(BULK_BYTES)
            kept.append(address)
            touch_s += await touch(address, BULK_BYTES)
            touches += 1
            return 1

        region = await mmap(SINGLE_REGION)
        offset = 0

        async def single() -> int:
            """Touch the next untouched page of the region (timed); remap when used up."""
            nonlocal touch_s, touches, region, offset
            if offset == SINGLE_REGION:
                await munmap(region, SINGLE_REGION)
                region, offset = await mmap(SINGLE_REGION), 0
            touch_s += await touch(region + offset, page)
            offset += page
            touches += 1
            return 1

        async def pages_per_second(fn: Call, pages_per_touch: int) -> float:
            """One window of `fn`: the pages its Touch calls faulted in per second of them;
            the mappings bulk_cold kept are unmapped after."""
            nonlocal touch_s, touches
            touch_s, touches = 0.0, 0
            await calls_per_second(1, fn)
            rate = touches * pages_per_touch / touch_s
            while kept:
                await munmap(kept.pop(), BULK_BYTES)
            return rate

        echo_rate = functools.partial(calls_per_second, 1, echo)
        await warm_up(echo, bulk, single)  # connections, caches and pcp lists

        add_paired(
            report,
            await paired_rates(
                echo_rate, functools.partial(pages_per_second, bulk, BULK_BYTES // page)
            ),
            echo="echo calls/s, 1 in flight (mmu bulk run)",
            rate=f"mmu first touch of {BULK_BYTES >> 20} MiB in one Touch, pages/s",
            ratio="mmu 1 MiB first-touch pages/s / echo calls/s",
            goal=BULK_GOAL,
            unit="pages/s",
        )

        cold = await paired_rates(
            echo_rate, functools.partial(pages_per_second, bulk_cold, BULK_BYTES // page)
        )
        report.add(Result("echo calls/s, 1 in flight (mmu bulk cold run)", cold.echo, "calls/s"))
        report.add(
            Result(
                "mmu 1 MiB first touch, every touch refilling from zone, / echo",
                cold.ratio,
                "ratio",
                detail=f"{cold.rate:.0f} pages/s",
            )
        )

        add_paired(
            report,
            await paired_rates(echo_rate, functools.partial(pages_per_second, single, 1)),
            echo="echo calls/s, 1 in flight (mmu single run)",
            rate="mmu single-page first Touch calls/s, 1 in flight",
            ratio="mmu single-page first Touch / echo calls/s",
            goal=SINGLE_GOAL,
        )


def run(report: Report) -> None:
    print(f"mmu over gRPC (own processes, {PROFILE} {MEM}, against echo)")
    profile = load_profile(PROFILE, mem=MEM)
    with running(profile, "echo", "buddy", "zone", "mmu") as services:
        asyncio.run(
            _measure(report, services["echo"].address, services["mmu"].address, profile.page_size)
        )
