"""Every bad request to the buddy core is refused, says why, and changes nothing."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from memsim.services.buddy.allocator import MAX_ORDER_LIMIT, MAX_PFN, BuddyAllocator
from memsim.services.buddy.arena import MAX_BULK_COUNT, Arena, ArenaSpec
from memsim.services.buddy.errors import (
    ArenaConflict,
    ArenaExists,
    ArenaNotFound,
    BadFree,
    BuddyError,
    InvalidRequest,
    OutOfMemory,
)


def snapshot(arena: Arena) -> tuple[Any, ...]:
    return (
        arena.nr_free(),
        dict(arena.allocated),
        arena.allocated_pages,
        copy.deepcopy(arena.counters),
        [sorted(a.blocks) for a in arena.free_area],
        [list(map(list, a.runs)) for a in arena.free_area],
    )


@pytest.fixture
def arena() -> Arena:
    """64 pages at pfn 64, MAX_ORDER 4: an order-2 block at 64 and an order-0 page
    at 68 are allocated. Free: 69 (order 0), 70 (order 1), and the boot run of
    order-3 blocks 72..128: 1 + 2 + 56 = 59 pages."""
    arena = Arena(ArenaSpec(node=0, zone="Normal", start_pfn=64, pages=64, max_order=4))
    assert arena.alloc(2) == 64
    assert arena.alloc(0) == 68
    assert arena.nr_free() == [1, 1, 0, 7]
    assert arena.free_pages == 59
    return arena


BAD: dict[str, tuple[Callable[[Arena], object], type[BuddyError], str]] = {
    "alloc order -1": (lambda a: a.alloc(-1), InvalidRequest, "order -1 is outside 0..3"),
    "alloc order MAX_ORDER": (lambda a: a.alloc(4), InvalidRequest, "order 4 is outside 0..3"),
    "bulk order -1": (lambda a: a.alloc_bulk(-1, 1), InvalidRequest, "order -1 is outside 0..3"),
    "bulk order 9": (lambda a: a.alloc_bulk(9, 1), InvalidRequest, "order 9 is outside 0..3"),
    "bulk count 0": (lambda a: a.alloc_bulk(0, 0), InvalidRequest, "count 0 is outside"),
    "bulk count -5": (lambda a: a.alloc_bulk(0, -5), InvalidRequest, "count -5"),
    "bulk count too large": (
        lambda a: a.alloc_bulk(0, MAX_BULK_COUNT + 1),
        InvalidRequest,
        f"count {MAX_BULK_COUNT + 1} is outside 1..{MAX_BULK_COUNT}",
    ),
    "free empty batch": (lambda a: a.free([]), InvalidRequest, "empty"),
    "free_bulk empty": (lambda a: a.free_bulk(0, []), InvalidRequest, "empty"),
    "free order -1": (lambda a: a.free([(68, -1)]), InvalidRequest, "order -1"),
    "free order -1 of a free pfn": (lambda a: a.free([(69, -1)]), InvalidRequest, "order -1"),
    "free order 4": (lambda a: a.free([(64, 4)]), InvalidRequest, "order 4 is outside 0..3"),
    "free_bulk order 7": (lambda a: a.free_bulk(7, [64]), InvalidRequest, "order 7"),
    "free below the arena": (
        lambda a: a.free([(3, 0)]),
        InvalidRequest,
        "pfn 3 is outside node 0 zone Normal [64, 128)",
    ),
    "free just below the arena": (lambda a: a.free([(63, 0)]), InvalidRequest, "pfn 63 is outside"),
    "free past the arena": (lambda a: a.free([(128, 0)]), InvalidRequest, "pfn 128 is outside"),
    "free negative pfn": (lambda a: a.free([(-64, 0)]), InvalidRequest, "pfn -64 is outside"),
    "free unaligned": (
        lambda a: a.free([(66, 2)]),
        InvalidRequest,
        "pfn 66 is not aligned to order 2",
    ),
    "free unaligned odd": (
        lambda a: a.free([(69, 1)]),
        InvalidRequest,
        "pfn 69 is not aligned to order 1",
    ),
    "double free": (lambda a: a.free([(69, 0)]), BadFree, "double free: pfn 69 is already free"),
    "double free inside a free block": (
        lambda a: a.free([(71, 0)]),
        BadFree,
        "pfn 71 is already free (in the free block of order 1 at pfn 70)",
    ),
    "double free inside the boot run": (
        lambda a: a.free([(81, 0)]),
        BadFree,
        "pfn 81 is already free (in the free block of order 3 at pfn 80)",
    ),
    "double free of a run block": (
        lambda a: a.free([(120, 3)]),
        BadFree,
        "pfn 120 is already free (in the free block of order 3 at pfn 120)",
    ),
    "twice in one batch": (
        lambda a: a.free([(68, 0), (68, 0)]),
        BadFree,
        "pfn 68 appears twice in the batch",
    ),
    "twice at the batch's ends": (
        lambda a: a.free([(68, 0), (64, 2), (68, 0)]),
        BadFree,
        "pfn 68 appears twice in the batch",
    ),
    "wrong order, smaller": (
        lambda a: a.free([(64, 1)]),
        BadFree,
        "allocated with order 2, freed with order 1",
    ),
    "wrong order, larger": (
        lambda a: a.free([(68, 1)]),
        BadFree,
        "the block at pfn 68 was allocated with order 0, freed with order 1",
    ),
    "wrong order, top": (
        lambda a: a.free([(64, 3)]),
        BadFree,
        "allocated with order 2, freed with order 3",
    ),
    "tail page": (
        lambda a: a.free([(65, 0)]),
        BadFree,
        "pfn 65 is inside the block of order 2 allocated at pfn 64",
    ),
    "aligned tail": (
        lambda a: a.free([(66, 1)]),
        BadFree,
        "pfn 66 is inside the block of order 2 allocated at pfn 64",
    ),
    "good then bad": (
        lambda a: a.free([(68, 0), (64, 2), (70, 0)]),
        BadFree,
        "pfn 70 is already free",
    ),
    "good then outside": (
        lambda a: a.free([(68, 0), (64, 2), (500, 0)]),
        InvalidRequest,
        "pfn 500 is outside",
    ),
    "good then wrong order": (
        lambda a: a.free([(68, 0), (64, 1)]),
        BadFree,
        "allocated with order 2, freed with order 1",
    ),
    "bulk free of a free pfn": (lambda a: a.free_bulk(0, [68, 72]), BadFree, "pfn 72"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_request_is_refused_and_changes_nothing(arena: Arena, name: str) -> None:
    call, error, message = BAD[name]
    before = snapshot(arena)
    with pytest.raises(error) as raised:
        call(arena)
    assert message in str(raised.value)
    assert snapshot(arena) == before


def test_errors_have_the_documented_hierarchy() -> None:
    for error in (InvalidRequest, ArenaNotFound, ArenaConflict, OutOfMemory, BadFree):
        assert issubclass(error, BuddyError)
    assert issubclass(ArenaExists, ArenaConflict)
    assert not issubclass(BadFree, InvalidRequest)
    assert not issubclass(InvalidRequest, BadFree)


def test_second_free_of_the_same_block_is_a_double_free(arena: Arena) -> None:
    assert arena.free([(68, 0)]) == 1
    # 68+69 -> o1 at 68, +70 -> o2 at 68; 64 is busy.
    assert arena.nr_free() == [0, 0, 1, 7]
    before = snapshot(arena)
    with pytest.raises(BadFree, match=r"pfn 68 is already free \(in the free block of order 2"):
        arena.free([(68, 0)])
    assert snapshot(arena) == before


def test_a_good_batch_after_a_refused_one_still_frees(arena: Arena) -> None:
    with pytest.raises(BadFree):
        arena.free([(68, 0), (64, 2), (70, 0)])
    assert arena.free([(68, 0), (64, 2)]) == 5
    assert arena.nr_free() == [0, 0, 0, 8]
    assert arena.allocated == {}


def test_out_of_memory_changes_nothing_but_the_failure_counter(arena: Arena) -> None:
    # The fixture split the first of the 8 order-3 blocks; take the other 7. Three
    # pages stay free (69, 70-71), none in a block of order 3.
    taken = [arena.alloc(3) for _ in range(7)]
    assert sorted(taken) == list(range(72, 128, 8))
    assert arena.free_pages == 3
    before = snapshot(arena)
    with pytest.raises(OutOfMemory, match="no free block of order 3 or larger") as raised:
        arena.alloc(3)
    assert "(3 pages free)" in str(raised.value)
    after = snapshot(arena)
    assert after[:3] == before[:3]
    assert after[4:] == before[4:]
    counters = arena.counters
    assert counters.failed_allocations == [0, 0, 0, 1]
    assert counters.allocations == before[3].allocations
    assert counters.frees == before[3].frees
    assert (counters.splits, counters.merges) == (before[3].splits, before[3].merges)
    # Order 2 fails too (the largest free block is 70-71), order 1 still works.
    with pytest.raises(OutOfMemory, match="order 2"):
        arena.alloc(2)
    assert counters.failed_allocations == [0, 0, 1, 1]
    assert arena.alloc(1) == 70
    assert arena.alloc(0) == 69
    with pytest.raises(OutOfMemory, match=r"\(0 pages free\)"):
        arena.alloc(0)
    assert counters.failed_allocations == [1, 0, 1, 1]


def test_bulk_allocation_returns_exactly_what_is_left(arena: Arena) -> None:
    # Order 1: 70, then each order-3 block split into four order-1 blocks, lowest
    # first; 69 cannot serve order 1.
    pfns = arena.alloc_bulk(1, 100)
    assert pfns == [70, *range(72, 128, 2)]
    assert len(pfns) == 29
    assert arena.counters.failed_allocations == [0, 1, 0, 0]
    assert arena.nr_free() == [1, 0, 0, 0]
    assert arena.alloc_bulk(0, 5) == [69]
    assert arena.counters.failed_allocations == [1, 1, 0, 0]
    assert arena.free_pages == 0
    assert arena.alloc_bulk(0, 1) == []
    assert arena.counters.failed_allocations == [2, 1, 0, 0]
    assert arena.allocated_pages == 64


def test_bulk_allocation_of_exactly_the_free_pages_is_no_failure(arena: Arena) -> None:
    pfns = arena.alloc_bulk(0, 59)
    assert sorted(pfns) == [69, 70, 71, *range(72, 128)]
    assert arena.counters.failed_allocations == [0, 0, 0, 0]
    assert arena.counters.allocations == [60, 0, 1, 0]
    assert arena.free_pages == 0


def test_allocator_refuses_bad_arenas_and_keeps_the_good_ones() -> None:
    allocator = BuddyAllocator()
    allocator.create_arena(ArenaSpec(0, "DMA", 0, 4096))
    allocator.create_arena(ArenaSpec(0, "Normal", 4096, 4096))  # adjacent is fine
    refused: list[tuple[ArenaSpec, type[BuddyError], str]] = [
        (ArenaSpec(0, "", 9000, 10), InvalidRequest, "zone name is empty"),
        (ArenaSpec(-1, "X", 9000, 10), InvalidRequest, "node -1 is negative"),
        (ArenaSpec(0, "X", 9000, 0), InvalidRequest, "at least one page, not 0"),
        (ArenaSpec(0, "X", 9000, -5), InvalidRequest, "at least one page, not -5"),
        (ArenaSpec(0, "X", -1, 10), InvalidRequest, r"pfns \[-1, 9\) are outside"),
        (ArenaSpec(0, "X", 1 << 52, 10), InvalidRequest, "outside"),
        (ArenaSpec(0, "X", MAX_PFN - 5, 6), InvalidRequest, "outside"),
        (ArenaSpec(0, "X", 9000, 10, max_order=0), InvalidRequest, "MAX_ORDER 0 is outside 1..20"),
        (ArenaSpec(0, "X", 9000, 10, max_order=-3), InvalidRequest, "MAX_ORDER -3"),
        (ArenaSpec(0, "X", 9000, 10, max_order=21), InvalidRequest, "MAX_ORDER 21"),
        (ArenaSpec(0, "DMA", 9000, 10), ArenaExists, "node 0 zone DMA already has an arena"),
        (ArenaSpec(1, "HighMem", 8000, 200), ArenaConflict, "overlap node 0 zone Normal"),
    ]
    for spec, error, message in refused:
        with pytest.raises(error, match=message) as raised:
            allocator.create_arena(spec)
        assert type(raised.value) is error
    assert sorted(allocator.arenas) == [(0, "DMA"), (0, "Normal")]
    with pytest.raises(ArenaNotFound, match="no arena for node 0 zone 'HighMem'"):
        allocator.arena(0, "HighMem")


def test_boundary_arena_specs_are_accepted() -> None:
    allocator = BuddyAllocator()
    one = allocator.create_arena(ArenaSpec(0, "A", 0, 1, max_order=1))
    assert one.nr_free() == [1]
    widest = allocator.create_arena(ArenaSpec(0, "B", 1 << 20, 1 << 19, max_order=MAX_ORDER_LIMIT))
    assert widest.nr_free() == [0] * 19 + [1]
    last = allocator.create_arena(ArenaSpec(0, "C", MAX_PFN - 1, 1))
    assert last.spec.end_pfn == MAX_PFN
    assert sorted(allocator.arenas) == [(0, "A"), (0, "B"), (0, "C")]


# An arena [1000, 2000) exists; each of these overlaps it.
OVERLAPS = {
    "same span": (1000, 1000),
    "inside": (1200, 10),
    "around": (0, 5000),
    "over the start": (900, 101),
    "over the end": (1999, 50),
    "first page": (1000, 1),
    "last page": (1999, 1),
}


@pytest.mark.parametrize("name", list(OVERLAPS))
def test_overlapping_arena_is_a_conflict(name: str) -> None:
    allocator = BuddyAllocator()
    allocator.create_arena(ArenaSpec(0, "Normal", 1000, 1000))
    start, pages = OVERLAPS[name]
    with pytest.raises(ArenaConflict, match=r"overlap node 0 zone Normal \[1000, 2000\)") as raised:
        allocator.create_arena(ArenaSpec(1, "Normal", start, pages))
    assert type(raised.value) is ArenaConflict
    assert list(allocator.arenas) == [(0, "Normal")]


def test_arenas_touching_on_either_side_are_fine() -> None:
    allocator = BuddyAllocator()
    allocator.create_arena(ArenaSpec(0, "Normal", 1000, 1000))
    allocator.create_arena(ArenaSpec(1, "Normal", 900, 100))  # [900, 1000)
    allocator.create_arena(ArenaSpec(1, "HighMem", 2000, 100))  # [2000, 2100)
    assert [a.spec.start_pfn for a in allocator.select(None, None)] == [1000, 900, 2000]
    assert allocator.arena(1, "HighMem").spec.end_pfn == 2100


def test_duplicate_node_and_zone_is_refused_even_when_disjoint() -> None:
    allocator = BuddyAllocator()
    first = allocator.create_arena(ArenaSpec(2, "DMA32", 0, 64))
    with pytest.raises(ArenaExists, match="node 2 zone DMA32 already has an arena"):
        allocator.create_arena(ArenaSpec(2, "DMA32", 1 << 30, 64))
    assert allocator.arena(2, "DMA32") is first


def test_unknown_arena_lookup_names_the_known_ones() -> None:
    allocator = BuddyAllocator()
    with pytest.raises(ArenaNotFound, match=r"node 0 zone 'Normal' \(arenas: none\)"):
        allocator.arena(0, "Normal")
    allocator.create_arena(ArenaSpec(0, "DMA", 0, 16))
    allocator.create_arena(ArenaSpec(1, "Normal", 16, 16))
    with pytest.raises(
        ArenaNotFound,
        match=r"node 1 zone 'DMA' \(arenas: node 0 zone DMA, node 1 zone Normal\)",
    ):
        allocator.arena(1, "DMA")
    with pytest.raises(ArenaNotFound, match="node 0 zone 'Normal'"):
        allocator.select(0, "Normal")
    assert [a.spec.zone for a in allocator.select(None, "DMA")] == ["DMA", "Normal"]
