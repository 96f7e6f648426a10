"""mm/vmstat.c's fragmentation indices, checked by hand."""

from __future__ import annotations

from memsim.procfs.extfrag import format_index_file, format_milli
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


def test_unusable_free_index() -> None:
    # Four free single pages: all usable for order 0, none for order 1.
    assert unusable_free_indices([4, 0, 0]) == [0, 1000, 1000]
    # [3, 2, 1], order 1: (11 - 4 * 2) * 1000 // 11 = 272; order 2: (11 - 4) * 1000 // 11.
    assert unusable_free_indices([3, 2, 1]) == [0, 272, 636]
    # No free pages: nothing is usable.
    assert unusable_free_index(0, ContigPageInfo(0, 0, 0)) == 1000


def test_fragmentation_index() -> None:
    # Order 1 with four free single pages: 1000 - (1000 + 4 * 1000 // 2) // 4 = 250.
    # Order 2: 1000 - (1000 + 4000 // 4) // 4 = 500.
    assert fragmentation_indices([4, 0, 0]) == [-1000, 250, 500]
    # A suitable block exists: the allocation would succeed.
    assert fragmentation_index(1, fill_contig_page_info([0, 1, 0], 1)) == -1000
    # No free block at all: lack of memory, not fragmentation.
    assert fragmentation_index(3, ContigPageInfo(0, 0, 0)) == 0


def test_debugfs_format() -> None:
    assert format_milli(-1000) == "-1.000"
    assert format_milli(250) == "0.250"
    assert format_milli(1000) == "1.000"
    assert format_milli(0) == "0.000"
    assert format_index_file([(0, "DMA", [-1000, 250])]) == "Node 0, zone      DMA -1.000 0.250 \n"
