"""/proc/zoneinfo's nr_anon_pages, nr_page_table_pages and nr_slab_* come
from the services that own those pages: the zone service's GetZoneInfo,
completed with the MMU's GetStats and the slab's GetSlabInfo per-zone
figures, as `memsim cat /proc/zoneinfo` does. The servicers run in process
over one zone allocator; the MMU's frames and the slab's pages come from it."""

from __future__ import annotations

import re
from typing import Any, cast

import grpc

from memsim.clients.cli.procfiles import fill_zone_stats
from memsim.procfs.zoneinfo import format_zoneinfo
from memsim.profiles.loader import load_profile
from memsim.services.buddy.local import LocalBuddy
from memsim.services.mmu import vma as v
from memsim.services.mmu.core import Mmu
from memsim.services.mmu.frame_cache import FrameCache
from memsim.services.mmu.server import mmu_stats
from memsim.services.slab.core import SlabAllocator
from memsim.services.slab.server import SlabServicer
from memsim.services.slab.service import SlabService
from memsim.services.slab.zone_port import LocalPages
from memsim.services.zone import gfp as g
from memsim.services.zone.allocator import ZoneAllocator
from memsim.services.zone.machine import Machine
from memsim.services.zone.server import ZoneServicer
from memsim.services.zone.vmstat import ZONE_STAT_ITEMS
from memsim.slab.v1 import slab_pb2
from memsim.zone.v1 import zone_pb2

PAGE = 4096
# Only a refused call touches the context.
CONTEXT = cast("grpc.aio.ServicerContext[Any, Any]", None)
OWNED = ("nr_anon_pages", "nr_page_table_pages", "nr_slab_reclaimable", "nr_slab_unreclaimable")


def zone_stats(text: str) -> dict[str, dict[str, int]]:
    """zone name -> the counters its zoneinfo section lists."""
    sections = re.split(r"^Node \d+, zone +(\w+)\n", text, flags=re.M)[1:]
    return {
        name: {k: int(n) for k, n in re.findall(r"^    (\w+) +(\d+)$", body, flags=re.M)}
        for name, body in zip(sections[::2], sections[1::2], strict=True)
    }


async def frames(allocator: ZoneAllocator, gfp_mask: int, count: int) -> list[int]:
    got = await allocator.alloc_pages(gfp_mask, 0, count, cpu=0)
    return [pfn for allocation in got for pfn in allocation.pfns]


async def test_zoneinfo_counts_anon_page_table_and_slab_pages_per_zone() -> None:
    profile = load_profile("x86_32")  # DMA, Normal and HighMem on one node
    allocator = ZoneAllocator(Machine(profile), LocalBuddy())
    await allocator.boot()
    try:
        slab = SlabService(SlabAllocator(profile), LocalPages(allocator))
        await slab.cache_alloc("dentry", 32, g.GFP_KERNEL)  # reclaimable: 2 slabs
        await slab.kmalloc(64, 1, g.GFP_KERNEL)  # size-64: 1 slab
        await slab.vmalloc(2 * PAGE, "test")  # HighMem pages, neither kind of slab

        mmu = Mmu(profile)
        mmu.create_process("init", 0, 0, 0, set(), [], await frames(allocator, g.GFP_KERNEL, 1))
        proc = mmu.create_process(
            "app", 0, 1, 0, set(), [], await frames(allocator, g.GFP_KERNEL, 1)
        )
        addr, _ = mmu.mmap(
            proc, 0, 3 * PAGE, v.PROT_READ | v.PROT_WRITE, v.MAP_PRIVATE | v.MAP_ANONYMOUS
        )
        plan = mmu.plan_access(proc, addr, 3 * PAGE, write=True)
        user = await frames(allocator, g.GFP_HIGHUSER_MOVABLE, plan.frames_needed)
        tables = await frames(allocator, g.GFP_KERNEL, len(plan.tables))
        mmu.apply_access(proc, plan, user, tables)
        cache = FrameCache(64, 8, node_of_pfn=lambda pfn: 0, node_of_cpu=lambda cpu: 0)

        zone_info = await ZoneServicer(allocator).GetZoneInfo(
            zone_pb2.GetZoneInfoRequest(), CONTEXT
        )
        before = zone_stats(format_zoneinfo(zone_info, list(ZONE_STAT_ITEMS)))
        # The zone alone does not know who holds its pages.
        assert all(before[zone][item] == 0 for zone in before for item in OWNED)

        stats = mmu_stats(mmu, cache)
        assert {(z.node, z.zone) for z in stats.zones} == {
            (0, "DMA"),
            (0, "Normal"),
            (0, "HighMem"),
        }
        slab_info = await SlabServicer(slab).GetSlabInfo(slab_pb2.GetSlabInfoRequest(), CONTEXT)
        fill_zone_stats(zone_info, stats, slab_info)
        after = zone_stats(format_zoneinfo(zone_info, list(ZONE_STAT_ITEMS)))

        assert after["HighMem"]["nr_anon_pages"] == 3
        assert after["Normal"]["nr_anon_pages"] == 0
        assert after["Normal"]["nr_page_table_pages"] == 3  # two pgds, one pte page
        assert after["HighMem"]["nr_page_table_pages"] == 0
        assert after["Normal"]["nr_slab_reclaimable"] == 2
        assert after["Normal"]["nr_slab_unreclaimable"] == 1
        assert after["HighMem"]["nr_slab_unreclaimable"] == 0
        for item in OWNED:
            assert after["DMA"][item] == 0
        # The per-zone figures add up to the services' totals.
        assert sum(z.anon_pages for z in stats.zones) == stats.anon_pages
        assert sum(z.page_table_pages for z in stats.zones) == stats.page_table_pages
        assert sum(z.slab_reclaimable_pages for z in slab_info.zones) == (
            slab_info.reclaimable_pages
        )
        assert sum(z.slab_unreclaimable_pages for z in slab_info.zones) == (
            slab_info.unreclaimable_pages
        )
        assert sum(z.vmalloc_pages for z in slab_info.zones) == 2
        # What the zone knows itself stays: nr_free_pages.
        assert after["Normal"]["nr_free_pages"] == before["Normal"]["nr_free_pages"]
    finally:
        await allocator.stop()
