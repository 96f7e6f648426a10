"""Split and merge worked examples, checked by hand against mm/page_alloc.c."""

from __future__ import annotations

import pytest

from memsim.services.buddy.allocator import BuddyAllocator
from memsim.services.buddy.arena import Arena, ArenaSpec
from memsim.services.buddy.audit import audit_arena
from memsim.services.buddy.errors import OutOfMemory


def sixteen_pages() -> Arena:
    # 16 pages at pfn 0 with MAX_ORDER 5: one free block of order 4.
    return Arena(ArenaSpec(node=0, zone="Normal", start_pfn=0, pages=16, max_order=5))


def free_blocks(arena: Arena) -> dict[int, list[int]]:
    """Explicitly listed free blocks by order (boot runs are not listed here)."""
    return {a.order: sorted(a.blocks) for a in arena.free_area if a.blocks}


def test_boot_gives_one_top_order_block() -> None:
    arena = sixteen_pages()
    assert arena.nr_free() == [0, 0, 0, 0, 1]
    assert arena.free_pages == 16
    assert arena.allocated == {}
    assert 0 in arena.free_area[4]
    assert audit_arena(arena).problems == []


def test_expand_keeps_the_lower_half_and_frees_each_upper_half() -> None:
    arena = sixteen_pages()
    assert arena.alloc(0) == 0
    # expand(): 16 -> keep [0,8) free [8,16) at order 3; keep [0,4) free [4,8) at
    # order 2; keep [0,2) free [2,4) at order 1; keep 0, free 1 at order 0.
    assert arena.nr_free() == [1, 1, 1, 1, 0]
    assert free_blocks(arena) == {0: [1], 1: [2], 2: [4], 3: [8]}
    assert arena.counters.splits == 4
    assert arena.counters.allocations == [1, 0, 0, 0, 0]
    assert arena.allocated == {0: 0}
    assert arena.free_pages == 15


def test_smallest_fitting_block_is_used_before_splitting_a_larger_one() -> None:
    arena = sixteen_pages()
    assert arena.alloc(0) == 0
    assert arena.alloc(0) == 1  # the order-0 buddy left by the first split
    assert arena.alloc(1) == 2  # the order-1 block, no split needed
    assert arena.counters.splits == 4
    assert arena.nr_free() == [0, 0, 1, 1, 0]
    assert free_blocks(arena) == {2: [4], 3: [8]}
    assert arena.allocated == {0: 0, 1: 0, 2: 1}
    assert arena.counters.allocations == [2, 1, 0, 0, 0]


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
    assert arena.counters.frees == [2, 1, 0, 0, 0]
    assert arena.counters.splits == 4
    assert audit_arena(arena).problems == []


# a = pfn 0 (order 0), b = pfn 1 (order 0), c = pfn 2 (order 1); 4 (order 2) and
# 8 (order 3) stay free throughout. Each step: (block freed, nr_free, merges so far).
FREE_ORDERS: dict[str, list[tuple[str, list[int], int]]] = {
    # b: buddy 0 busy. a: 0+1 -> o1 at 0, buddy 2 busy. c: 0+2, +4, +8 -> o4.
    "b a c": [("b", [1, 0, 1, 1, 0], 0), ("a", [0, 1, 1, 1, 0], 1), ("c", [0, 0, 0, 0, 1], 4)],
    # a: buddy 1 busy. b: 1+0 -> o1 at 0, buddy 2 busy. c: three more merges.
    "a b c": [("a", [1, 0, 1, 1, 0], 0), ("b", [0, 1, 1, 1, 0], 1), ("c", [0, 0, 0, 0, 1], 4)],
    # c: its buddy, o1 at 0, is not free (0 and 1 are busy). a: buddy 1 busy.
    # b: 1+0 -> o1, +2 -> o2, +4 -> o3, +8 -> o4 in a single free.
    "c a b": [("c", [0, 1, 1, 1, 0], 0), ("a", [1, 1, 1, 1, 0], 0), ("b", [0, 0, 0, 0, 1], 4)],
    "c b a": [("c", [0, 1, 1, 1, 0], 0), ("b", [1, 1, 1, 1, 0], 0), ("a", [0, 0, 0, 0, 1], 4)],
    # a: buddy 1 busy. c: order-1 buddy at 0 is not an order-1 free block.
    "a c b": [("a", [1, 0, 1, 1, 0], 0), ("c", [1, 1, 1, 1, 0], 0), ("b", [0, 0, 0, 0, 1], 4)],
    "b c a": [("b", [1, 0, 1, 1, 0], 0), ("c", [1, 1, 1, 1, 0], 0), ("a", [0, 0, 0, 0, 1], 4)],
}


