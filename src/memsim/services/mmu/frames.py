"""Which frames the MMU holds, by what they hold."""

from __future__ import annotations

from dataclasses import dataclass

from memsim.services.frames import Range, block_ranges, pfn_ranges
from memsim.services.mmu.core import Mmu
from memsim.services.mmu.frame_cache import FrameCache


@dataclass(frozen=True)
class MmuFrames:
    anon: list[Range]  # the LRU lists' frames
    shmem: list[Range]  # System V segments' frames
    page_tables: list[Range]  # live processes' table pages
    frame_cache: list[Range]  # the per-CPU frame lists
    blocks: list[Range]  # no MMU: the processes' blocks


def mmu_frames(mmu: Mmu, cache: FrameCache | None) -> MmuFrames:
    alive = mmu.alive()
    return MmuFrames(
        anon=pfn_ranges(
            pfn for lru in mmu.lru.values() for pfns in (lru.active, lru.inactive) for pfn in pfns
        ),
        shmem=pfn_ranges(mmu.shm_frames),
        page_tables=pfn_ranges(pfn for p in alive for pfn in p.mm.pt.tables.values()),
        frame_cache=pfn_ranges(cache.frames()) if cache is not None else [],
        blocks=block_ranges(block for p in alive for block in p.mm.blocks.values()),
    )
