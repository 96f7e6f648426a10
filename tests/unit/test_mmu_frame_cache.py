"""The MMU's per-CPU frame lists: faults served without the zone, refills of
one batch, frees kept up to high, reclaim and drain_all_pages taking them back."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence

import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry

from memsim.profiles.loader import load_profile
from memsim.services.buddy.local import LocalBuddy
from memsim.services.mmu import vma as v
from memsim.services.mmu.core import Mmu
from memsim.services.mmu.errors import NoMemory
from memsim.services.mmu.frame_cache import HIGH_MAX, FrameCache, sizes_for
from memsim.services.mmu.metrics import MmuCollector
from memsim.services.mmu.service import MmuService
from memsim.services.mmu.zone_port import LocalZone
from memsim.services.zone.allocator import ZoneAllocator
from memsim.services.zone.gfp import GFP_HIGHUSER_MOVABLE, GFP_KERNEL
from memsim.services.zone.machine import Machine
from memsim.services.zone.ports import ShrinkResult

RW = v.PROT_READ | v.PROT_WRITE
ANON = v.MAP_PRIVATE | v.MAP_ANONYMOUS


def test_sizes_scale_with_the_machine_up_to_high_max() -> None:
    assert sizes_for(0) == (0, 0)
    assert sizes_for(2048) == (4, 1)  # an 8 MiB machine keeps 4 pages a list
    assert sizes_for(262144) == (512, 32)  # 1 GiB
    assert sizes_for(1 << 28) == (HIGH_MAX, 32)


def cache(high: int = 4, batch: int = 2) -> FrameCache:
    # Two nodes: pfns below 1000 are node 0's, cpu 0 is on node 0, cpu 1 on node 1.
    return FrameCache(high, batch, lambda pfn: 0 if pfn < 1000 else 1, lambda cpu: cpu)


def test_take_is_all_or_none_and_per_mask_and_cpu() -> None:
    c = cache()
    assert c.put(GFP_KERNEL, [1, 2, 3], 0) == []
    assert c.take(GFP_KERNEL, 4, 0) is None
    assert len(c) == 3  # a short take takes nothing
    assert c.take(GFP_HIGHUSER_MOVABLE, 1, 0) is None  # another mask's list
    assert c.take(GFP_KERNEL, 1, 1) is None  # another cpu's list
    assert c.take(GFP_KERNEL, 2, 0) == [3, 2]  # the last freed first: hot
    assert c.pages() == {(GFP_KERNEL, 0): 1}


def test_put_keeps_up_to_high_and_only_the_cpus_node() -> None:
    c = cache(high=2)
    assert c.put(GFP_KERNEL, [5, 1500, 6, 7], 0) == [1500, 7]
    assert c.put(GFP_KERNEL, [1600], 1) == []
    assert c.pages() == {(GFP_KERNEL, 0): 2, (GFP_KERNEL, 1): 1}
    assert sorted(c.drain(keep=lambda pfn: pfn >= 1000)) == [5, 6]
    assert c.drain() == [1600]
    assert len(c) == 0


class CountingZone(LocalZone):
    """The zone in process, counting the MMU's calls to it."""

    def __init__(self, allocator: ZoneAllocator) -> None:
        super().__init__(allocator)
        self.allocs: list[tuple[int, int, int]] = []
        self.frees: list[int] = []

    async def alloc(
        self,
        gfp_mask: int,
        count: int,
        cpu: int,
        extra: int = 0,
        *,
        pid: int = 0,
        nodes: Sequence[int] = (),
        mempolicy_nodes: Sequence[int] = (),
    ) -> list[int]:
        self.allocs.append((gfp_mask, count, extra))
        return await super().alloc(
            gfp_mask, count, cpu, extra, pid=pid, nodes=nodes, mempolicy_nodes=mempolicy_nodes
        )

    async def free(self, pfns: Iterable[int], cpu: int, cold: bool = False) -> None:
        pfns = list(pfns)
        self.frees.append(len(pfns))
        await super().free(pfns, cpu, cold)


class AsReclaimer:
    """The MMU service as the zone sees it (what its Reclaimer servicer does)."""

    def __init__(self, service: MmuService) -> None:
        self.service = service

    async def shrink_zone(
        self, node: int, zone: str, nr_to_reclaim: int, gfp_mask: int, priority: int, kswapd: bool
    ) -> ShrinkResult:
        return ShrinkResult(*await self.service.reclaim(node, zone, nr_to_reclaim, priority))

    async def drain_cache(self) -> int:
        return await self.service.drain_cache()


@pytest_asyncio.fixture
async def stack() -> AsyncIterator[tuple[MmuService, CountingZone]]:
    profile = load_profile("x86_32", mem="64M")
    zone = ZoneAllocator(Machine(profile), LocalBuddy())
    await zone.boot()
    port = CountingZone(zone)
    service = MmuService(Mmu(profile), port)
    await service.boot()
    try:
        yield service, port
    finally:
        await zone.stop()


