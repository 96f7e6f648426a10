"""The zone collector reads the allocator's state at scrape time."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from memsim.profiles.loader import load_profile
from memsim.services.buddy.local import LocalBuddy
from memsim.services.zone.allocator import ZoneAllocator
from memsim.services.zone.gfp import GFP_KERNEL
from memsim.services.zone.machine import Machine
from memsim.services.zone.metrics import ZoneCollector


async def test_zone_metrics_follow_allocations() -> None:
    # nommu: one Normal zone of 2048 pages, 1776 managed, watermarks 90/112/135.
    allocator = ZoneAllocator(Machine(load_profile("nommu")), LocalBuddy())
    await allocator.boot()
    try:
        registry = CollectorRegistry()
        registry.register(ZoneCollector(allocator))
        zone = {"node": "0", "zone": "Normal"}

        def sample(name: str, **labels: str) -> float | None:
            return registry.get_sample_value(name, {**zone, **labels})

        assert sample("memsim_zone_managed_pages") == 1776
        assert sample("memsim_zone_present_pages") == 2032
        assert sample("memsim_zone_spanned_pages") == 2048
        assert sample("memsim_zone_free_pages") == 1776
        assert sample("memsim_zone_watermark_pages", watermark="min") == 90
        assert sample("memsim_zone_watermark_pages", watermark="high") == 135
        await allocator.alloc_pages(GFP_KERNEL, 2, 1, cpu=0)
        # Order 2 comes straight from buddy: 4 pages fewer free, 4 allocated.
        assert sample("memsim_zone_free_pages") == 1772
        assert (
            registry.get_sample_value("memsim_vmstat_events_total", {"item": "pgalloc_normal"}) == 4
        )
        assert registry.get_sample_value("memsim_zone_reclaimers") == 0
    finally:
        await allocator.stop()
