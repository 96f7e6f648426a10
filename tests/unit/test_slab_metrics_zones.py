"""memsim_slab_zone_pages: the slab service's pages by zone (the zone layout
the MMU uses, built from the profile) and kind, after real allocations."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from memsim.profiles.loader import load_profile
from memsim.services.slab.core import SlabAllocator
from memsim.services.slab.metrics import SlabCollector

# x86_32: DMA is pfns 0..4095, Normal 4096..229375, HighMem 229376.. .
DMA, NORMAL, HIGHMEM = 100, 5000, 240000
KINDS = ("slab_reclaimable", "slab_unreclaimable", "vmalloc")


def test_slab_zone_pages_follow_slabs_and_vmalloc() -> None:
    slab = SlabAllocator(load_profile("x86_32"))
    registry = CollectorRegistry()
    registry.register(SlabCollector(slab))

    def pages(zone: str, kind: str) -> float | None:
        return registry.get_sample_value(
            "memsim_slab_zone_pages", {"node": "0", "zone": zone, "kind": kind}
        )

    for zone in ("DMA", "Normal", "HighMem"):
        for kind in KINDS:
            assert pages(zone, kind) == 0

    # dentry (SLAB_RECLAIM_ACCOUNT): 31 objects fill one order-0 slab, from Normal.
    dentries = slab.cache_alloc("dentry", 32, [NORMAL, NORMAL + 1])
    assert dentries.unused_pfns == []
    assert pages("Normal", "slab_reclaimable") == 2
    # kmalloc's caches are unreclaimable; one slab from DMA.
    kmalloc = slab.kmalloc(64, 1, [DMA])
    assert pages("DMA", "slab_unreclaimable") == 1
    assert pages("Normal", "slab_unreclaimable") == 0
    # vmalloc: three pages from HighMem.
    area = slab.vmalloc(3 * 4096, [HIGHMEM, HIGHMEM + 1, HIGHMEM + 2])
    assert pages("HighMem", "vmalloc") == 3

    # The per-zone figures add up to meminfo's.
    total = slab.slab_pages()
    reclaimable = sum(pages(z, "slab_reclaimable") or 0 for z in ("DMA", "Normal", "HighMem"))
    unreclaimable = sum(pages(z, "slab_unreclaimable") or 0 for z in ("DMA", "Normal", "HighMem"))
    assert (reclaimable, unreclaimable) == (total.reclaimable, total.unreclaimable) == (2, 1)

    # Frees give the pages back (the emptied slabs once the caches shrink).
    assert slab.vfree(area.addr) == [(HIGHMEM, 0), (HIGHMEM + 1, 0), (HIGHMEM + 2, 0)]
    assert pages("HighMem", "vmalloc") == 0
    slab.kfree(kmalloc.addresses)
    slab.cache_free("dentry", dentries.addresses)
    slab.shrink_cache(slab.kmalloc_cache(64).name)
    slab.shrink_cache("dentry")
    assert pages("DMA", "slab_unreclaimable") == 0
    assert pages("Normal", "slab_reclaimable") == 0
