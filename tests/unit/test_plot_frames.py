"""The frame map: one holder per frame from hand-built answers, and the
answers that do not add up refused with a message that names the pfn."""

from __future__ import annotations

import numpy as np
import pytest

from memsim.buddy.v1 import buddy_pb2
from memsim.common.v1 import common_pb2
from memsim.mmu.v1 import mmu_pb2
from memsim.plots.answers import snapshot_from_answers
from memsim.plots.frames import (
    NO_CATEGORY,
    Category,
    Claim,
    FrameMapError,
    Snapshot,
    Source,
    ZoneSpan,
    build_frame_map,
)
from memsim.services.frames import (
    block_ranges,
    merge_ranges,
    message_ranges,
    pfn_ranges,
    ranges_message,
)
from memsim.slab.v1 import slab_pb2
from memsim.zone.v1 import zone_pb2

F, U, P, S, V, R = (
    Category.FREE,
    Category.USER,
    Category.PAGE_TABLE,
    Category.SLAB,
    Category.VMALLOC,
    Category.RESERVED,
)
# Two zones with a hole between them: DMA [0, 16) with 4 reserved pages,
# Normal [20, 36) with 2 reserved pages; pfns 16..19 are in no zone.
DMA = ZoneSpan(0, "DMA", 0, 16, 14, 12, 4)
NORMAL = ZoneSpan(0, "Normal", 20, 16, 15, 14, 22)
CLAIMS = [
    Claim(Source.BUDDY, [(4, 4), (8, 2), (24, 8)]),
    Claim(Source.PCP, [(10, 1), (32, 1)]),
    Claim(Source.ANON, [(11, 2), (33, 2)]),
    Claim(Source.PAGE_TABLES, [(13, 1)]),
    Claim(Source.SLAB_UNRECLAIMABLE, [(14, 1)], "slab cache size-32"),
    Claim(Source.SLAB_RECLAIMABLE, [(22, 1)], "slab cache dentry"),
    Claim(Source.VMALLOC, [(15, 1), (23, 1)]),
    Claim(Source.MMU_LISTS, [(35, 1)]),
]
EXPECTED = (
    [R] * 4
    + [F] * 7
    + [U, U, P, S, V]  # DMA, 0..15
    + [R] * 4  # the hole, 16..19
    + [R] * 2
    + [S, V]
    + [F] * 9
    + [U, U, F]  # Normal, 20..35
)


def snapshot(claims: list[Claim] = CLAIMS) -> Snapshot:
    return Snapshot([NORMAL, DMA], claims, 4096, "test")


def test_every_pfn_gets_its_category_and_a_hole_is_reserved() -> None:
    fmap = build_frame_map(snapshot())
    assert fmap.total_pfns == 36
    assert fmap.categories().tolist() == [int(c) for c in EXPECTED]
    assert fmap.category_counts == {F: 17, U: 4, P: 1, S: 2, V: 2, R: 10}
    assert fmap.source_counts[Source.HOLE] == 4
    assert fmap.source_counts[Source.BOOT_RESERVED] == 6
    assert fmap.source_counts[Source.PCP] == 2
    assert fmap.source_counts[Source.MMU_LISTS] == 1


def test_a_pfn_claimed_twice_is_an_error_naming_both() -> None:
    claims = [*CLAIMS, Claim(Source.SLAB_UNRECLAIMABLE, [(12, 1)], "slab cache task_struct")]
    with pytest.raises(FrameMapError, match=r"pfn 12 \(node 0 zone DMA\) is claimed twice") as e:
        build_frame_map(snapshot(claims))
    assert "anonymous" in str(e.value)
    assert "slab cache task_struct" in str(e.value)


def test_a_managed_pfn_claimed_by_nobody_is_an_error() -> None:
    claims = [c for c in CLAIMS if c.source != Source.MMU_LISTS]
    with pytest.raises(FrameMapError, match=r"pfns \[35, 36\) of node 0 zone Normal .* nobody"):
        build_frame_map(snapshot(claims))


def test_claims_on_reserved_pages_holes_or_past_the_end_are_errors() -> None:
    with pytest.raises(FrameMapError, match="pfn 2 is claimed by page tables but belongs to"):
        build_frame_map(snapshot([*CLAIMS, Claim(Source.PAGE_TABLES, [(2, 1)])]))
    with pytest.raises(FrameMapError, match="pfn 17 is claimed by vmalloc but belongs to the hole"):
        build_frame_map(snapshot([*CLAIMS, Claim(Source.VMALLOC, [(17, 1)])]))
    with pytest.raises(FrameMapError, match="past the machine's last frame 35"):
        build_frame_map(snapshot([*CLAIMS, Claim(Source.ANON, [(36, 2)])]))


