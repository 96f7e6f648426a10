"""The MMU core in process: what a resident page costs the service in memory.

No zone: frames are numbered here, from the Normal zone up, as the zone would
hand them out. They are made inside the measured window because the service
keeps them (as LRU keys and in ptes), as it keeps the ones the zone sends.
"""

from __future__ import annotations

import tracemalloc

from bench.report import Report, Result
from memsim.profiles.loader import load_profile
from memsim.services.mmu.core import Mmu
from memsim.services.mmu.process import Process
from memsim.services.mmu.vma import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE

PROFILE = "x86_64"
MEM = "16G"
REGION = 256 << 20
STEP = 1 << 20
GOAL = 200


class FakeFrames:
    """Order-0 frames numbered in turn from the first frame of the Normal zone."""

    def __init__(self, mmu: Mmu) -> None:
        self.next = mmu.layout.zones[(0, "Normal")].start_pfn

    def take(self, count: int) -> list[int]:
        start = self.next
        self.next += count
        return list(range(start, start + count))


def _touch_all(mmu: Mmu, frames: FakeFrames, proc: Process, address: int) -> int:
    """Write-faults every page of [address, address + REGION) in STEP batches, no
    bytes written; returns the pages faulted in."""
    pages = 0
    for at in range(address, address + REGION, STEP):
        plan = mmu.plan_access(proc, at, STEP, write=True)
        assert plan.segfault is None, plan.segfault
        released = mmu.apply_access(
            proc, plan, frames.take(plan.frames_needed), frames.take(len(plan.tables))
        )
        assert not released.frames, "apply_access gave frames back"
        pages += len(plan.pages)
    return pages


def _measure(report: Report) -> None:
    tracemalloc.start()
    try:
        mmu = Mmu(load_profile(PROFILE, mem=MEM))
        frames = FakeFrames(mmu)
        parent = mmu.create_process("bench", 0, 0, 0, set(), [], frames.take(mmu.plan_create()))
        address, _ = mmu.mmap(
            parent, 0, REGION, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS
        )
        before, _ = tracemalloc.get_traced_memory()
        pages = _touch_all(mmu, frames, parent, address)
        touched, _ = tracemalloc.get_traced_memory()
        tables = frames.take(mmu.plan_fork(parent))
        mmu.fork(parent, "child", tables)
        forked, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert pages == REGION // mmu.page_size, pages
    assert parent.mm.rss == pages, parent.mm.rss
    per_page = (touched - before) / pages
    report.add(
        Result(
            f"mmu bytes per resident unwritten page ({pages:,} pages, {PROFILE} {MEM})",
            per_page,
            "bytes",
            f"<= {GOAL}",
            per_page <= GOAL,
            detail=f"tracemalloc delta {touched - before} bytes over {pages} write faults",
        )
    )
    fork_per_page = (forked - touched) / pages
    report.add(
        Result(
            "mmu bytes per page a fork adds (pages shared by 2 processes)",
            fork_per_page,
            "bytes",
            detail=(
                f"tracemalloc delta {forked - touched} bytes for fork of {pages} pages; "
                f"{(forked - before) / pages:.1f} bytes per page in all"
            ),
        )
    )
    report.add(
        Result(
            "mmu bytes per resident page after fork (parent + child)",
            (forked - before) / pages,
            "bytes",
        )
    )


def run(report: Report) -> None:
    print(f"mmu core (in process, {PROFILE} {MEM}, frames numbered by the benchmark)")
    _measure(report)
