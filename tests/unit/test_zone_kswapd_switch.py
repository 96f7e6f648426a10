"""MEMSIM_KSWAPD=0: a zone with no kswapd thread, for runs compared call by
call; direct reclaim still serves allocations under pressure."""

from __future__ import annotations

import asyncio

import pytest

from memsim.profiles.loader import load_profile
from memsim.runtime.config import ConfigError
from memsim.services.buddy.local import LocalBuddy
from memsim.services.zone import gfp as g
from memsim.services.zone.allocator import ZoneAllocator
from memsim.services.zone.config import ZoneConfig
from memsim.services.zone.errors import OutOfMemory
from memsim.services.zone.machine import Machine


def test_the_switch_is_read_from_the_environment() -> None:
    assert ZoneConfig.from_env({}).kswapd is True
    assert ZoneConfig.from_env({"MEMSIM_KSWAPD": "0"}).kswapd is False
    with pytest.raises(ConfigError, match="MEMSIM_KSWAPD='no' is not 0 or 1"):
        ZoneConfig.from_env({"MEMSIM_KSWAPD": "no"})


async def test_without_kswapd_no_thread_runs_and_wakeups_change_nothing() -> None:
    allocator = ZoneAllocator(
        Machine(load_profile("x86_32", mem="16M")), LocalBuddy(), kswapd=False
    )
    await allocator.boot()
    try:
        before = allocator.kswapd_runs
        # Take pages until the zones are below their low watermarks: a kernel
        # would wake kswapd; here nothing runs in the background.
        for _ in range(200):
            if allocator.kswapd_wakeups:
                break
            try:
                await allocator.alloc_pages(g.GFP_KERNEL, 0, 32, 0)
            except OutOfMemory:
                break
        await asyncio.sleep(0.1)  # time for a kswapd, were there one, to run
        assert allocator.kswapd_wakeups > 0  # the kernel would have woken it
        assert allocator.kswapd_runs == before
        assert not any(t for t in allocator._kswapd_tasks)
    finally:
        await allocator.stop()
