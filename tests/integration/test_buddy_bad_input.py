"""Every bad input of the buddy service: its status code, its message, and that
it changed nothing (buddyinfo, arenas, fragmentation) and the server still serves.

Requests go through the raw stub: the typed client cannot express most of them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import grpc
import pytest
import pytest_asyncio

from memsim.buddy.v1 import buddy_pb2 as pb
from memsim.common.v1 import common_pb2

if TYPE_CHECKING:
    from tests.integration.conftest import BuddyHarness, State

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
EXISTS = grpc.StatusCode.ALREADY_EXISTS
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED

DMA = common_pb2.ArenaRef(node=0, zone="DMA")
NORMAL = common_pb2.ArenaRef(node=0, zone="Normal")
NOPE = common_pb2.ArenaRef(node=0, zone="Nope")
NO_ZONE = common_pb2.ArenaRef(node=0)

# Blocks the `busy` fixture allocates, in this order: (arena, pfn, order).
BUSY = [(DMA, 0, 0), (DMA, 1, 0), (DMA, 2, 0), (DMA, 4, 2), (NORMAL, 4096, 3)]


def block(pfn: int, order: int) -> common_pb2.PageBlock:
    return common_pb2.PageBlock(pfn=pfn, order=order)


def free(arena: common_pb2.ArenaRef, *blocks: tuple[int, int]) -> pb.FreePagesRequest:
    return pb.FreePagesRequest(arena=arena, blocks=[block(p, o) for p, o in blocks])


def create(
    node: int, zone: str, start_pfn: int, pages: int, max_order: int = 0
) -> pb.CreateArenaRequest:
    return pb.CreateArenaRequest(
        ref=common_pb2.ArenaRef(node=node, zone=zone),
        start_pfn=start_pfn,
        pages=pages,
        max_order=max_order,
    )


async def rejected(
    call: Awaitable[object], code: grpc.StatusCode, *fragments: str
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    error = info.value
    assert error.code() == code, error.details()
    details = error.details() or ""
    for fragment in fragments:
        assert fragment in details
    return error


async def assert_unchanged(buddy: BuddyHarness, before: State) -> None:
    """Nothing changed, every invariant holds, and the server still allocates."""
    after = await buddy.state()
    assert after.buddyinfo == before.buddyinfo
    assert after.arenas == before.arenas
    assert after.fragmentation == before.fragmentation
    await buddy.assert_sound()
    pfn = await buddy.client.alloc(0, "Normal", 0)
    assert await buddy.client.free(0, "Normal", [(pfn, 0)]) == 1
    assert (await buddy.state()).buddyinfo == before.buddyinfo


@pytest_asyncio.fixture
async def busy(machine: BuddyHarness) -> BuddyHarness:
    """node 0 DMA and Normal with a few blocks allocated (see BUSY)."""
    for arena, pfn, order in BUSY:
        assert await machine.client.alloc(arena.node, arena.zone, order) == pfn
    assert await machine.nr_free("DMA") == [1, 0, 0, 1, 1, 1, 1, 1, 1, 1, 3]
    return machine


Call = Callable[["BuddyHarness"], Awaitable[object]]

# (call, status code, fragments of the message), against the `busy` machine.
BAD_REQUESTS: dict[str, tuple[Call, grpc.StatusCode, tuple[str, ...]]] = {
    # order outside 0..MAX_ORDER-1
    "alloc-order-minus-1": (
        lambda b: b.stub.AllocPages(pb.AllocPagesRequest(arena=DMA, order=-1)),
        INVALID,
        ("order -1", "0..10"),
    ),
    "alloc-order-11": (
        lambda b: b.stub.AllocPages(pb.AllocPagesRequest(arena=DMA, order=11)),
        INVALID,
        ("order 11", "0..10"),
    ),
    "bulk-order-minus-1": (
        lambda b: b.stub.AllocPagesBulk(pb.AllocPagesBulkRequest(arena=DMA, order=-1, count=1)),
        INVALID,
        ("order -1",),
    ),
    "bulk-order-11": (
        lambda b: b.stub.AllocPagesBulk(pb.AllocPagesBulkRequest(arena=DMA, order=11, count=1)),
        INVALID,
        ("order 11",),
    ),
    "free-order-minus-1": (
        lambda b: b.stub.FreePages(free(DMA, (0, -1))),
        INVALID,
        ("order -1",),
    ),
    "free-order-11": (
        lambda b: b.stub.FreePages(free(DMA, (0, 11))),
        INVALID,
        ("order 11",),
    ),
    # pfns
    "free-pfn-above-arena": (
        lambda b: b.stub.FreePages(free(DMA, (4096, 0))),
        INVALID,
        ("pfn 4096 is outside", "[0, 4096)"),
    ),
    "free-pfn-below-arena": (
        lambda b: b.stub.FreePages(free(NORMAL, (0, 0))),
        INVALID,
        ("pfn 0 is outside", "[4096, 229376)"),
    ),
    "free-pfn-not-aligned": (
        lambda b: b.stub.FreePages(free(DMA, (1, 1))),
        INVALID,
        ("pfn 1 is not aligned to order 1",),
    ),
    "free-pfn-not-aligned-order-3": (
        lambda b: b.stub.FreePages(free(NORMAL, (4100, 3))),
        INVALID,
        ("not aligned",),
    ),
    # unknown arenas
    "alloc-unknown-zone": (
        lambda b: b.stub.AllocPages(pb.AllocPagesRequest(arena=NOPE, order=0)),
        NOT_FOUND,
        ("Nope",),
    ),
    "alloc-unknown-node": (
        lambda b: b.stub.AllocPages(
            pb.AllocPagesRequest(arena=common_pb2.ArenaRef(node=7, zone="DMA"), order=0)
        ),
        NOT_FOUND,
        ("node 7",),
    ),
    "bulk-unknown-zone": (
        lambda b: b.stub.AllocPagesBulk(pb.AllocPagesBulkRequest(arena=NOPE, order=0, count=1)),
        NOT_FOUND,
        ("Nope",),
    ),
    "free-unknown-zone": (
        lambda b: b.stub.FreePages(free(NOPE, (0, 0))),
        NOT_FOUND,
        ("Nope",),
    ),
    "buddyinfo-unknown-zone": (
        lambda b: b.stub.GetBuddyInfo(pb.GetBuddyInfoRequest(arena=NOPE)),
        NOT_FOUND,
        ("Nope",),
    ),
    "fragmentation-unknown-zone": (
        lambda b: b.stub.GetFragmentation(pb.GetFragmentationRequest(arena=NOPE)),
        NOT_FOUND,
        ("Nope",),
    ),
    # missing or empty zone
    "alloc-no-arena": (
        lambda b: b.stub.AllocPages(pb.AllocPagesRequest(order=0)),
        INVALID,
        ("zone",),
    ),
    "bulk-empty-zone": (
        lambda b: b.stub.AllocPagesBulk(pb.AllocPagesBulkRequest(arena=NO_ZONE, count=1)),
        INVALID,
        ("zone",),
    ),
    "free-empty-zone": (
        lambda b: b.stub.FreePages(free(NO_ZONE, (0, 0))),
        INVALID,
        ("zone",),
    ),
    "buddyinfo-empty-zone": (
        lambda b: b.stub.GetBuddyInfo(pb.GetBuddyInfoRequest(arena=NO_ZONE)),
        INVALID,
        ("zone",),
    ),
    "fragmentation-empty-zone": (
        lambda b: b.stub.GetFragmentation(pb.GetFragmentationRequest(arena=NO_ZONE)),
        INVALID,
        ("zone",),
    ),
    "create-empty-zone": (
        lambda b: b.stub.CreateArena(create(1, "", 300000, 16)),
        INVALID,
        ("zone",),
    ),
    # bulk counts
    "bulk-count-0": (
        lambda b: b.stub.AllocPagesBulk(pb.AllocPagesBulkRequest(arena=DMA, order=0, count=0)),
        INVALID,
        ("count 0",),
    ),
    "bulk-count-minus-5": (
        lambda b: b.stub.AllocPagesBulk(pb.AllocPagesBulkRequest(arena=DMA, order=0, count=-5)),
        INVALID,
        ("count -5",),
    ),
    "bulk-count-too-large": (
        lambda b: b.stub.AllocPagesBulk(
            pb.AllocPagesBulkRequest(arena=NORMAL, order=0, count=(1 << 20) + 1)
        ),
        INVALID,
        ("count 1048577",),
    ),
    # free batches
    "free-empty-batch": (
        lambda b: b.stub.FreePages(free(DMA)),
        INVALID,
        ("empty",),
    ),
    "free-never-allocated": (
        lambda b: b.stub.FreePages(free(DMA, (1024, 10))),
        PRECONDITION,
        ("double free", "pfn 1024"),
    ),
    "free-tail-page": (
        lambda b: b.stub.FreePages(free(DMA, (6, 1))),
        PRECONDITION,
        ("inside the block of order 2", "pfn 4"),
    ),
    "free-wrong-order": (
        lambda b: b.stub.FreePages(free(DMA, (4, 1))),
        PRECONDITION,
        ("wrong order", "order 2", "order 1"),
    ),
    "free-twice-in-one-batch": (
        lambda b: b.stub.FreePages(free(DMA, (1, 0), (1, 0))),
        PRECONDITION,
        ("double free", "twice"),
    ),
    "free-good-blocks-then-double-free": (
        lambda b: b.stub.FreePages(free(DMA, (0, 0), (2, 0), (4, 2), (3, 0))),
        PRECONDITION,
        ("double free", "pfn 3"),
    ),
    "free-good-blocks-then-outside": (
        lambda b: b.stub.FreePages(free(DMA, (0, 0), (1, 0), (5000, 0))),
        INVALID,
        ("pfn 5000 is outside",),
    ),
    "free-good-blocks-then-bad-order": (
        lambda b: b.stub.FreePages(free(NORMAL, (4096, 3), (4104, 11))),
        INVALID,
        ("order 11",),
    ),
    "free-good-blocks-then-wrong-order": (
        lambda b: b.stub.FreePages(free(DMA, (2, 0), (4, 1))),
        PRECONDITION,
        ("wrong order",),
    ),
    # arenas
    "create-overlapping": (
        lambda b: b.stub.CreateArena(create(1, "Normal", 4000, 200)),
        PRECONDITION,
        ("overlap", "node 0 zone DMA"),
    ),
    "create-inside-another": (
        lambda b: b.stub.CreateArena(create(1, "Normal", 8192, 16)),
        PRECONDITION,
        ("overlap", "node 0 zone Normal"),
    ),
    "create-duplicate": (
        lambda b: b.stub.CreateArena(create(0, "DMA", 300000, 16)),
        EXISTS,
        ("node 0 zone DMA already has an arena",),
    ),
    "create-pages-0": (
        lambda b: b.stub.CreateArena(create(1, "Normal", 300000, 0)),
        INVALID,
        ("at least one page",),
    ),
    "create-negative-max-order": (
        lambda b: b.stub.CreateArena(create(1, "Normal", 300000, 16, max_order=-1)),
        INVALID,
        ("max_order -1",),
    ),
    "create-max-order-too-large": (
        lambda b: b.stub.CreateArena(create(1, "Normal", 300000, 16, max_order=21)),
        INVALID,
        ("MAX_ORDER 21",),
    ),
    "create-beyond-max-pfn": (
        lambda b: b.stub.CreateArena(create(1, "Normal", 1 << 52, 1)),
        INVALID,
        ("outside",),
    ),
    # FreePagesBulk: the same checks as FreePages
    "free-bulk-empty": (
        lambda b: b.stub.FreePagesBulk(pb.FreePagesBulkRequest(arena=DMA, order=0)),
        INVALID,
        ("empty",),
    ),
    "free-bulk-order-11": (
        lambda b: b.stub.FreePagesBulk(pb.FreePagesBulkRequest(arena=DMA, order=11, pfns=[0])),
        INVALID,
        ("order 11",),
    ),
    "free-bulk-unknown-zone": (
        lambda b: b.stub.FreePagesBulk(pb.FreePagesBulkRequest(arena=NOPE, order=0, pfns=[0])),
        NOT_FOUND,
        ("Nope",),
    ),
    "free-bulk-empty-zone": (
        lambda b: b.stub.FreePagesBulk(pb.FreePagesBulkRequest(arena=NO_ZONE, pfns=[0])),
        INVALID,
        ("zone",),
    ),
    "free-bulk-good-then-double-free": (
        lambda b: b.stub.FreePagesBulk(
            pb.FreePagesBulkRequest(arena=DMA, order=0, pfns=[0, 1, 2, 3])
        ),
        PRECONDITION,
        ("double free", "pfn 3"),
    ),
    "free-bulk-twice-in-one-batch": (
        lambda b: b.stub.FreePagesBulk(pb.FreePagesBulkRequest(arena=DMA, order=0, pfns=[0, 0])),
        PRECONDITION,
        ("twice",),
    ),
    # order -1 for a pfn that is not allocated (pfn 3 is free)
    "free-order-minus-1-of-a-free-pfn": (
        lambda b: b.stub.FreePages(free(DMA, (3, -1))),
        INVALID,
        ("order -1",),
    ),
    "free-good-blocks-then-order-minus-1": (
        lambda b: b.stub.FreePages(free(DMA, (0, 0), (1, 0), (3, -1))),
        INVALID,
        ("order -1",),
    ),
    "free-bulk-order-minus-1": (
        lambda b: b.stub.FreePagesBulk(pb.FreePagesBulkRequest(arena=DMA, order=-1, pfns=[3])),
        INVALID,
        ("order -1",),
    ),
}


@pytest.mark.parametrize(
    ("call", "code", "fragments"),
    [pytest.param(*case, id=name) for name, case in BAD_REQUESTS.items()],
)
async def test_bad_request_is_refused_and_changes_nothing(
    busy: BuddyHarness, call: Call, code: grpc.StatusCode, fragments: tuple[str, ...]
) -> None:
    before = await busy.state()
    await rejected(call(busy), code, *fragments)
    await assert_unchanged(busy, before)


async def test_double_free_after_a_free(busy: BuddyHarness) -> None:
    assert await busy.client.free(0, "DMA", [(2, 0)]) == 1
    before = await busy.state()
    await rejected(busy.stub.FreePages(free(DMA, (2, 0))), PRECONDITION, "double free", "pfn 2")
    await assert_unchanged(busy, before)


async def test_double_free_of_a_block_merged_away(busy: BuddyHarness) -> None:
    # Freeing the order-3 block at 4096 merges it back into an order-10 block.
    assert await busy.client.free(0, "Normal", [(4096, 3)]) == 8
    before = await busy.state()
    await rejected(
        busy.stub.FreePages(free(NORMAL, (4096, 3))), PRECONDITION, "double free", "order 10"
    )
    await assert_unchanged(busy, before)


async def test_bad_batch_frees_nothing_then_the_good_part_frees(busy: BuddyHarness) -> None:
    before = await busy.state()
    await rejected(
        busy.stub.FreePages(free(DMA, (0, 0), (1, 0), (4, 2), (4, 1))), PRECONDITION, "wrong order"
    )
    await assert_unchanged(busy, before)
    # The same good blocks alone are all still allocated, and free.
    response = await busy.stub.FreePages(free(DMA, (0, 0), (1, 0), (4, 2)))
    assert response.freed_pages == 6
    assert await busy.nr_free("DMA") == [1] * 10 + [3]


async def test_exhausted_single_alloc(buddy: BuddyHarness) -> None:
    await buddy.client.create_arena(0, "DMA", 0, 64)
    await buddy.client.create_arena(0, "Normal", 64, 1024)
    assert len(await buddy.client.alloc_bulk(0, "DMA", 0, 64)) == 64
    before = await buddy.state()

    await rejected(
        buddy.stub.AllocPages(pb.AllocPagesRequest(arena=DMA, order=0)),
        EXHAUSTED,
        "no free block of order 0",
        "0 pages free",
    )

    await assert_unchanged(buddy, before)


async def test_alloc_larger_than_any_free_block(machine: BuddyHarness) -> None:
    # Three of the four order-10 blocks are taken: 1024 pages free, none of order 10.
    assert len(await machine.client.alloc_bulk(0, "DMA", 10, 3)) == 3
    assert await machine.client.alloc(0, "DMA", 9) == 3072
    before = await machine.state()

    await rejected(
        machine.stub.AllocPages(pb.AllocPagesRequest(arena=DMA, order=10)),
        EXHAUSTED,
        "no free block of order 10",
        "512 pages free",
    )

    await assert_unchanged(machine, before)