@pytest.mark.parametrize("order", list(FREE_ORDERS))
def test_every_free_order_merges_back_to_the_boot_block(order: str) -> None:
    arena = sixteen_pages()
    blocks = {"a": (arena.alloc(0), 0), "b": (arena.alloc(0), 0), "c": (arena.alloc(1), 1)}
    assert blocks == {"a": (0, 0), "b": (1, 0), "c": (2, 1)}
    assert arena.nr_free() == [0, 0, 1, 1, 0]
    for name, nr_free, merges in FREE_ORDERS[order]:
        pfn, block_order = blocks[name]
        assert arena.free([(pfn, block_order)]) == 1 << block_order
        assert arena.nr_free() == nr_free, name
        assert arena.counters.merges == merges, name
        assert audit_arena(arena).problems == []
    assert free_blocks(arena) == {4: [0]}
    assert arena.allocated == {}
    assert arena.allocated_pages == 0
    assert arena.counters.splits == 4


def test_one_batch_frees_and_merges_everything() -> None:
    arena = sixteen_pages()
    batch = [(arena.alloc(0), 0), (arena.alloc(0), 0), (arena.alloc(1), 1)]
    assert arena.free(batch) == 4
    assert arena.nr_free() == [0, 0, 0, 0, 1]
    assert arena.counters.merges == 4
    assert arena.counters.frees == [2, 1, 0, 0, 0]


def test_splits_and_merges_across_orders() -> None:
    arena = sixteen_pages()
    # alloc(3): split 16 once, keep [0,8), free 8 at order 3.
    assert arena.alloc(3) == 0
    assert (arena.nr_free(), arena.counters.splits) == ([0, 0, 0, 1, 0], 1)
    # alloc(2): split 8, keep [8,12), free 12 at order 2.
    assert arena.alloc(2) == 8
    assert (arena.nr_free(), arena.counters.splits) == ([0, 0, 1, 0, 0], 2)
    # alloc(0): split 12 twice, keep 12, free 14 (order 1) and 13 (order 0).
    assert arena.alloc(0) == 12
    assert (arena.nr_free(), arena.counters.splits) == ([1, 1, 0, 0, 0], 4)
    assert free_blocks(arena) == {0: [13], 1: [14]}
    # 8's buddy at order 2 is 12, still busy; 0's buddy at order 3 is 8, busy.
    arena.free([(8, 2)])
    arena.free([(0, 3)])
    assert (arena.nr_free(), arena.counters.merges) == ([1, 1, 1, 1, 0], 0)
    # 12+13 -> o1 at 12, +14 -> o2 at 12, +8 -> o3 at 8, +0 -> o4 at 0.
    arena.free([(12, 0)])
    assert (arena.nr_free(), arena.counters.merges) == ([0, 0, 0, 0, 1], 4)
    assert free_blocks(arena) == {4: [0]}
    assert arena.counters.allocations == [1, 0, 1, 1, 0]
    assert arena.counters.frees == [1, 0, 1, 1, 0]


def test_whole_arena_in_one_allocation_then_out_of_memory() -> None:
    arena = sixteen_pages()
    assert arena.alloc(4) == 0
    assert arena.nr_free() == [0, 0, 0, 0, 0]
    assert arena.counters.splits == 0
    with pytest.raises(OutOfMemory):
        arena.alloc(0)
    assert arena.counters.failed_allocations == [1, 0, 0, 0, 0]
    arena.free([(0, 4)])
    assert arena.nr_free() == [0, 0, 0, 0, 1]
    assert arena.counters.merges == 0


def test_freed_block_is_the_next_one_handed_out() -> None:
    arena = sixteen_pages()
    first, second = arena.alloc(0), arena.alloc(0)
    assert (first, second) == (0, 1)
    arena.alloc(1)  # pfns 2-3, so pfn 1 cannot merge when freed
    arena.free([(second, 0)])
    assert arena.alloc(0) == second


