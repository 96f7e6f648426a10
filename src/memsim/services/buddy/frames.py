"""Which frames an arena holds free: its free_area lists as ranges of pages."""

from __future__ import annotations

from memsim.services.buddy.arena import Arena
from memsim.services.frames import Range, merge_ranges


def free_block_ranges(arena: Arena) -> list[list[Range]]:
    """Indexed by order: the pages of that order's free blocks, merged into
    ranges (each a whole number of blocks). Boot runs stay one range each."""
    lists = []
    for area in arena.free_area:
        ranges = [(pfn, area.block_pages) for pfn in area.blocks]
        ranges += [(start, end - start) for start, end in area.runs]
        lists.append(merge_ranges(ranges))
    return lists