def test_overlapping_zones_and_no_zones_are_errors() -> None:
    with pytest.raises(FrameMapError, match="inside another zone"):
        build_frame_map(Snapshot([DMA, ZoneSpan(0, "Normal", 8, 16, 16, 16, 8)], []))
    with pytest.raises(FrameMapError, match="no zones"):
        build_frame_map(Snapshot([], []))


def test_binned_categories_take_the_majority_and_break_ties_toward_scarce_use() -> None:
    zone = ZoneSpan(0, "Normal", 0, 12, 12, 12, 0)
    claims = [
        Claim(Source.BUDDY, [(0, 3), (4, 2), (9, 1)]),
        Claim(Source.ANON, [(3, 1), (6, 2), (10, 2)]),
        Claim(Source.PAGE_TABLES, [(8, 1)]),
    ]
    fmap = build_frame_map(Snapshot([zone], claims))
    # bins of 4: [F F F U] -> F; [F F U U] -> tie, U; [P F U U] -> U; then nothing.
    assert fmap.binned_categories(4, 4).tolist() == [F, U, U, NO_CATEGORY]
    # bins of 2: [F F] [F U] tie->U [F F] [U U] [P F] tie->P [U U]
    assert fmap.binned_categories(2, 6).tolist() == [F, U, F, U, P, U]
    # A run that spans several bins counts in each.
    big = build_frame_map(
        Snapshot(
            [ZoneSpan(0, "Normal", 0, 1 << 20, 1 << 20, 1 << 20, 0)],
            [
                Claim(Source.BUDDY, [(0, 1000), (1100, (1 << 20) - 1100)]),
                Claim(Source.ANON, [(1000, 100)]),
            ],
        )
    )
    binned = big.binned_categories(64, 1 << 14)
    # [960, 1024): 40 free, 24 user; [1024, 1088): all user; [1088, 1152): 12 user.
    assert np.count_nonzero(binned == U) == 1
    assert binned[16].item() == U
    assert np.count_nonzero(binned == F) == (1 << 14) - 1


def test_answers_become_a_snapshot() -> None:
    ref = common_pb2.ArenaRef(node=0, zone="Normal")
    zone = zone_pb2.GetZoneFramesResponse(
        zones=[
            zone_pb2.ZoneFrames(
                zone=ref,
                start_pfn=0,
                spanned_pages=16,
                present_pages=15,
                managed_pages=12,
                managed_start_pfn=4,
                pcp_pages=ranges_message([(4, 1)]),
            )
        ],
        page_size_bytes=4096,
        profile="test",
    )
    buddy = [
        buddy_pb2.ArenaFreeBlocks(
            arena=ref,
            start_pfn=4,
            pages=12,
            free_lists=[
                buddy_pb2.FreeList(order=0, pages=ranges_message([(5, 1)])),
                buddy_pb2.FreeList(order=1, pages=ranges_message([(6, 2)])),
                buddy_pb2.FreeList(order=2, pages=ranges_message([(12, 4)])),
            ],
        )
    ]
    mmu = mmu_pb2.GetMmuFramesResponse(
        anon_pages=ranges_message([(8, 1)]),
        shmem_pages=ranges_message([(9, 1)]),
        page_table_pages=ranges_message([(10, 1)]),
        frame_cache_pages=ranges_message([(11, 1)]),
    )
    slab = slab_pb2.GetSlabFramesResponse(vmalloc_pages=ranges_message([]))
    fmap = build_frame_map(snapshot_from_answers(zone, buddy, mmu, slab))
    assert fmap.categories().tolist() == [R] * 4 + [F] * 4 + [U, U, P, F] + [F] * 4
    assert fmap.source_counts[Source.SHMEM] == 1
    assert fmap.profile == "test"


def test_pfn_sets_go_as_merged_ranges() -> None:
    assert merge_ranges([(10, 2), (0, 4), (4, 1), (11, 5), (30, 0)]) == [(0, 5), (10, 6)]
    assert pfn_ranges([7, 3, 4, 5, 9]) == [(3, 3), (7, 1), (9, 1)]
    assert block_ranges([(8, 3), (0, 2), (4, 2)]) == [(0, 16)]
    message = ranges_message([(0, 5), (10, 6)])
    assert list(message.start_pfns) == [0, 10]
    assert message_ranges(message) == [(0, 5), (10, 6)]
    with pytest.raises(ValueError, match="1 start_pfns but 0 counts"):
        message_ranges(common_pb2.PfnRanges(start_pfns=[1]))