async def test_a_fault_after_a_munmap_takes_the_freed_frames_without_the_zone(
    stack: tuple[MmuService, CountingZone],
) -> None:
    service, zone = stack
    batch = service.cache.batch
    assert batch > 0
    app = await service.create_process("app", 0, 1, 0, set(), [])
    address = await service.mmap(app.pid, app.token, 0, 16 << 12, RW, ANON)
    zone.allocs.clear()
    await service.touch(app.pid, app.token, address, 16 << 12, write=True)
    # The table page comes from the kernel list that creating the process
    # refilled; the user list was empty: one call for the 16 frames and a batch.
    assert zone.allocs == [(GFP_HIGHUSER_MOVABLE, 16, batch)]
    await service.munmap(app.pid, app.token, address, 16 << 12)
    zone.allocs.clear()
    address = await service.mmap(app.pid, app.token, 0, 16 << 12, RW, ANON)
    result = await service.touch(app.pid, app.token, address, 16 << 12, write=True)
    assert result.minor_faults == 16
    assert zone.allocs == []  # all from the MMU's own lists
    assert app.mm.rss == 16


async def test_reclaim_and_drain_give_the_lists_back(
    stack: tuple[MmuService, CountingZone],
) -> None:
    service, zone = stack
    allocator = zone.allocator
    await allocator.drain_all_pages()
    app = await service.create_process("app", 0, 1, 0, set(), [])
    address = await service.mmap(app.pid, app.token, 0, 8 << 12, RW, ANON)
    await service.touch(app.pid, app.token, address, 8 << 12, write=True)
    await service.munmap(app.pid, app.token, address, 8 << 12)
    held = service.cache.pages()
    assert sum(held.values()) >= 8
    # 64 MiB has no HighMem: everything is Normal's. Reclaim of DMA leaves
    # them; reclaim of Normal takes every frame the lists hold, as reclaimed.
    assert (await service.reclaim(0, "DMA", 32, 12))[1] == 0
    assert service.cache.pages() == held
    _, reclaimed, _ = await service.reclaim(0, "Normal", 32, 12)
    assert reclaimed == sum(held.values())
    assert len(service.cache) == 0
    address = await service.mmap(app.pid, app.token, 0, 8 << 12, RW, ANON)
    await service.touch(app.pid, app.token, address, 8 << 12, write=True)
    # drain_all_pages asks the MMU (a registered reclaimer) for the rest.
    allocator.register_reclaimer("mmu", AsReclaimer(service))
    await service.exit(app.pid, app.token)
    assert len(service.cache) > 0
    await allocator.drain_all_pages()
    assert len(service.cache) == 0


async def test_a_failed_refill_puts_back_what_the_list_had(
    stack: tuple[MmuService, CountingZone],
) -> None:
    service, zone = stack
    app = await service.create_process("app", 0, 1, 0, set(), [])
    service.cache.put(GFP_HIGHUSER_MOVABLE, await zone.alloc(GFP_HIGHUSER_MOVABLE, 3, 0), 0)
    cpu = service.cpu_of(app)
    before = service.cache.pages()

    async def no_frames(
        gfp_mask: int,
        count: int,
        cpu: int,
        extra: int = 0,
        *,
        pid: int = 0,
        nodes: Sequence[int] = (),
        mempolicy_nodes: Sequence[int] = (),
    ) -> list[int]:
        raise NoMemory("the zone allocator has no frames")

    zone.alloc = no_frames  # type: ignore[method-assign]
    with pytest.raises(NoMemory):
        await service._frames(GFP_HIGHUSER_MOVABLE, 10, cpu)
    assert service.cache.pages() == before


async def test_metrics_show_the_lists_and_where_frames_came_from(
    stack: tuple[MmuService, CountingZone],
) -> None:
    service, _ = stack
    registry = CollectorRegistry()
    registry.register(MmuCollector(service.mmu, service.cache))
    app = await service.create_process("app", 0, 1, 0, set(), [])
    address = await service.mmap(app.pid, app.token, 0, 4 << 12, RW, ANON)
    await service.touch(app.pid, app.token, address, 4 << 12, write=True)
    cpu = str(service.cpu_of(app))
    held = registry.get_sample_value(
        "memsim_mmu_frame_cache_pages", {"cpu": cpu, "gfp_mask": f"{GFP_HIGHUSER_MOVABLE:#x}"}
    )
    assert held == service.cache.pages()[(GFP_HIGHUSER_MOVABLE, service.cpu_of(app))]
    hits = registry.get_sample_value("memsim_mmu_frame_cache_takes_total", {"result": "hit"})
    refills = registry.get_sample_value("memsim_mmu_frame_cache_takes_total", {"result": "refill"})
    assert (hits, refills) == (service.cache.hits, service.cache.refills)
    assert refills is not None
    assert refills >= 1
