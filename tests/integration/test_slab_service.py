"""The slab service over gRPC, with zone and buddy servers behind it: caches,
constructors, kmalloc, vmalloc, debug checks, reclaim and bad input."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
import pytest_asyncio

from memsim.procfs.slabinfo import SlabinfoRow, format_slabinfo
from memsim.profiles.loader import load_profile
from memsim.runtime.channel import open_channel
from memsim.runtime.server import start_server
from memsim.services.slab import flags as f
from memsim.services.slab.client import SlabClient
from memsim.services.slab.config import SlabConfig
from memsim.services.slab.server import slab_service
from memsim.services.zone import gfp as g
from memsim.services.zone.client import ZoneClient
from memsim.services.zone.config import ZoneConfig
from memsim.services.zone.server import zone_service
from memsim.slab.v1 import slab_pb2 as pb
from tests.integration.conftest import BuddyHarness


def in_use(info: pb.CacheInfo) -> int:
    """Objects the callers hold: slabinfo's active objects less the freed ones
    on the array cache."""
    return info.active_objects - info.array_avail


@dataclass
class SlabStack:
    slab: SlabClient
    zone: ZoneClient

    async def cache(self, name: str) -> pb.CacheInfo:
        (info,) = [c for c in (await self.slab.slabinfo()).caches if c.name == name]
        return info

    async def state(self) -> tuple[pb.GetSlabInfoResponse, list[tuple[int, str, int]]]:
        """Everything a refused call must leave as it was."""
        info = await self.zone.zoneinfo()
        free = [(n.node, z.ref.zone, z.free_pages) for n in info.nodes for z in n.zones]
        return await self.slab.slabinfo(), free


@contextlib.asynccontextmanager
async def slab_stack(buddy: BuddyHarness, mem: str = "64M") -> AsyncIterator[SlabStack]:
    profile = load_profile("x86_32", mem=mem)
    zone = await start_server(
        zone_service(ZoneConfig(profile, buddy.running.address)), "127.0.0.1:0", None
    )
    slab = await start_server(slab_service(SlabConfig(profile, zone.address)), "127.0.0.1:0", None)
    zone_channel, slab_channel = open_channel(zone.address), open_channel(slab.address)
    try:
        yield SlabStack(SlabClient(slab_channel), ZoneClient(zone_channel))
    finally:
        await slab_channel.close(None)
        await zone_channel.close(None)
        await slab.stop(0)
        await zone.stop(0)


@pytest_asyncio.fixture
async def stack(buddy: BuddyHarness) -> AsyncIterator[SlabStack]:
    async with slab_stack(buddy) as s:
        yield s


async def test_boot_caches_are_there_in_slabinfo_order(stack: SlabStack) -> None:
    names = [c.name for c in (await stack.slab.slabinfo()).caches]
    for name in (
        "task_struct",
        "mm_struct",
        "vm_area_struct",
        "inode_cache",
        "dentry",
        "buffer_head",
        "names_cache",
        "size-32",
        "size-131072",
        "size-64(DMA)",
    ):
        assert name in names, name
    # The chain is newest first: kmalloc's caches come first at boot, so last here.
    assert names.index("size-32") > names.index("task_struct")


async def test_kmalloc_rounds_up_and_kfree_gives_it_back(stack: SlabStack) -> None:
    response = await stack.slab.kmalloc(100, count=3)
    # x86_32's L1 line is 64 bytes: no size-96, but size-192 exists (< 128).
    assert (response.cache, response.size_class_bytes) == ("size-128", 128)
    assert len(set(response.addresses)) == 3
    assert await stack.slab.ksize(response.addresses[0]) == 128
    dma = await stack.slab.kmalloc(150, gfp_mask=g.GFP_KERNEL | g.GFP_DMA)
    assert dma.cache == "size-192(DMA)"
    before = await stack.cache("size-128")
    await stack.slab.kfree(list(response.addresses))
    after = await stack.cache("size-128")
    assert in_use(after) == in_use(before) - 3
    # On the array cache: still active for slabinfo, as in the kernel.
    assert after.array_avail == before.array_avail + 3
    assert after.active_objects == before.active_objects


async def test_a_constructor_runs_only_on_new_slabs(stack: SlabStack) -> None:
    info = await stack.slab.create_cache("mydev", 64, ctor="pattern")
    assert (info.objects_per_slab, info.gfporder) == (59, 0)  # (4096 - 32 - 4) // (64 + 4)
    (a,) = await stack.slab.cache_alloc("mydev")
    assert (await stack.cache("mydev")).ctor_calls == 59  # the whole new slab
    constructed = await stack.slab.read(a, 64)
    await stack.slab.write(a, b"left like this")
    await stack.slab.cache_free("mydev", [a])
    (again,) = await stack.slab.cache_alloc("mydev")
    assert again == a  # LIFO: the object just freed
    assert await stack.slab.read(again, 64) == b"left like this" + constructed[14:]
    assert (await stack.cache("mydev")).ctor_calls == 59  # not constructed again


async def test_poison_catches_a_use_after_free_in_the_kernels_words(stack: SlabStack) -> None:
    await stack.slab.create_cache("leaky", 40, flags=f.SLAB_POISON | f.SLAB_RED_ZONE)
    (a,) = await stack.slab.cache_alloc("leaky")
    await stack.slab.cache_free("leaky", [a])
    await stack.slab.write(a + 4, b"\x00\x01")  # a write after the free
    await stack.slab.cache_alloc("leaky")
    log = list((await stack.slab.kernel_log()).lines)
    assert any(line.startswith("Slab corruption: leaky start=") for line in log), log
    assert (await stack.cache("leaky")).errors == 1


async def test_red_zone_catches_a_write_past_the_end(stack: SlabStack) -> None:
    await stack.slab.create_cache("overrun", 40, flags=f.SLAB_RED_ZONE)
    (a,) = await stack.slab.cache_alloc("overrun")
    await stack.slab.write(a + 36, b"12345678")  # 4 bytes past the end
    await stack.slab.cache_free("overrun", [a])
    log = list((await stack.slab.kernel_log()).lines)
    assert any("redzone" in line.lower() for line in log), log
    assert (await stack.cache("overrun")).errors >= 1


async def test_vmalloc_maps_pages_with_a_guard_page(stack: SlabStack) -> None:
    address = await stack.slab.vmalloc(3 * 4096 + 1, caller="module_alloc+0x4e/0x70")
    info = await stack.slab.vmallocinfo()
    (area,) = [a for a in info.areas if a.address == address]
    assert (area.pages, area.size_bytes) == (4, 5 * 4096)  # 4 pages and the guard page
    assert area.caller == "module_alloc+0x4e/0x70"
    assert info.used_bytes >= 5 * 4096
    assert await stack.slab.vfree(address) == 4
    assert address not in [a.address for a in (await stack.slab.vmallocinfo()).areas]


async def test_a_batch_grows_every_slab_it_needs_at_once(stack: SlabStack) -> None:
    """2,000 size-32 objects: the array cache's and the slabs' free objects
    first, then as many new slabs of 113 objects as the rest needs, made from
    the blocks of one zone call."""
    before = await stack.cache("size-32")
    # cache_estimate, on-slab: (4096 - sizeof(struct slab) 28) // (32 + a 4-byte
    # bufctl) = 113, and ALIGN(28 + 113 * 4, 32) + 113 * 32 = 4096 still fits.
    assert before.objects_per_slab == 113
    free = before.total_objects - before.active_objects + before.array_avail
    response = await stack.slab.kmalloc(32, count=2000)
    after = await stack.cache("size-32")
    assert after.total_slabs - before.total_slabs == -(-(2000 - free) // 113)
    assert after.array_avail == 0
    assert in_use(after) == in_use(before) + 2000
    await stack.slab.kfree(list(response.addresses))
    assert in_use(await stack.cache("size-32")) == in_use(before)


async def test_destroy_refused_while_objects_live(stack: SlabStack) -> None:
    await stack.slab.create_cache("busy", 128)
    (a,) = await stack.slab.cache_alloc("busy")
    before = await stack.state()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stack.slab.destroy_cache("busy")
    assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "Can't free all objects" in str(err.value.details())
    assert await stack.state() == before
    await stack.slab.cache_free("busy", [a])
    await stack.slab.destroy_cache("busy")
    assert "busy" not in [c.name for c in (await stack.slab.slabinfo()).caches]


async def test_bad_input_gets_a_clear_status_and_changes_nothing(stack: SlabStack) -> None:
    await stack.slab.create_cache("one", 64)
    await stack.slab.create_cache("two", 64)
    (mine,) = await stack.slab.cache_alloc("one")
    (freed,) = await stack.slab.cache_alloc("one")
    await stack.slab.cache_free("one", [freed])
    (obj,) = (await stack.slab.kmalloc(64)).addresses
    info = await stack.slab.vmallocinfo()
    info_area_end = info.areas[-1].address + info.areas[-1].size_bytes if info.areas else 0
    if not info_area_end:  # no area yet: one page past the start of the range
        info_area_end = (await stack.slab.vmalloc(4096)) + 8192
    before = await stack.state()
    s = stack.slab
    cases = [
        (s.kmalloc(0), grpc.StatusCode.INVALID_ARGUMENT),
        (s.kmalloc(-5), grpc.StatusCode.INVALID_ARGUMENT),
        (s.kmalloc((4 << 20) + 1), grpc.StatusCode.INVALID_ARGUMENT),
        (s.cache_alloc("nope"), grpc.StatusCode.NOT_FOUND),
        (s.cache_free("nope", [mine]), grpc.StatusCode.NOT_FOUND),
        (s.create_cache("one", 64), grpc.StatusCode.ALREADY_EXISTS),
        (s.create_cache("zero", 0), grpc.StatusCode.INVALID_ARGUMENT),
        (s.create_cache("ctor", 64, ctor="no-such-ctor"), grpc.StatusCode.INVALID_ARGUMENT),
        (s.cache_free("one", [freed]), grpc.StatusCode.FAILED_PRECONDITION),  # double free
        (s.cache_free("two", [mine]), grpc.StatusCode.FAILED_PRECONDITION),  # another cache's
        (s.cache_free("one", [mine, mine]), grpc.StatusCode.FAILED_PRECONDITION),
        (s.kfree([mine]), grpc.StatusCode.FAILED_PRECONDITION),  # not from kmalloc
        (s.kfree([12345]), grpc.StatusCode.FAILED_PRECONDITION),
        (s.kfree([]), grpc.StatusCode.INVALID_ARGUMENT),
        (s.kfree([obj, obj]), grpc.StatusCode.FAILED_PRECONDITION),
        (s.ksize(12345), grpc.StatusCode.FAILED_PRECONDITION),
        (s.read(12345, 4), grpc.StatusCode.INVALID_ARGUMENT),
        (s.read(mine, 0), grpc.StatusCode.INVALID_ARGUMENT),
        (s.write(mine, b""), grpc.StatusCode.INVALID_ARGUMENT),
        (s.vmalloc(0), grpc.StatusCode.INVALID_ARGUMENT),
        (s.vfree(12345), grpc.StatusCode.INVALID_ARGUMENT),  # not page aligned
        (s.vfree(info_area_end), grpc.StatusCode.NOT_FOUND),
        (s.destroy_cache("size-32"), grpc.StatusCode.FAILED_PRECONDITION),
        (s.cache_alloc("one", 1 << 17), grpc.StatusCode.INVALID_ARGUMENT),
    ]
    for call, code in cases:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() is code, (err.value.code(), err.value.details())
        assert err.value.details()
        assert await stack.state() == before, err.value.details()
    await stack.slab.cache_free("one", [mine])  # and it still works


async def test_reclaim_shrinks_the_reclaimable_caches(buddy: BuddyHarness) -> None:
    """Zone's kswapd and direct reclaim ask the slab (a registered reclaimer):
    dentries go, oldest first, and their pages come back."""
    async with slab_stack(buddy, mem="32M") as stack:
        dentries = []
        for _ in range(10):
            dentries += await stack.slab.cache_alloc("dentry", 4000)
        before = await stack.cache("dentry")
        assert before.active_objects >= 40000
        held = []
        with contextlib.suppress(grpc.aio.AioRpcError):
            for _ in range(200):
                held += await stack.zone.alloc(g.GFP_KERNEL, 0, 64)
        after = await stack.cache("dentry")
        assert after.active_objects < before.active_objects
        assert after.total_slabs < before.total_slabs
        vmstat = dict(await stack.zone.vmstat())
        assert vmstat["pgsteal_normal"] + vmstat["pgsteal_dma"] > 0


async def test_slabinfo_rows_format_as_the_kernel_prints_them(stack: SlabStack) -> None:
    info = await stack.cache("size-32")
    row = SlabinfoRow(
        info.name,
        info.active_objects,
        info.total_objects,
        info.buffer_size_bytes,
        info.objects_per_slab,
        1 << info.gfporder,
        info.limit,
        info.batchcount,
        info.shared,
        info.active_slabs,
        info.total_slabs,
    )
    text = format_slabinfo([row])
    assert text.startswith("slabinfo - version: 2.1\n# name            <active_objs>")
    assert "size-32" in text
