"""Sets of page frames as ranges: how the services' Get*Frames calls report
the frames they hold (common.v1.PfnRanges), so that a client can tell what
holds every frame of the machine (`memsim plot memory-map`).

A set is sent as sorted, disjoint, non-adjacent ranges (start_pfn, count),
packed: a boot run of a million free pages is one pair, a scattered list
costs a few bytes a frame.
"""

from __future__ import annotations

from collections.abc import Iterable

from memsim.common.v1 import common_pb2

Range = tuple[int, int]  # (start_pfn, count)


def merge_ranges(ranges: Iterable[Range]) -> list[Range]:
    """Sorted, with overlapping and adjacent ranges joined; empty ones dropped."""
    merged: list[list[int]] = []
    for start, count in sorted(r for r in ranges if r[1] > 0):
        if merged and start <= merged[-1][0] + merged[-1][1]:
            last = merged[-1]
            last[1] = max(last[1], start + count - last[0])
        else:
            merged.append([start, count])
    return [(start, count) for start, count in merged]


def pfn_ranges(pfns: Iterable[int]) -> list[Range]:
    """Single frames as ranges."""
    return merge_ranges((pfn, 1) for pfn in pfns)


def block_ranges(blocks: Iterable[tuple[int, int]]) -> list[Range]:
    """(pfn, order) blocks as ranges of their pages."""
    return merge_ranges((pfn, 1 << order) for pfn, order in blocks)


def ranges_message(ranges: Iterable[Range]) -> common_pb2.PfnRanges:
    """ranges (already merged) as the proto message."""
    message = common_pb2.PfnRanges()
    for start, count in ranges:
        message.start_pfns.append(start)
        message.counts.append(count)
    return message


def message_ranges(message: common_pb2.PfnRanges) -> list[Range]:
    """The ranges of a PfnRanges message; ValueError if its two lists differ in length."""
    if len(message.start_pfns) != len(message.counts):
        raise ValueError(
            f"PfnRanges has {len(message.start_pfns)} start_pfns but {len(message.counts)} counts"
        )
    return list(zip(message.start_pfns, message.counts, strict=True))


def total_pages(ranges: Iterable[Range]) -> int:
    return sum(count for _, count in ranges)
