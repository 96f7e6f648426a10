"""memsim_kswapd_awake: each node's kswapd, awake or asleep, read at scrape time."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from memsim.profiles.loader import load_profile
from memsim.services.buddy.local import LocalBuddy
from memsim.services.zone.allocator import ZoneAllocator
from memsim.services.zone.machine import Machine
from memsim.services.zone.metrics import ZoneCollector


async def test_kswapd_awake_follows_wakeup_and_balance() -> None:
    # numa: two nodes, one kswapd each (not booted: no buddy behind them).
    allocator = ZoneAllocator(Machine(load_profile("numa")), LocalBuddy())
    registry = CollectorRegistry()
    registry.register(ZoneCollector(allocator))

    def awake(node: str) -> float | None:
        return registry.get_sample_value("memsim_kswapd_awake", {"node": node})

    assert (awake("0"), awake("1")) == (0, 0)
    zone = next(z for z in allocator.machine.zones.values() if z.node == 1 and z.managed)
    zone.free_pages = zone.marks.low  # as if allocations had taken it down to low
    allocator.wakeup_kswapd(zone, 0)
    assert (awake("0"), awake("1")) == (0, 1)
    assert registry.get_sample_value("memsim_kswapd_wakeups_total") == 1
    assert registry.get_sample_value("memsim_kswapd_runs_total") == 0

    # kswapd runs, balances (nothing to reclaim: no reclaimers) and sleeps.
    allocator.start_kswapd()
    try:
        for _ in range(500):  # at most 5 s
            if awake("1") == 0:
                break
            await asyncio.sleep(0.01)
        assert awake("1") == 0
        assert registry.get_sample_value("memsim_kswapd_runs_total") == 1
        assert awake("0") == 0
    finally:
        await allocator.stop()
