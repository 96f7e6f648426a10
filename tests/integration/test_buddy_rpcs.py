"""Every RPC of memsim.buddy.v1.BuddyAllocator over loopback, on good input."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import grpc
import pytest

from memsim.buddy.v1 import buddy_pb2 as pb
from memsim.common.v1 import common_pb2
from memsim.services.buddy.arena import MAX_BULK_COUNT

if TYPE_CHECKING:
    from tests.integration.conftest import BuddyHarness

FRESH_DMA = [0] * 10 + [4]
FRESH_NORMAL = [0] * 10 + [220]
NORMAL_START, NORMAL_END = 4096, 229376


def block(pfn: int, order: int) -> common_pb2.PageBlock:
    return common_pb2.PageBlock(pfn=pfn, order=order)


# -- CreateArena --------------------------------------------------------------------


async def test_create_arena_returns_the_arena_with_default_max_order(buddy: BuddyHarness) -> None:
    response = await buddy.stub.CreateArena(
        pb.CreateArenaRequest(ref=common_pb2.ArenaRef(node=0, zone="DMA"), start_pfn=0, pages=4096)
    )
    assert response.arena == pb.Arena(
        ref=common_pb2.ArenaRef(node=0, zone="DMA"),
        start_pfn=0,
        pages=4096,
        max_order=11,
        free_pages=4096,
        allocated_pages=0,
    )
    assert await buddy.nr_free("DMA") == FRESH_DMA


async def test_create_arena_unaligned_start_and_explicit_max_order(buddy: BuddyHarness) -> None:
    arena = await buddy.client.create_arena(1, "Normal", 100, 1000, max_order=5)
    assert (arena.ref.node, arena.ref.zone) == (1, "Normal")
    assert (arena.start_pfn, arena.pages, arena.max_order) == (100, 1000, 5)
    assert (arena.free_pages, arena.allocated_pages) == (1000, 0)
    # 100 (order 2), 104 (order 3), 61 blocks of order 4 from 112, 1088 (3), 1096 (2).
    assert await buddy.nr_free("Normal", node=1) == [0, 0, 2, 2, 61]


async def test_create_arena_adjacent_to_another_is_accepted(machine: BuddyHarness) -> None:
    arena = await machine.client.create_arena(1, "Normal", NORMAL_END, 1024)
    assert (arena.start_pfn, arena.pages, arena.free_pages) == (NORMAL_END, 1024, 1024)
    assert len(await machine.client.list_arenas()) == 3


# -- ListArenas ---------------------------------------------------------------------


async def test_list_arenas_empty(buddy: BuddyHarness) -> None:
    response = await buddy.stub.ListArenas(pb.ListArenasRequest())
    assert list(response.arenas) == []


async def test_list_arenas_sorted_by_node_then_start_pfn(buddy: BuddyHarness) -> None:
    # Created out of order; node 1's Normal starts below every node 0 arena.
    await buddy.client.create_arena(1, "HighMem", 12288, 4096)
    await buddy.client.create_arena(0, "Normal", 8192, 4096)
    await buddy.client.create_arena(1, "Normal", 0, 4096)
    await buddy.client.create_arena(0, "DMA", 4096, 4096)
    await buddy.client.alloc(0, "Normal", 3)

    arenas = await buddy.client.list_arenas()

    assert [(a.ref.node, a.ref.zone, a.start_pfn) for a in arenas] == [
        (0, "DMA", 4096),
        (0, "Normal", 8192),
        (1, "Normal", 0),
        (1, "HighMem", 12288),
    ]
    assert [(a.free_pages, a.allocated_pages) for a in arenas] == [
        (4096, 0),
        (4088, 8),
        (4096, 0),
        (4096, 0),
    ]


# -- AllocPages ---------------------------------------------------------------------


async def test_alloc_pages_takes_the_lowest_block_and_splits(machine: BuddyHarness) -> None:
    first = await machine.stub.AllocPages(
        pb.AllocPagesRequest(arena=common_pb2.ArenaRef(node=0, zone="DMA"), order=0)
    )
    assert first.block == block(0, 0)
    # expand() left one free block at each order 0..9 and 3 blocks of order 10.
    assert await machine.nr_free("DMA") == [1] * 10 + [3]
    assert await machine.client.alloc(0, "DMA", 0) == 1
    assert await machine.client.alloc(0, "DMA", 1) == 2
    assert await machine.nr_free("DMA") == [0, 0] + [1] * 8 + [3]


async def test_alloc_pages_every_order_is_aligned_and_inside(machine: BuddyHarness) -> None:
    blocks: list[tuple[int, int]] = []
    for order in range(11):
        response = await machine.stub.AllocPages(
            pb.AllocPagesRequest(arena=common_pb2.ArenaRef(node=0, zone="Normal"), order=order)
        )
        assert response.block.order == order
        pfn = response.block.pfn
        assert pfn % (1 << order) == 0
        assert pfn >= NORMAL_START
        assert pfn + (1 << order) <= NORMAL_END
        blocks.append((pfn, order))
    spans = sorted((pfn, pfn + (1 << order)) for pfn, order in blocks)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start, f"overlapping blocks {spans}"
    arenas = {a.ref.zone: a for a in await machine.client.list_arenas()}
    assert arenas["Normal"].allocated_pages == 2047
    assert arenas["Normal"].free_pages == NORMAL_END - NORMAL_START - 2047
    assert arenas["DMA"].allocated_pages == 0
    await machine.assert_sound()


# -- AllocPagesBulk -----------------------------------------------------------------


async def test_alloc_pages_bulk_exact_count(machine: BuddyHarness) -> None:
    response = await machine.stub.AllocPagesBulk(
        pb.AllocPagesBulkRequest(
            arena=common_pb2.ArenaRef(node=0, zone="Normal"), order=2, count=50
        )
    )
    assert response.order == 2
    pfns = list(response.pfns)
    assert len(pfns) == 50
    assert len(set(pfns)) == 50
    assert all(p % 4 == 0 and p >= NORMAL_START and p + 4 <= NORMAL_END for p in pfns)
    # The first 200 pages of the first order-10 block, lowest first.
    assert sorted(pfns) == list(range(NORMAL_START, NORMAL_START + 200, 4))
    arenas = {a.ref.zone: a for a in await machine.client.list_arenas()}
    assert arenas["Normal"].allocated_pages == 200


async def test_alloc_pages_bulk_returns_fewer_when_memory_runs_out(buddy: BuddyHarness) -> None:
    await buddy.client.create_arena(0, "DMA", 0, 100, max_order=11)
    assert await buddy.nr_free("DMA") == [0, 0, 1, 0, 0, 1, 1, 0, 0, 0, 0]

    pfns = await buddy.client.alloc_bulk(0, "DMA", 0, 150)

    assert len(pfns) == 100
    assert sorted(pfns) == list(range(100))
    assert await buddy.nr_free("DMA") == [0] * 11
    (arena,) = await buddy.client.list_arenas()
    assert (arena.free_pages, arena.allocated_pages) == (0, 100)
    # Nothing left: an empty answer, not an error.
    assert await buddy.client.alloc_bulk(0, "DMA", 0, 1) == []
    await buddy.assert_sound()


# -- FreePages ----------------------------------------------------------------------


async def test_free_pages_returns_pages_freed_and_merges_back(machine: BuddyHarness) -> None:
    a = await machine.client.alloc(0, "DMA", 0)
    b = await machine.client.alloc(0, "DMA", 3)
    c = await machine.client.alloc(0, "DMA", 5)
    assert (a, b, c) == (0, 8, 32)

    response = await machine.stub.FreePages(
        pb.FreePagesRequest(
            arena=common_pb2.ArenaRef(node=0, zone="DMA"),
            blocks=[block(b, 3), block(a, 0)],
        )
    )
    assert response.freed_pages == 9
    # 0..31 merged back up to order 5; only the order-5 block at 32 is taken.
    assert await machine.nr_free("DMA") == [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 3]

    assert await machine.client.free(0, "DMA", [(c, 5)]) == 32
    assert await machine.nr_free("DMA") == FRESH_DMA
    (dma, _) = await machine.client.list_arenas()
    assert (dma.free_pages, dma.allocated_pages) == (4096, 0)
    await machine.assert_sound()


async def test_free_pages_of_a_bulk_allocation(machine: BuddyHarness) -> None:
    pfns = await machine.client.alloc_bulk(0, "Normal", 1, 300)
    assert await machine.client.free(0, "Normal", [(p, 1) for p in pfns]) == 600
    assert await machine.nr_free("Normal") == FRESH_NORMAL


async def test_free_pages_bulk_frees_blocks_of_one_order(machine: BuddyHarness) -> None:
    pfns = await machine.client.alloc_bulk(0, "DMA", 1, 100)
    assert sorted(pfns) == list(range(0, 200, 2))
    response = await machine.stub.FreePagesBulk(
        pb.FreePagesBulkRequest(
            arena=common_pb2.ArenaRef(node=0, zone="DMA"), order=1, pfns=pfns[:50]
        )
    )
    assert response.freed_pages == 100
    (dma, _) = await machine.client.list_arenas()
    assert (dma.free_pages, dma.allocated_pages) == (4096 - 100, 100)
    assert await machine.client.free_bulk(0, "DMA", 1, pfns[50:]) == 100
    assert await machine.nr_free("DMA") == FRESH_DMA
    await machine.assert_sound()


async def test_alloc_pages_bulk_answer_always_fits_a_message(buddy: BuddyHarness) -> None:
    """The largest bulk allowed fits gRPC's 4 MiB limit even with 8-byte pfns; a
    larger one is refused before anything is allocated, so no page can leak."""
    start = 1 << 51  # pfns of 8 varint bytes
    await buddy.client.create_arena(0, "Normal", start, 1 << 20)
    pfns = await buddy.client.alloc_bulk(0, "Normal", 0, MAX_BULK_COUNT)
    assert len(pfns) == MAX_BULK_COUNT
    assert min(pfns) >= start
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await buddy.client.alloc_bulk(0, "Normal", 0, MAX_BULK_COUNT + 1)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert f"count {MAX_BULK_COUNT + 1} is outside 1..{MAX_BULK_COUNT}" in str(
        refused.value.details()
    )
    (arena,) = await buddy.client.list_arenas()
    assert arena.allocated_pages == MAX_BULK_COUNT


# -- GetBuddyInfo -------------------------------------------------------------------


async def test_get_buddy_info_one_arena(machine: BuddyHarness) -> None:
    response = await machine.stub.GetBuddyInfo(
        pb.GetBuddyInfoRequest(arena=common_pb2.ArenaRef(node=0, zone="DMA"))
    )
    assert len(response.arenas) == 1
    (info,) = response.arenas
    assert info.arena == common_pb2.ArenaRef(node=0, zone="DMA")
    assert list(info.nr_free) == FRESH_DMA


async def test_get_buddy_info_all_arenas(machine: BuddyHarness) -> None:
    await machine.client.alloc(0, "Normal", 4)
    response = await machine.stub.GetBuddyInfo(pb.GetBuddyInfoRequest())
    assert [(i.arena.node, i.arena.zone) for i in response.arenas] == [
        (0, "DMA"),
        (0, "Normal"),
    ]
    assert list(response.arenas[0].nr_free) == FRESH_DMA
    assert list(response.arenas[1].nr_free) == [0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 219]


# -- GetFragmentation ---------------------------------------------------------------


async def test_get_fragmentation_unfragmented(machine: BuddyHarness) -> None:
    response = await machine.stub.GetFragmentation(pb.GetFragmentationRequest())
    assert [(f.arena.node, f.arena.zone) for f in response.arenas] == [(0, "DMA"), (0, "Normal")]
    for frag in response.arenas:
        assert list(frag.unusable_free_index_milli) == [0] * 11
        assert list(frag.fragmentation_index_milli) == [-1000] * 11


async def test_get_fragmentation_of_a_fragmented_arena(buddy: BuddyHarness) -> None:
    await buddy.client.create_arena(0, "DMA", 0, 64, max_order=11)
    assert sorted(await buddy.client.alloc_bulk(0, "DMA", 0, 64)) == list(range(64))
    # Every other page free: 32 free pages, none of them next to a free buddy.
    assert await buddy.client.free(0, "DMA", [(pfn, 0) for pfn in range(0, 64, 2)]) == 32
    assert await buddy.nr_free("DMA") == [32] + [0] * 10

    response = await buddy.stub.GetFragmentation(
        pb.GetFragmentationRequest(arena=common_pb2.ArenaRef(node=0, zone="DMA"))
    )
    (frag,) = response.arenas
    assert frag.arena == common_pb2.ArenaRef(node=0, zone="DMA")
    assert len(frag.unusable_free_index_milli) == 11
    assert len(frag.fragmentation_index_milli) == 11
    assert list(frag.unusable_free_index_milli) == [0] + [1000] * 10
    # 1000 - (1000 + free_pages * 1000 / 2^order) / free_blocks_total, as mm/vmstat.c.
    assert list(frag.fragmentation_index_milli) == [
        -1000, 469, 719, 844, 907, 938, 954, 961, 965, 967, 968,
    ]  # fmt: skip
    await buddy.assert_sound()


async def test_get_fragmentation_lengths_follow_max_order(buddy: BuddyHarness) -> None:
    await buddy.client.create_arena(0, "DMA", 0, 64, max_order=4)
    (frag,) = await buddy.client.fragmentation(0, "DMA")
    # 64 pages with MAX_ORDER 4: 8 free blocks of order 3.
    assert list(frag.unusable_free_index_milli) == [0, 0, 0, 0]
    assert list(frag.fragmentation_index_milli) == [-1000] * 4


# -- Audit --------------------------------------------------------------------------


async def test_audit_without_arenas(buddy: BuddyHarness) -> None:
    audit = await buddy.stub.Audit(pb.AuditRequest())
    assert audit.ok is True
    assert list(audit.problems) == []
    assert (audit.arenas_checked, audit.blocks_checked) == (0, 0)


async def test_audit_counts_arenas(machine: BuddyHarness) -> None:
    audit = await machine.stub.Audit(pb.AuditRequest())
    assert audit.ok is True
    assert list(audit.problems) == []
    assert audit.arenas_checked == 2

    await machine.client.alloc_bulk(0, "DMA", 0, 10)
    await machine.client.alloc(0, "Normal", 7)
    audit = await machine.client.audit()
    assert audit.ok is True
    assert list(audit.problems) == []
    assert audit.arenas_checked == 2


async def test_audit_counts_blocks(machine: BuddyHarness) -> None:
    audit = await machine.client.audit()
    # One boot run in each arena: 4 + 220 blocks of order 10.
    assert audit.blocks_checked == 4 + 220

    await machine.client.alloc(0, "DMA", 0)
    audit = await machine.client.audit()
    # DMA: 10 split halves + 3 top blocks + 1 allocated; Normal: 220.
    assert audit.blocks_checked == 14 + 220
