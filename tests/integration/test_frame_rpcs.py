"""The Get*Frames calls of buddy, zone, mmu and slab over gRPC: together they
name one holder for every frame, agree with each service's own counts, stay
answered on a halted machine, and GetFreeBlocks refuses a bad arena."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from memsim.buddy.v1 import buddy_pb2
from memsim.clients.process.process import Process
from memsim.common.v1 import common_pb2
from memsim.plots.answers import snapshot_from_answers
from memsim.plots.frames import Category, Source, build_frame_map
from memsim.profiles.loader import load_profile
from memsim.runtime.panic import PanicGate
from memsim.services.frames import message_ranges, total_pages
from memsim.services.mmu.client import MmuClient
from memsim.services.slab.client import SlabClient
from memsim.services.zone.client import ZoneClient
from tests.integration.conftest import BuddyHarness, running_servers

MIB = 1 << 20


@dataclass
class Stack:
    buddy: BuddyHarness
    zone: ZoneClient
    mmu: MmuClient
    slab: SlabClient
    mmu_channel: grpc.aio.Channel


@contextlib.asynccontextmanager
async def stack(buddy: BuddyHarness, data_dir: Path) -> AsyncIterator[Stack]:
    profile = load_profile("x86_32", mem="64M")
    async with running_servers(
        profile, data_dir, buddy_address=buddy.running.address, slab=True
    ) as servers:
        yield Stack(buddy, servers.zone, servers.mmu, servers.slab, servers.mmu_channel)


@pytest_asyncio.fixture
async def machine(buddy: BuddyHarness, tmp_path: Path) -> AsyncIterator[Stack]:
    async with stack(buddy, tmp_path) as s:
        yield s


async def test_the_answers_name_one_holder_per_frame_and_match_the_counts(
    machine: Stack,
) -> None:
    m = machine
    keeper = await Process.spawn(m.mmu_channel, "keeper")
    leaver = await Process.spawn(m.mmu_channel, "leaver")
    for proc, size in ((keeper, 2 * MIB), (leaver, MIB)):
        addr = await proc.mmap(size)
        await proc.touch(addr, size)
    await leaver.exit()
    await m.slab.vmalloc(5 * 4096, "test")
    await m.slab.kmalloc(100, 50)

    zone_frames = await m.zone.zone_frames()
    free_blocks = await m.buddy.client.free_blocks()
    mmu_frames = await m.mmu.mmu_frames()
    slab_frames = await m.slab.slab_frames()
    fmap = build_frame_map(snapshot_from_answers(zone_frames, free_blocks, mmu_frames, slab_frames))

    info = await m.zone.zoneinfo()
    stats = await m.mmu.stats()
    slabinfo = await m.slab.slabinfo()
    zones = [z for node in info.nodes for z in node.zones]
    assert fmap.total_pfns == 64 * MIB // 4096
    assert fmap.source_counts[Source.BUDDY] == sum(
        a.free_pages for a in await m.buddy.client.list_arenas()
    )
    assert fmap.source_counts[Source.PCP] == sum(p.count for z in zones for p in z.pagesets)
    counts = fmap.category_counts
    assert counts[Category.USER] == stats.active_pages + stats.inactive_pages == 2 * MIB // 4096
    assert counts[Category.PAGE_TABLE] == stats.page_table_pages > 0
    assert counts[Category.SLAB] == slabinfo.reclaimable_pages + slabinfo.unreclaimable_pages
    assert counts[Category.VMALLOC] == 5
    assert counts[Category.RESERVED] == fmap.total_pfns - sum(z.managed_pages for z in zones)
    assert fmap.source_counts[Source.MMU_LISTS] > 0  # the leaver's frames, kept for faults
    # The zone's spans are zoneinfo's.
    assert [(z.start_pfn, z.spanned_pages, z.managed_pages) for z in zone_frames.zones] == [
        (z.start_pfn, z.spanned_pages, z.managed_pages) for z in zones
    ]


async def test_free_blocks_are_whole_aligned_blocks_that_buddyinfo_counts(
    machine: Stack,
) -> None:
    proc = await Process.spawn(machine.mmu_channel, "fragmenter")
    addr = await proc.mmap(3 * MIB)
    await proc.touch(addr, 3 * MIB)
    await proc.munmap(addr + MIB, 4096 * 3)
    info = {
        (i.arena.node, i.arena.zone): list(i.nr_free)
        for i in await machine.buddy.client.buddyinfo()
    }
    for arena in await machine.buddy.client.free_blocks():
        nr_free = info[(arena.arena.node, arena.arena.zone)]
        assert [f.order for f in arena.free_lists] == list(range(len(nr_free)))
        for free_list in arena.free_lists:
            size = 1 << free_list.order
            ranges = message_ranges(free_list.pages)
            assert all(start % size == 0 and count % size == 0 for start, count in ranges)
            assert all(
                arena.start_pfn <= start and start + count <= arena.start_pfn + arena.pages
                for start, count in ranges
            )
            assert total_pages(ranges) // size == nr_free[free_list.order]
    (dma,) = await machine.buddy.client.free_blocks(0, "DMA")
    assert dma.arena.zone == "DMA"


async def test_free_blocks_of_a_bad_arena_are_refused(machine: Stack) -> None:
    stub = machine.buddy.stub
    with pytest.raises(grpc.aio.AioRpcError) as empty:
        await stub.GetFreeBlocks(buddy_pb2.GetFreeBlocksRequest(arena=common_pb2.ArenaRef(node=0)))
    assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "arena.zone is empty" in (empty.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await stub.GetFreeBlocks(
            buddy_pb2.GetFreeBlocksRequest(arena=common_pb2.ArenaRef(node=3, zone="Normal"))
        )
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    await machine.buddy.assert_sound()


@pytest.mark.parametrize(
    ("service", "method"),
    [
        ("memsim.buddy.v1.BuddyAllocator", "GetFreeBlocks"),
        ("memsim.zone.v1.ZoneAllocator", "GetZoneFrames"),
        ("memsim.mmu.v1.Mmu", "GetMmuFrames"),
        ("memsim.slab.v1.Slab", "GetSlabFrames"),
    ],
)
def test_a_halted_machine_still_answers_the_frame_calls(service: str, method: str) -> None:
    gate = PanicGate()
    gate.halt("Kernel panic - not syncing: Out of memory and no killable processes...")
    assert gate.refusal(service, method) is None
