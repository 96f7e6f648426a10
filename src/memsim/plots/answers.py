"""The services' Get*Frames answers as a Snapshot of plain numbers."""

from __future__ import annotations

from collections.abc import Sequence

from memsim.buddy.v1 import buddy_pb2
from memsim.mmu.v1 import mmu_pb2
from memsim.plots.frames import Claim, Snapshot, Source, ZoneSpan
from memsim.services.frames import message_ranges
from memsim.slab.v1 import slab_pb2
from memsim.zone.v1 import zone_pb2


def snapshot_from_answers(
    zone: zone_pb2.GetZoneFramesResponse,
    buddy: Sequence[buddy_pb2.ArenaFreeBlocks],
    mmu: mmu_pb2.GetMmuFramesResponse,
    slab: slab_pb2.GetSlabFramesResponse,
) -> Snapshot:
    zones = [
        ZoneSpan(
            node=z.zone.node,
            name=z.zone.zone,
            start_pfn=z.start_pfn,
            spanned=z.spanned_pages,
            present=z.present_pages,
            managed=z.managed_pages,
            managed_start_pfn=z.managed_start_pfn,
        )
        for z in zone.zones
    ]
    claims: list[Claim] = []
    for arena in buddy:
        where = f"node {arena.arena.node} zone {arena.arena.zone}"
        for free_list in arena.free_lists:
            claims.append(
                Claim(
                    Source.BUDDY,
                    message_ranges(free_list.pages),
                    f"buddy's free_area[{free_list.order}] of {where}",
                )
            )
    for z in zone.zones:
        where = f"node {z.zone.node} zone {z.zone.zone}"
        claims.append(Claim(Source.PCP, message_ranges(z.pcp_pages), f"the pcp lists of {where}"))
    claims += [
        Claim(Source.ANON, message_ranges(mmu.anon_pages), "the MMU's anonymous pages"),
        Claim(Source.SHMEM, message_ranges(mmu.shmem_pages), "the MMU's shared memory"),
        Claim(Source.PAGE_TABLES, message_ranges(mmu.page_table_pages), "the MMU's page tables"),
        Claim(
            Source.MMU_LISTS, message_ranges(mmu.frame_cache_pages), "the MMU's per-CPU frame lists"
        ),
        Claim(Source.BLOCKS, message_ranges(mmu.block_pages), "the processes' blocks (no MMU)"),
    ]
    for cache in slab.caches:
        source = Source.SLAB_RECLAIMABLE if cache.reclaimable else Source.SLAB_UNRECLAIMABLE
        claims.append(Claim(source, message_ranges(cache.pages), f"slab cache {cache.name}"))
    claims.append(Claim(Source.VMALLOC, message_ranges(slab.vmalloc_pages), "vmalloc"))
    return Snapshot(zones, claims, zone.page_size_bytes or 4096, zone.profile)