def test_free_list_is_last_in_first_out() -> None:
    arena = sixteen_pages()
    # 0, 1, then 2 (splitting order-1 block 2, freeing 3), then 3.
    assert [arena.alloc(0) for _ in range(4)] == [0, 1, 2, 3]
    assert arena.counters.splits == 5
    # Neither 0 nor 2 can merge (1 and 3 are busy): both go on the order-0 list,
    # 2 at its head.
    arena.free([(0, 0)])
    arena.free([(2, 0)])
    assert free_blocks(arena) == {0: [0, 2], 2: [4], 3: [8]}
    assert arena.alloc(0) == 2
    assert arena.alloc(0) == 0
    # The same for a batch: its blocks are freed in batch order.
    arena.free([(2, 0), (0, 0)])
    assert arena.alloc(0) == 0


def test_unaligned_arena_is_carved_into_the_largest_aligned_blocks() -> None:
    # [3, 1003) with MAX_ORDER 4: 3 (order 0), 4 (order 2), then 124 blocks of
    # order 3 from 8 to 1000 (one boot run), 1000 (order 1), 1002 (order 0).
    # 1 + 4 + 124 * 8 + 2 + 1 = 1000 pages.
    arena = Arena(ArenaSpec(node=0, zone="DMA", start_pfn=3, pages=1000, max_order=4))
    assert arena.nr_free() == [2, 1, 1, 124]
    assert sorted(arena.free_area[0].blocks) == [3, 1002]
    assert list(arena.free_area[1].blocks) == [1000]
    assert list(arena.free_area[2].blocks) == [4]
    assert arena.free_area[3].runs == [[8, 1000]]
    assert 8 in arena.free_area[3]
    assert 16 in arena.free_area[3]
    assert 992 in arena.free_area[3]
    assert 1000 not in arena.free_area[3]
    assert 12 not in arena.free_area[3]
    assert 0 not in arena.free_area[3]
    assert arena.free_pages == 1000
    assert audit_arena(arena).problems == []


def test_unaligned_arena_hands_out_its_blocks_in_list_order() -> None:
    arena = Arena(ArenaSpec(node=0, zone="DMA", start_pfn=3, pages=1000, max_order=4))
    # Order 0 list: 3 added first, 1002 last, so 1002 is at the head.
    assert arena.alloc(0) == 1002
    assert arena.alloc(0) == 3
    # Order 3 comes off the boot run, lowest block first.
    assert arena.alloc(3) == 8
    assert arena.alloc(3) == 16
    assert arena.free_area[3].runs == [[24, 1000]]
    assert arena.nr_free() == [0, 1, 1, 122]
    # 8 merges with nothing: top order. It is listed and handed out before the run.
    arena.free([(8, 3)])
    assert arena.nr_free() == [0, 1, 1, 123]
    assert arena.alloc(3) == 8
    assert arena.counters.splits == 0


def test_max_order_one_is_a_list_of_single_pages() -> None:
    arena = Arena(ArenaSpec(node=0, zone="DMA", start_pfn=5, pages=3, max_order=1))
    assert arena.nr_free() == [3]
    assert [arena.alloc(0) for _ in range(3)] == [5, 6, 7]
    with pytest.raises(OutOfMemory):
        arena.alloc(0)
    arena.free([(6, 0), (7, 0)])
    assert arena.nr_free() == [2]
    assert arena.counters.merges == 0  # order 0 is the top order
    assert arena.alloc(0) == 7


def test_merging_never_crosses_the_arena_boundary() -> None:
    # pfn 3 is the arena's first page; its buddy, pfn 2, lies outside.
    arena = Arena(ArenaSpec(node=0, zone="DMA", start_pfn=3, pages=5, max_order=4))
    assert arena.nr_free() == [1, 0, 1, 0]  # 3 (order 0), 4..8 (order 2)
    pfn = arena.alloc(0)
    assert pfn == 3
    arena.free([(pfn, 0)])
    assert arena.nr_free() == [1, 0, 1, 0]
    assert arena.counters.merges == 0


