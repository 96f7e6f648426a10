"""Audit finds each kind of corruption, and nothing in a sound arena."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from memsim.services.buddy.allocator import BuddyAllocator
from memsim.services.buddy.arena import Arena, ArenaSpec
from memsim.services.buddy.audit import audit_arena

NAME = "node 0 zone Normal"


def busy_arena() -> Arena:
    """64 pages at pfn 0, MAX_ORDER 4. Allocated: 0 (order 0), 4 (order 2).
    Free: 1 (order 0), 2 (order 1), the boot run 8..64 (7 blocks of order 3)."""
    arena = Arena(ArenaSpec(node=0, zone="Normal", start_pfn=0, pages=64, max_order=4))
    assert arena.alloc(0) == 0  # leaves 1 (o0), 2 (o1), 4 (o2) free
    assert arena.alloc(2) == 4
    assert arena.nr_free() == [1, 1, 0, 7]
    return arena


def test_sound_arena_has_no_problems() -> None:
    report = audit_arena(busy_arena())
    assert report.problems == []
    # free: 1, 2 and the boot run 8..64 (7 blocks of order 3); allocated: 0, 4.
    assert report.blocks_checked == 2 + 7 + 2


def test_fresh_arenas_have_no_problems() -> None:
    unaligned = audit_arena(Arena(ArenaSpec(0, "DMA", 3, 1000, max_order=4)))
    assert unaligned.problems == []
    assert unaligned.blocks_checked == 2 + 1 + 1 + 124
    huge = audit_arena(Arena(ArenaSpec(0, "Normal", 0, 1 << 28)))
    assert huge.problems == []
    assert huge.blocks_checked == 1 << 18


def test_arena_after_a_workload_and_after_freeing_it_has_no_problems() -> None:
    arena = Arena(ArenaSpec(0, "Normal", 5, 300, max_order=6))
    held = [(arena.alloc(o % 6), o % 6) for o in range(12)]
    held += [(pfn, 1) for pfn in arena.alloc_bulk(1, 20)]
    assert audit_arena(arena).problems == []
    arena.free(held[::2])
    assert audit_arena(arena).problems == []
    arena.free(held[1::2])
    assert audit_arena(arena).problems == []
    assert arena.nr_free() == Arena(arena.spec).nr_free()


def free_overlaps_allocated(arena: Arena) -> None:
    arena.free_area[0].add(5)  # inside the allocated order-2 block at 4


def free_overlaps_free_run(arena: Arena) -> None:
    arena.free_area[0].add(9)  # inside the boot run's first block, 8..16


def free_overlaps_free_block(arena: Arena) -> None:
    arena.free_area[0].add(3)  # the upper page of the free order-1 block at 2


def allocated_overlaps_free(arena: Arena) -> None:
    arena.allocated[2] = 0  # the first page of the free order-1 block at 2
    arena.allocated_pages += 1


def unmerged(arena: Arena) -> None:
    arena.free([(0, 0)])  # merges with 1, then with 2
    arena.free_area[0].add(0)  # put two free order-0 buddies back by hand
    arena.free_area[0].add(1)
    arena.free_area[2].discard(0)


def misaligned(arena: Arena) -> None:
    # Free pages 1, 2, 3 relisted as 1 (order 1, covering 1-2) and 3 (order 0):
    # the same pages, so only the alignment is wrong.
    arena.free_area[0].discard(1)
    arena.free_area[1].discard(2)
    arena.free_area[1].add(1)
    arena.free_area[0].add(3)


def misaligned_and_overlapping(arena: Arena) -> None:
    # Order 1 at 3 covers 3-4, and 4 is the allocated order-2 block; page 2 is lost
    # and page 4 counted twice, so the total still matches.
    arena.free_area[1].discard(2)
    arena.free_area[1].add(3)


def misaligned_run(arena: Arena) -> None:
    arena.free_area[3].runs[0][0] = 12


def wrong_count(arena: Arena) -> None:
    arena.free_area[2].nr_free += 1


def outside(arena: Arena) -> None:
    arena.allocated[200] = 0


def lost_block(arena: Arena) -> None:
    arena.free_area[1].discard(2)  # forgotten: neither free nor allocated


def wrong_allocated_pages(arena: Arena) -> None:
    arena.allocated_pages += 1


# Each corruption and the exact problems it must produce. A page listed twice
# also breaks the page count: the free lists then hold 65 pages, or 57 with
# one order-1 block lost.
CORRUPTIONS: list[tuple[Callable[[Arena], None], list[str]]] = [
    (
        free_overlaps_allocated,
        [
            "allocated block at pfn 4 order 2 overlaps free block at pfn 5 order 0",
            "60 free + 5 allocated pages != 64 pages in the arena",
        ],
    ),
    (
        free_overlaps_free_run,
        [
            "free run [8, 64) of order 3 overlaps free block at pfn 9 order 0",
            "60 free + 5 allocated pages != 64 pages in the arena",
        ],
    ),
    (
        free_overlaps_free_block,
        [
            "free block at pfn 2 order 1 overlaps free block at pfn 3 order 0",
            "60 free + 5 allocated pages != 64 pages in the arena",
        ],
    ),
    (
        allocated_overlaps_free,
        [
            # Sorted by pfn, (2, 1, allocated) comes before (2, 2, free).
            "allocated block at pfn 2 order 0 overlaps free block at pfn 2 order 1",
            "59 free + 6 allocated pages != 64 pages in the arena",
        ],
    ),
    (
        unmerged,
        [
            "free buddies at pfn 0 and 1 of order 0 were not merged",
            "58 free + 4 allocated pages != 64 pages in the arena",
        ],
    ),
    (misaligned, ["free block at pfn 1 order 1 is not aligned to order 1"]),
    (
        misaligned_and_overlapping,
        [
            "free block at pfn 3 order 1 is not aligned to order 1",
            "free block at pfn 3 order 1 overlaps allocated block at pfn 4 order 2",
        ],
    ),
    (
        misaligned_run,
        [
            "free run [12, 60) of order 3 is not aligned to order 3",
            "free_area[3].nr_free is 7 but 6 blocks are on the list",
            "51 free + 5 allocated pages != 64 pages in the arena",
        ],
    ),
    (
        wrong_count,
        ["free_area[2].nr_free is 1 but 0 blocks are on the list"],
    ),
    (
        outside,
        [
            "allocated block at pfn 200 order 0 lies outside [0, 64)",
            "allocated_pages is 5 but the allocated blocks hold 6",
            "59 free + 6 allocated pages != 64 pages in the arena",
        ],
    ),
    (lost_block, ["57 free + 5 allocated pages != 64 pages in the arena"]),
    (wrong_allocated_pages, ["allocated_pages is 6 but the allocated blocks hold 5"]),
]


@pytest.mark.parametrize(
    ("corrupt", "expected"), CORRUPTIONS, ids=[c.__name__ for c, _ in CORRUPTIONS]
)
def test_audit_reports_corruption(corrupt: Callable[[Arena], None], expected: list[str]) -> None:
    arena = busy_arena()
    corrupt(arena)
    problems = audit_arena(arena).problems
    assert sorted(problems) == sorted(f"{NAME}: {line}" for line in expected)


def test_allocator_audit_covers_every_arena_in_order() -> None:
    allocator = BuddyAllocator()
    high = allocator.create_arena(ArenaSpec(1, "Normal", 0, 16, max_order=5))
    low = allocator.create_arena(ArenaSpec(0, "DMA", 16, 16, max_order=5))
    assert [r.problems for r in allocator.audit()] == [[], []]
    high.free_area[0].add(3)  # inside the free order-4 block at 0
    low.alloc(0)
    reports = allocator.audit()
    # Node 0's arena first.
    assert reports[0].problems == []
    assert reports[0].blocks_checked == 5  # four split-off free blocks + the allocated one
    assert reports[1].problems == [
        "node 1 zone Normal: free block at pfn 0 order 4 overlaps free block at pfn 3 order 0",
        "node 1 zone Normal: 17 free + 0 allocated pages != 16 pages in the arena",
    ]
