"""Random allocate/free sequences keep every invariant and, once everything is
freed, give back exactly the free lists of boot.

The state machine also checks each step against a model: with eager merging the
free lists are a function of which pages are free (a free block is a maximal
aligned span of free pages inside the arena, at most of the top order), so
`canonical_nr_free` recomputes them from the allocated blocks alone.
"""

from __future__ import annotations

import contextlib
from itertools import accumulate

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from memsim.services.buddy.arena import Arena, ArenaSpec
from memsim.services.buddy.audit import audit_arena
from memsim.services.buddy.errors import OutOfMemory

specs = st.builds(
    ArenaSpec,
    node=st.just(0),
    zone=st.just("Normal"),
    start_pfn=st.integers(0, 5000),
    pages=st.integers(1, 5000),
    max_order=st.integers(1, 11),
)
# (what, order or count, which allocated block to free)
steps = st.lists(
    st.tuples(
        st.sampled_from(["alloc", "bulk", "free", "free_many"]),
        st.integers(0, 10),
        st.integers(0, 10_000),
    ),
    max_size=60,
)


def check(arena: Arena) -> None:
    assert audit_arena(arena).problems == []
    assert arena.free_pages + arena.allocated_pages == arena.spec.pages


def canonical_nr_free(spec: ArenaSpec, allocated: dict[int, int]) -> list[int]:
    """The free lists a fully merged buddy allocator must have, from first principles.

    Walks the arena from its first pfn, taking at each free pfn the largest block
    that is aligned, inside the arena and entirely free.
    """
    start, end = spec.start_pfn, spec.end_pfn
    busy = bytearray(spec.pages)
    for pfn, order in allocated.items():
        busy[pfn - start : pfn - start + (1 << order)] = b"\x01" * (1 << order)
    # busy_before[i] = busy pages in [start, start + i)
    busy_before = [0, *accumulate(busy)]
    nr_free = [0] * spec.max_order
    pfn = start
    while pfn < end:
        if busy[pfn - start]:
            pfn += 1
            continue
        order = spec.max_order - 1
        while order and (
            pfn % (1 << order)
            or pfn + (1 << order) > end
            or busy_before[pfn + (1 << order) - start] != busy_before[pfn - start]
        ):
            order -= 1
        nr_free[order] += 1
        pfn += 1 << order
    return nr_free


def test_canonical_model_agrees_with_boot_carving() -> None:
    # Sanity of the model itself on the hand-checked examples.
    assert canonical_nr_free(ArenaSpec(0, "N", 3, 1000, 4), {}) == [2, 1, 1, 124]
    assert canonical_nr_free(ArenaSpec(0, "N", 0, 16, 5), {0: 0}) == [1, 1, 1, 1, 0]
    assert canonical_nr_free(ArenaSpec(0, "N", 0, 16, 5), {0: 0, 1: 0, 2: 1}) == [0, 0, 1, 1, 0]


class BuddyMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.arena = Arena(ArenaSpec(0, "Normal", 0, 1, 1))
        self.boot: list[int] = []
        self.held: list[tuple[int, int]] = []

    @initialize(spec=specs)
    def boot_arena(self, spec: ArenaSpec) -> None:
        self.arena = Arena(spec)
        self.boot = self.arena.nr_free()
        assert self.boot == canonical_nr_free(spec, {})
        assert self.arena.free_pages == spec.pages

    @rule(number=st.integers(0, 10))
    def alloc(self, number: int) -> None:
        arena = self.arena
        order = number % arena.max_order
        before = arena.nr_free()
        splits = arena.counters.splits
        failed = list(arena.counters.failed_allocations)
        try:
            pfn = arena.alloc(order)
        except OutOfMemory:
            assert before[order:] == [0] * (arena.max_order - order)
            assert arena.nr_free() == before
            failed[order] += 1
            assert arena.counters.failed_allocations == failed
            return
        # Aligned to its size and inside the arena.
        assert pfn % (1 << order) == 0
        assert arena.spec.start_pfn <= pfn
        assert pfn + (1 << order) <= arena.spec.end_pfn
        assert all(pfn + (1 << order) <= p or p + (1 << o) <= pfn for p, o in self.held)
        # __rmqueue_smallest: the smallest non-empty order j >= order was split
        # j - order times, leaving one more block on each order in [order, j).
        j = next(k for k in range(order, arena.max_order) if before[k])
        expected = list(before)
        expected[j] -= 1
        for k in range(order, j):
            expected[k] += 1
        assert arena.nr_free() == expected
        assert arena.counters.splits == splits + j - order
        assert arena.counters.failed_allocations == failed
        self.held.append((pfn, order))

    @rule(number=st.integers(0, 10), count=st.integers(1, 300))
    def alloc_bulk(self, number: int, count: int) -> None:
        arena = self.arena
        order = number % arena.max_order
        # What can serve this order: every free block of order k >= order holds
        # 2^(k - order) blocks of it.
        servable = sum(n << (k - order) for k, n in enumerate(arena.nr_free()) if k >= order)
        failed = arena.counters.failed_allocations[order]
        pfns = arena.alloc_bulk(order, count)
        assert len(pfns) == min(count, servable)
        assert arena.counters.failed_allocations[order] == failed + (count > servable)
        assert len(set(pfns)) == len(pfns)
        for pfn in pfns:
            assert pfn % (1 << order) == 0
            assert arena.spec.start_pfn <= pfn <= arena.spec.end_pfn - (1 << order)
        self.held += [(pfn, order) for pfn in pfns]

    @precondition(lambda self: self.held)
    @rule(pick=st.integers(0, 10_000))
    def free_one(self, pick: int) -> None:
        arena = self.arena
        pfn, order = self.held.pop(pick % len(self.held))
        before = arena.nr_free()
        merges = arena.counters.merges
        assert arena.free([(pfn, order)]) == 1 << order
        # __free_one_page: m merges take one block off each order in
        # [order, order + m) and leave one on order + m.
        m = arena.counters.merges - merges
        assert order + m < arena.max_order
        expected = list(before)
        for k in range(order, order + m):
            expected[k] -= 1
        expected[order + m] += 1
        assert arena.nr_free() == expected

    @precondition(lambda self: self.held)
    @rule(pick=st.integers(0, 10_000), count=st.integers(1, 50))
    def free_batch(self, pick: int, count: int) -> None:
        start = pick % len(self.held)
        batch = self.held[start : start + count]
        del self.held[start : start + count]
        pages = self.arena.free_pages
        assert self.arena.free(batch) == sum(1 << o for _, o in batch)
        assert self.arena.free_pages == pages + sum(1 << o for _, o in batch)

    @invariant()
    def sound(self) -> None:
        arena = self.arena
        check(arena)
        assert arena.allocated == dict(self.held)
        assert arena.allocated_pages == sum(1 << o for _, o in self.held)
        assert arena.nr_free() == canonical_nr_free(arena.spec, arena.allocated)

    def teardown(self) -> None:
        arena = self.arena
        if self.held:
            arena.free(self.held)
        check(arena)
        assert arena.allocated == {}
        assert arena.nr_free() == self.boot
        assert arena.nr_free() == Arena(arena.spec).nr_free()


BuddyMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=50, deadline=None)
TestBuddyMachine = BuddyMachine.TestCase


@settings(max_examples=150, deadline=None)
@given(spec=specs, ops=steps)
def test_random_sequences_keep_invariants_and_return_to_boot(
    spec: ArenaSpec, ops: list[tuple[str, int, int]]
) -> None:
    arena = Arena(spec)
    boot = arena.nr_free()
    held: list[tuple[int, int]] = []
    for what, number, pick in ops:
        order = number % spec.max_order
        if what == "alloc":
            try:
                pfn = arena.alloc(order)
            except OutOfMemory:
                assert all(n == 0 for n in arena.nr_free()[order:])
            else:
                assert pfn % (1 << order) == 0
                assert spec.start_pfn <= pfn
                assert pfn + (1 << order) <= spec.end_pfn
                held.append((pfn, order))
        elif what == "bulk":
            pfns = arena.alloc_bulk(order, number + 1)
            assert len(pfns) <= number + 1
            held += [(pfn, order) for pfn in pfns]
        elif held and what == "free":
            block = held.pop(pick % len(held))
            assert arena.free([block]) == 1 << block[1]
        elif held:
            count = pick % len(held) + 1
            batch, held = held[:count], held[count:]
            assert arena.free(batch) == sum(1 << o for _, o in batch)
        check(arena)
    if held:
        arena.free(held)
    check(arena)
    assert arena.allocated == {}
    assert arena.nr_free() == boot


@settings(max_examples=100, deadline=None)
@given(spec=specs, orders=st.lists(st.integers(0, 10), min_size=1, max_size=40))
def test_allocations_never_overlap(spec: ArenaSpec, orders: list[int]) -> None:
    arena = Arena(spec)
    taken: list[range] = []
    for order in orders:
        order %= spec.max_order
        try:
            pfn = arena.alloc(order)
        except OutOfMemory:
            continue
        block = range(pfn, pfn + (1 << order))
        assert all(block.stop <= other.start or other.stop <= block.start for other in taken)
        taken.append(block)
    assert sum(len(b) for b in taken) == arena.allocated_pages


@settings(max_examples=200, deadline=None)
@given(spec=specs, order=st.integers(0, 10), warmup=st.lists(st.integers(0, 10), max_size=10))
def test_alloc_of_order_k_is_aligned_to_2_to_the_k_inside_the_arena(
    spec: ArenaSpec, order: int, warmup: list[int]
) -> None:
    arena = Arena(spec)
    for k in warmup:  # some earlier allocations, so not every block is fresh
        with contextlib.suppress(OutOfMemory):
            arena.alloc(k % spec.max_order)
    order %= spec.max_order
    has_block = any(arena.nr_free()[order:])
    try:
        pfn = arena.alloc(order)
    except OutOfMemory:
        assert not has_block
        return
    assert has_block
    assert pfn & ((1 << order) - 1) == 0
    assert spec.start_pfn <= pfn < spec.end_pfn
    assert pfn + (1 << order) <= spec.end_pfn
    assert arena.allocated[pfn] == order
