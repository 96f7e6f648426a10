"""mm/vmstat.c's fragmentation indices, checked by hand.

fill_contig_page_info:   free_pages += nr_free[o] << o; free_blocks_total += nr_free[o];
                         free_blocks_suitable += nr_free[o] << (o - k) for o >= k
unusable_free_index:     (free_pages - (suitable << k)) * 1000 // free_pages, 1000 if none free
fragmentation_index:     0 if no free block, -1000 if a suitable one, else
                         1000 - (1000 + free_pages * 1000 // 2^k) // free_blocks_total
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memsim.procfs.extfrag import format_index_file, format_milli
from memsim.services.buddy.arena import Arena, ArenaSpec
from memsim.services.buddy.fragmentation import (
    ContigPageInfo,
    fill_contig_page_info,
    fragmentation_index,
    fragmentation_indices,
    unusable_free_index,
    unusable_free_indices,
)


def test_fill_contig_page_info() -> None:
    # nr_free [3, 2, 1]: 3 + 4 + 4 = 11 pages in 6 blocks; for order 1 the suitable
    # blocks are 2 (order 1) + 1 << 1 (the order-2 block counts as two).
    assert fill_contig_page_info([3, 2, 1], 1) == ContigPageInfo(11, 6, 4)
    assert fill_contig_page_info([3, 2, 1], 0) == ContigPageInfo(11, 6, 11)
    # Order 2: only the order-2 block.
    assert fill_contig_page_info([3, 2, 1], 2) == ContigPageInfo(11, 6, 1)
    # An order past the vector: nothing is suitable.
    assert fill_contig_page_info([3, 2, 1], 3) == ContigPageInfo(11, 6, 0)
    # [4, 0, 0]: 4 pages in 4 blocks; suitable for order 1: none.
    assert fill_contig_page_info([4, 0, 0], 1) == ContigPageInfo(4, 4, 0)
    # [0, 0, 0, 5] for order 1: each order-3 block holds 2^(3-1) = 4 order-1 blocks.
    assert fill_contig_page_info([0, 0, 0, 5], 1) == ContigPageInfo(40, 5, 20)
    assert fill_contig_page_info([], 0) == ContigPageInfo(0, 0, 0)


def test_unusable_free_index() -> None:
    # Four free single pages: all usable for order 0, none for order 1 or 2:
    # order 1: (4 - 0 << 1) * 1000 // 4 = 1000.
    assert unusable_free_index(1, fill_contig_page_info([4, 0, 0], 1)) == 1000
    assert unusable_free_indices([4, 0, 0]) == [0, 1000, 1000]
    # [3, 2, 1], order 1: (11 - 4 * 2) * 1000 // 11 = 3000 // 11 = 272;
    # order 2: (11 - 1 * 4) * 1000 // 11 = 7000 // 11 = 636.
    assert unusable_free_indices([3, 2, 1]) == [0, 272, 636]
    # [1, 1, 0]: 3 pages. Order 1: (3 - 1 * 2) * 1000 // 3 = 333; order 2: 3000 // 3.
    assert unusable_free_indices([1, 1, 0]) == [0, 333, 1000]
    # [2, 0, 1]: 6 pages. Order 1: suitable 2, (6 - 4) * 1000 // 6 = 333 (truncated
    # from 333.3); order 2: suitable 1, (6 - 4) * 1000 // 6 = 333.
    assert unusable_free_indices([2, 0, 1]) == [0, 333, 333]
    # Only large blocks: all of it is usable at every order.
    assert unusable_free_indices([0, 0, 2]) == [0, 0, 0]
    # No free pages: nothing is usable.
    assert unusable_free_index(0, ContigPageInfo(0, 0, 0)) == 1000
    assert unusable_free_indices([0, 0, 0]) == [1000, 1000, 1000]


def test_fragmentation_index() -> None:
    # Order 1 with four free single pages: 1000 - (1000 + 4 * 1000 // 2) // 4 = 250.
    # Order 2: 1000 - (1000 + 4000 // 4) // 4 = 500.
    assert fragmentation_index(1, fill_contig_page_info([4, 0, 0], 1)) == 250
    assert fragmentation_indices([4, 0, 0]) == [-1000, 250, 500]
    # [3, 0, 0] order 1: 1000 - (1000 + 3000 // 2) // 3 = 1000 - 2500 // 3 = 1000 - 833
    # = 167; order 2: 1000 - (1000 + 750) // 3 = 1000 - 583 = 417.
    assert fragmentation_indices([3, 0, 0]) == [-1000, 167, 417]
    # [1, 1, 0] order 2: 3 pages in 2 blocks: 1000 - (1000 + 3000 // 4) // 2 = 1000 -
    # 1750 // 2 = 125. Orders 0 and 1 can be served.
    assert fragmentation_indices([1, 1, 0]) == [-1000, -1000, 125]
    # [5, 1, 0] order 2: 7 pages in 6 blocks: 1000 - (1000 + 7000 // 4) // 6 = 1000 -
    # 2750 // 6 = 1000 - 458 = 542.
    assert fragmentation_index(2, fill_contig_page_info([5, 1, 0], 2)) == 542
    # [1, 1, 1] order 3: 7 pages in 3 blocks, one page short of an order-3 block:
    # 1000 - (1000 + 7000 // 8) // 3 = 1000 - 1875 // 3 = 1000 - 625 = 375.
    assert fragmentation_index(3, fill_contig_page_info([1, 1, 1, 0], 3)) == 375
    # A single free page and an order-1 request: 1000 - (1000 + 1000 // 2) // 1 = -500.
    # The kernel's formula does go below 0 with very few free blocks.
    assert fragmentation_index(1, fill_contig_page_info([1, 0], 1)) == -500
    # A suitable block exists: the allocation would succeed.
    assert fragmentation_index(1, fill_contig_page_info([0, 1, 0], 1)) == -1000
    assert fragmentation_indices([0, 0, 2]) == [-1000, -1000, -1000]
    # No free block at all: lack of memory, not fragmentation.
    assert fragmentation_index(3, ContigPageInfo(0, 0, 0)) == 0
    assert fragmentation_indices([0, 0, 0]) == [0, 0, 0]


def test_indices_of_a_real_arena() -> None:
    # 16 pages, MAX_ORDER 5; take pfns 0..3 one by one and give back 0 and 2: free
    # are 0 and 2 (order 0, their buddies busy), 4 (order 2) and 8 (order 3).
    arena = Arena(ArenaSpec(node=0, zone="Normal", start_pfn=0, pages=16, max_order=5))
    pfns = [arena.alloc(0) for _ in range(4)]
    arena.free([(pfns[0], 0), (pfns[2], 0)])
    nr_free = arena.nr_free()
    assert nr_free == [2, 0, 1, 1, 0]
    # 14 free pages. Order 1: suitable 2 + 4 = 6, (14 - 12) * 1000 // 14 = 142;
    # order 2: suitable 1 + 2 = 3, (14 - 12) * 1000 // 14 = 142; order 3: suitable 1,
    # (14 - 8) * 1000 // 14 = 428; order 4: none, 1000.
    assert unusable_free_indices(nr_free) == [0, 142, 142, 428, 1000]
    # Order 4: 4 blocks: 1000 - (1000 + 14000 // 16) // 4 = 1000 - 1875 // 4 = 532.
    assert fragmentation_indices(nr_free) == [-1000, -1000, -1000, -1000, 532]


@settings(max_examples=200, deadline=None)
@given(nr_free=st.lists(st.integers(0, 1000), min_size=1, max_size=11))
def test_indices_stay_in_range_and_agree_on_success(nr_free: list[int]) -> None:
    for order in range(len(nr_free)):
        info = fill_contig_page_info(nr_free, order)
        unusable = unusable_free_index(order, info)
        fragmentation = fragmentation_index(order, info)
        assert 0 <= unusable <= 1000
        # Without a suitable block every free block holds at most 2^k / 2 pages, so
        # free_pages * 1000 // 2^k <= 500 * free_blocks_total: the index is >= -500.
        assert fragmentation == -1000 or -500 <= fragmentation <= 1000
        # The allocation would succeed exactly when some free memory is usable.
        assert (fragmentation == -1000) == (any(nr_free[order:]))
        assert (unusable < 1000) == (any(nr_free[order:]))
    assert unusable_free_indices(nr_free)[0] == (0 if any(nr_free) else 1000)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (-1000, "-1.000"),
        (250, "0.250"),
        (1000, "1.000"),
        (0, "0.000"),
        (5, "0.005"),
        (125, "0.125"),
        (999, "0.999"),
        (2500, "2.500"),
    ],
)
def test_format_milli(value: int, text: str) -> None:
    assert format_milli(value) == text


def test_debugfs_format() -> None:
    assert format_index_file([(0, "DMA", [-1000, 250])]) == "Node 0, zone      DMA -1.000 0.250 \n"
    assert format_index_file([]) == ""