def test_merging_stops_below_the_arena_start() -> None:
    # [4, 8) with MAX_ORDER 4: one order-2 block at 4; [0, 8) would be its parent.
    arena = Arena(ArenaSpec(node=0, zone="DMA", start_pfn=4, pages=4, max_order=4))
    assert arena.nr_free() == [0, 0, 1, 0]
    assert arena.alloc(0) == 4
    assert free_blocks(arena) == {0: [5], 1: [6]}
    # 4+5 -> o1 at 4, +6 -> o2 at 4; the order-2 buddy, 0, is outside: two merges.
    arena.free([(4, 0)])
    assert arena.nr_free() == [0, 0, 1, 0]
    assert free_blocks(arena) == {2: [4]}
    assert arena.counters.merges == 2


def test_merging_stops_at_the_arena_end() -> None:
    # [0, 6) with MAX_ORDER 4: 0 (order 2) and 4 (order 1); 6-7 do not exist.
    arena = Arena(ArenaSpec(node=0, zone="DMA", start_pfn=0, pages=6, max_order=4))
    assert arena.nr_free() == [0, 1, 1, 0]
    assert arena.alloc(1) == 4
    assert arena.alloc(0) == 0
    # 4's order-1 buddy is 6 (outside); after 4 is freed, 0-3 cannot reach order 3.
    arena.free([(4, 1)])
    arena.free([(0, 0)])
    assert arena.nr_free() == [0, 1, 1, 0]
    assert free_blocks(arena) == {1: [4], 2: [0]}
    assert arena.counters.merges == 2  # 0+1 -> o1, +2 -> o2


def test_buddies_in_adjacent_arenas_do_not_merge() -> None:
    allocator = BuddyAllocator()
    low = allocator.create_arena(ArenaSpec(0, "DMA", 0, 2, max_order=3))
    high = allocator.create_arena(ArenaSpec(0, "Normal", 2, 2, max_order=3))
    assert low.nr_free() == [0, 1, 0]  # 0 (order 1)
    assert high.nr_free() == [0, 1, 0]  # 2 (order 1), 0's order-1 buddy
    assert low.alloc(1) == 0
    low.free([(0, 1)])
    assert low.nr_free() == [0, 1, 0]
    assert high.nr_free() == [0, 1, 0]
    assert low.counters.merges == 0


def test_top_order_blocks_do_not_merge_further() -> None:
    arena = Arena(ArenaSpec(node=0, zone="Normal", start_pfn=0, pages=8, max_order=2))
    assert arena.nr_free() == [0, 4]
    blocks = [arena.alloc(1) for _ in range(4)]
    assert blocks == [0, 2, 4, 6]
    arena.free([(pfn, 1) for pfn in blocks])
    assert arena.nr_free() == [0, 4]
    assert sorted(arena.free_area[1].blocks) == [0, 2, 4, 6]
    assert arena.counters.merges == 0
    assert audit_arena(arena).problems == []


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
    # A freed top-order block is listed, and handed out again before the run.
    arena.free([(0, 10)])
    assert arena.nr_free()[10] == (1 << 18) - 1
    assert arena.alloc(10) == 0
    assert arena.alloc(10) == 2048


def test_one_tebibyte_arena_splits_a_single_page_off_its_first_block() -> None:
    arena = Arena(ArenaSpec(node=0, zone="Normal", start_pfn=0, pages=1 << 28))
    assert arena.alloc(0) == 0
    assert arena.counters.splits == 10
    assert arena.nr_free() == [1] * 10 + [(1 << 18) - 1]
    assert free_blocks(arena) == {k: [1 << k] for k in range(10)}
    arena.free([(0, 0)])
    assert arena.counters.merges == 10
    assert arena.nr_free() == [0] * 10 + [1 << 18]
    assert audit_arena(arena).problems == []


def test_bulk_allocation_takes_what_is_left_and_says_so() -> None:
    arena = Arena(ArenaSpec(node=0, zone="DMA", start_pfn=0, pages=100))
    pfns = arena.alloc_bulk(0, 150)
    assert sorted(pfns) == list(range(100))
    assert arena.free_pages == 0
    assert arena.counters.failed_allocations[0] == 1
    assert arena.free_bulk(0, pfns) == 100
    assert arena.nr_free() == Arena(arena.spec).nr_free()
