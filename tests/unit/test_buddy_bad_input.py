"""Every bad request to the buddy core is refused, says why, and changes nothing."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from memsim.services.buddy.allocator import BuddyAllocator
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
    at 68 are allocated."""
    arena = Arena(ArenaSpec(node=0, zone="Normal", start_pfn=64, pages=64, max_order=4))
    assert arena.alloc(2) == 64
    assert arena.alloc(0) == 68
    return arena


BAD: dict[str, tuple[Callable[[Arena], object], type[BuddyError], str]] = {
    "alloc order -1": (lambda a: a.alloc(-1), InvalidRequest, "order -1 is outside 0..3"),
    "alloc order MAX_ORDER": (lambda a: a.alloc(4), InvalidRequest, "order 4 is outside 0..3"),
    "bulk order 9": (lambda a: a.alloc_bulk(9, 1), InvalidRequest, "order 9"),
    "bulk count 0": (lambda a: a.alloc_bulk(0, 0), InvalidRequest, "count 0 is outside"),
    "bulk count -5": (lambda a: a.alloc_bulk(0, -5), InvalidRequest, "count -5"),
    "bulk count too large": (
        lambda a: a.alloc_bulk(0, MAX_BULK_COUNT + 1),
        InvalidRequest,
        f"count {MAX_BULK_COUNT + 1}",
    ),
    "free empty batch": (lambda a: a.free([]), InvalidRequest, "empty"),
    "free order -1": (lambda a: a.free([(68, -1)]), InvalidRequest, "order -1"),
    "free order -1 of a free pfn": (lambda a: a.free([(69, -1)]), InvalidRequest, "order -1"),
    "free order 4": (lambda a: a.free([(64, 4)]), InvalidRequest, "order 4"),
    "free below the arena": (
        lambda a: a.free([(3, 0)]),
        InvalidRequest,
        "pfn 3 is outside node 0 zone Normal [64, 128)",
    ),
    "free past the arena": (lambda a: a.free([(128, 0)]), InvalidRequest, "pfn 128 is outside"),
    "free unaligned": (
        lambda a: a.free([(66, 2)]),
        InvalidRequest,
        "pfn 66 is not aligned to order 2",
    ),
    "double free": (lambda a: a.free([(69, 0)]), BadFree, "double free: pfn 69 is already free"),
    "twice in one batch": (
        lambda a: a.free([(68, 0), (68, 0)]),
        BadFree,
        "pfn 68 appears twice in the batch",
    ),
    "wrong order": (
        lambda a: a.free([(64, 1)]),
        BadFree,
        "allocated with order 2, freed with order 1",
    ),
    "tail page": (
        lambda a: a.free([(65, 0)]),
        BadFree,
        "pfn 65 is inside the block of order 2 allocated at pfn 64",
    ),
    "good then bad": (
        lambda a: a.free([(68, 0), (64, 2), (70, 0)]),
        BadFree,
        "pfn 70 is already free",
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


def test_out_of_memory_changes_nothing_but_the_failure_counter(arena: Arena) -> None:
    # The fixture split the first of the 8 order-3 blocks; take the other 7. Three
    # pages stay free (69, 70-71), none in a block of order 3.
    taken = [arena.alloc(3) for _ in range(7)]
    assert sorted(taken) == list(range(72, 128, 8))
    assert arena.free_pages == 3
    before = snapshot(arena)
    with pytest.raises(OutOfMemory, match="no free block of order 3 or larger"):
        arena.alloc(3)
    after = snapshot(arena)
    assert after[:3] == before[:3]
    assert arena.counters.failed_allocations == [0, 0, 0, 1]


def test_allocator_refuses_bad_arenas_and_keeps_the_good_ones() -> None:
    allocator = BuddyAllocator()
    allocator.create_arena(ArenaSpec(0, "DMA", 0, 4096))
    allocator.create_arena(ArenaSpec(0, "Normal", 4096, 4096))  # adjacent is fine
    refused: list[tuple[ArenaSpec, type[BuddyError], str]] = [
        (ArenaSpec(0, "", 9000, 10), InvalidRequest, "zone name is empty"),
        (ArenaSpec(-1, "X", 9000, 10), InvalidRequest, "node -1"),
        (ArenaSpec(0, "X", 9000, 0), InvalidRequest, "at least one page"),
        (ArenaSpec(0, "X", 9000, 10, max_order=0), InvalidRequest, "MAX_ORDER 0"),
        (ArenaSpec(0, "X", 9000, 10, max_order=21), InvalidRequest, "MAX_ORDER 21"),
        (ArenaSpec(0, "X", 1 << 52, 10), InvalidRequest, "outside"),
        (ArenaSpec(0, "DMA", 9000, 10), ArenaExists, "already has an arena"),
        (ArenaSpec(1, "HighMem", 8000, 200), ArenaConflict, "overlap node 0 zone Normal"),
    ]
    for spec, error, message in refused:
        with pytest.raises(error, match=message):
            allocator.create_arena(spec)
    assert sorted(allocator.arenas) == [(0, "DMA"), (0, "Normal")]
    with pytest.raises(ArenaNotFound, match="no arena for node 0 zone 'HighMem'"):
        allocator.arena(0, "HighMem")
