"""Audit finds each kind of corruption, and nothing in a sound arena."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from memsim.services.buddy.arena import Arena, ArenaSpec
from memsim.services.buddy.audit import audit_arena


def busy_arena() -> Arena:
    arena = Arena(ArenaSpec(node=0, zone="Normal", start_pfn=0, pages=64, max_order=4))
    arena.alloc(0)  # pfn 0; leaves 1 (o0), 2 (o1), 4 (o2) free
    arena.alloc(2)  # pfn 4
    return arena


def test_sound_arena_has_no_problems() -> None:
    report = audit_arena(busy_arena())
    assert report.problems == []
    # free: 1, 2 and the boot run 8..64 (7 blocks of order 3); allocated: 0, 4.
    assert report.blocks_checked == 2 + 7 + 2


def overlap(arena: Arena) -> None:
    arena.free_area[0].add(5)  # inside the allocated order-2 block at 4


def unmerged(arena: Arena) -> None:
    arena.free([(0, 0)])  # merges with 1, then with 2
    arena.free_area[0].add(0)  # put two free order-0 buddies back by hand
    arena.free_area[0].add(1)
    arena.free_area[2].discard(0)


def misaligned(arena: Arena) -> None:
    arena.free_area[1].discard(2)
    arena.free_area[1].add(3)


def wrong_count(arena: Arena) -> None:
    arena.free_area[2].nr_free += 1


def outside(arena: Arena) -> None:
    arena.allocated[200] = 0


CORRUPTIONS: list[tuple[Callable[[Arena], None], str]] = [
    (overlap, "allocated block at pfn 4 order 2 overlaps free block at pfn 5 order 0"),
    (unmerged, "free buddies at pfn 0 and 1 of order 0 were not merged"),
    (misaligned, "free block at pfn 3 order 1 is not aligned to order 1"),
    (wrong_count, "free_area[2].nr_free is 1 but 0 blocks are on the list"),
    (outside, "allocated block at pfn 200 order 0 lies outside [0, 64)"),
]


@pytest.mark.parametrize(
    ("corrupt", "expected"), CORRUPTIONS, ids=[c.__name__ for c, _ in CORRUPTIONS]
)
def test_audit_reports_corruption(corrupt: Callable[[Arena], None], expected: str) -> None:
    arena = busy_arena()
    corrupt(arena)
    problems = audit_arena(arena).problems
    assert any(expected in p for p in problems), problems
