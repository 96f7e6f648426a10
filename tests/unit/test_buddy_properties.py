"""Random allocate/free sequences keep every invariant and, once everything is
freed, give back exactly the free lists of boot."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

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
