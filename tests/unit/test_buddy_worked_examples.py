"""Split and merge worked examples, checked by hand against mm/page_alloc.c."""

from __future__ import annotations

from memsim.services.buddy.arena import Arena, ArenaSpec
from memsim.services.buddy.audit import audit_arena


def sixteen_pages() -> Arena:
    # 16 pages at pfn 0 with MAX_ORDER 5: one free block of order 4.
    return Arena(ArenaSpec(node=0, zone="Normal", start_pfn=0, pages=16, max_order=5))


def free_blocks(arena: Arena) -> dict[int, list[int]]:
    return {a.order: sorted(a.blocks) for a in arena.free_area if a.blocks}


def test_boot_gives_one_top_order_block() -> None:
    arena = sixteen_pages()
    assert arena.nr_free() == [0, 0, 0, 0, 1]
    assert arena.free_pages == 16


def test_expand_keeps_the_lower_half_and_frees_each_upper_half() -> None:
    arena = sixteen_pages()
    assert arena.alloc(0) == 0
    # expand(): 16 -> keep [0,8) free [8,16) at order 3; keep [0,4) free [4,8) at
    # order 2; keep [0,2) free [2,4) at order 1; keep 0, free 1 at order 0.
    assert arena.nr_free() == [1, 1, 1, 1, 0]
    assert free_blocks(arena) == {0: [1], 1: [2], 2: [4], 3: [8]}
    assert arena.counters.splits == 4
    assert arena.counters.allocations == [1, 0, 0, 0, 0]


def test_smallest_fitting_block_is_used_before_splitting_a_larger_one() -> None:
    arena = sixteen_pages()
    assert arena.alloc(0) == 0
    assert arena.alloc(0) == 1  # the order-0 buddy left by the first split
    assert arena.alloc(1) == 2  # the order-1 block, no split needed
    assert arena.counters.splits == 4
    assert arena.nr_free() == [0, 0, 1, 1, 0]


def test_merges_cascade_back_to_the_boot_block() -> None:
    arena = sixteen_pages()
    a, b, c = arena.alloc(0), arena.alloc(0), arena.alloc(1)
    assert arena.free([(b, 0)]) == 1
    # pfn 1's buddy (pfn 0) is allocated: no merge.
    assert arena.counters.merges == 0
    assert free_blocks(arena) == {0: [1], 2: [4], 3: [8]}
    assert arena.free([(a, 0)]) == 1
    # 0+1 -> order 1 at 0; its buddy 2 is allocated: one merge.
    assert arena.counters.merges == 1
    assert free_blocks(arena) == {1: [0], 2: [4], 3: [8]}
    assert arena.free([(c, 1)]) == 2
    # 2+0 -> order 2 at 0, +4 -> order 3 at 0, +8 -> order 4 at 0: four merges.
    assert arena.counters.merges == 4
    assert arena.nr_free() == [0, 0, 0, 0, 1]
    assert free_blocks(arena) == {4: [0]}
    assert audit_arena(arena).problems == []


def test_freed_block_is_the_next_one_handed_out() -> None:
    arena = sixteen_pages()
    first, second = arena.alloc(0), arena.alloc(0)
    assert (first, second) == (0, 1)
    arena.alloc(1)  # pfns 2-3, so pfn 1 cannot merge when freed
    arena.free([(second, 0)])
    assert arena.alloc(0) == second


def test_unaligned_arena_is_carved_into_the_largest_aligned_blocks() -> None:
    # [3, 1003) with MAX_ORDER 4: 3 (order 0), 4 (order 2), 8 (order 3), then
    # 124 blocks of order 3 from 8 to 1000 (8 and the run 16..1000), 1000 (order 1),
    # 1002 (order 0).
    arena = Arena(ArenaSpec(node=0, zone="DMA", start_pfn=3, pages=1000, max_order=4))
    assert arena.nr_free() == [2, 1, 1, 124]
    assert sorted(arena.free_area[0].blocks) == [3, 1002]
    assert list(arena.free_area[1].blocks) == [1000]
    assert list(arena.free_area[2].blocks) == [4]
    assert arena.free_pages == 1000
    assert audit_arena(arena).problems == []


def test_merging_never_crosses_the_arena_boundary() -> None:
    # pfn 3 is the arena's first page; its buddy, pfn 2, lies outside.
    arena = Arena(ArenaSpec(node=0, zone="DMA", start_pfn=3, pages=5, max_order=4))
    assert arena.nr_free() == [1, 0, 1, 0]  # 3 (order 0), 4..8 (order 2)
    pfn = arena.alloc(0)
    assert pfn == 3
    arena.free([(pfn, 0)])
    assert arena.nr_free() == [1, 0, 1, 0]
    assert arena.counters.merges == 0


def test_top_order_blocks_do_not_merge_further() -> None:
    arena = Arena(ArenaSpec(node=0, zone="Normal", start_pfn=0, pages=8, max_order=2))
    assert arena.nr_free() == [0, 4]
    blocks = [arena.alloc(1) for _ in range(4)]
    arena.free([(pfn, 1) for pfn in blocks])
    assert arena.nr_free() == [0, 4]
    assert arena.counters.merges == 0


def test_one_tebibyte_arena_boots_as_a_run_and_hands_out_its_lowest_blocks() -> None:
    arena = Arena(ArenaSpec(node=0, zone="Normal", start_pfn=0, pages=1 << 28))
    assert arena.nr_free() == [0] * 10 + [1 << 18]
    assert not arena.free_area[10].blocks  # nothing listed one by one
    assert arena.alloc(10) == 0
    assert arena.alloc(10) == 1024
    assert arena.free_pages == (1 << 28) - 2048
    assert 4096 in arena.free_area[10]
    assert 4097 not in arena.free_area[10]
    assert 0 not in arena.free_area[10]


def test_bulk_allocation_takes_what_is_left_and_says_so() -> None:
    arena = Arena(ArenaSpec(node=0, zone="DMA", start_pfn=0, pages=100))
    pfns = arena.alloc_bulk(0, 150)
    assert sorted(pfns) == list(range(100))
    assert arena.free_pages == 0
    assert arena.counters.failed_allocations[0] == 1
    assert arena.free_bulk(0, pfns) == 100
    assert arena.nr_free() == Arena(arena.spec).nr_free()
