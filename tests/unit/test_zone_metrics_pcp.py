"""memsim_zone_pcp_allocations_total: order-0 allocations through a per-CPU
list, counted as buffered_rmqueue serves them (hit: the list had a page;
refill: rmqueue_bulk refilled the empty list from buddy first). The bulk fast
path counts one hit per page it takes off the list and nothing for the pages
it takes from buddy straight."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from memsim.profiles.loader import load_profile
from memsim.services.buddy.local import LocalBuddy
from memsim.services.zone import gfp as g
from memsim.services.zone.allocator import ZoneAllocator
from memsim.services.zone.machine import Machine
from memsim.services.zone.metrics import ZoneCollector

NAME = "memsim_zone_pcp_allocations_total"


async def test_pcp_hits_and_refills_follow_the_per_cpu_list() -> None:
    # ppc: one DMA zone on node 0 whose hot lists take batches of 31 pages.
    allocator = ZoneAllocator(Machine(load_profile("ppc")), LocalBuddy())
    await allocator.boot()
    try:
        registry = CollectorRegistry()
        registry.register(ZoneCollector(allocator))
        zone = allocator.machine.zones[(0, "DMA")]
        hot, cold = zone.pcp[0]

        def count(result: str) -> float | None:
            return registry.get_sample_value(NAME, {"node": "0", "zone": "DMA", "result": result})

        assert (count("hit"), count("refill")) == (0, 0)

        # The hot list is empty: the first page refills it with a batch.
        [first] = await allocator.alloc_pages(g.GFP_KERNEL, 0, 1, cpu=0)
        assert (count("hit"), count("refill")) == (0, 1)
        assert hot.batch == 31
        assert hot.count == hot.batch - 1

        # The next ones come off the list.
        await allocator.alloc_pages(g.GFP_KERNEL, 0, 1, cpu=0)
        await allocator.alloc_pages(g.GFP_KERNEL, 0, 1, cpu=0)
        assert (count("hit"), count("refill")) == (2, 1)

        # A freed page goes back to the list's head, and the next allocation hits it.
        await allocator.free_pages([(first.pfns[0], 0)], cpu=0)
        [again] = await allocator.alloc_pages(g.GFP_KERNEL, 0, 1, cpu=0)
        assert again.pfns == first.pfns
        assert (count("hit"), count("refill")) == (3, 1)

        # Order 2 never passes a per-CPU list.
        await allocator.alloc_pages(g.GFP_KERNEL, 2, 1, cpu=0)
        assert (count("hit"), count("refill")) == (3, 1)

        # A bulk of more pages than the list holds: the fast path empties the
        # list (a hit per page) and takes the rest from buddy in one call.
        on_list = hot.count
        assert on_list > 0
        [bulk] = await allocator.alloc_pages(g.GFP_KERNEL, 0, on_list + 10, cpu=0)
        assert len(bulk.pfns) == on_list + 10
        assert hot.count == 0
        assert (count("hit"), count("refill")) == (3 + on_list, 1)

        # The cold list is a list of its own: empty, so a refill.
        await allocator.alloc_pages(g.GFP_KERNEL | g.COLD, 0, 1, cpu=0)
        assert cold.count == cold.batch - 1
        assert (count("hit"), count("refill")) == (3 + on_list, 2)

        # Every allocation counted was an order-0 pgalloc.
        pgalloc = registry.get_sample_value("memsim_vmstat_events_total", {"item": "pgalloc_dma"})
        assert pgalloc == 4 + 4 + on_list + 10 + 1
    finally:
        await allocator.stop()
