"""The MMU collector reads faults, processes and swap at scrape time."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from memsim.profiles.loader import load_profile
from memsim.services.mmu import vma as v
from memsim.services.mmu.core import Mmu
from memsim.services.mmu.metrics import MmuCollector


def test_mmu_metrics_follow_faults_and_swap() -> None:
    mmu = Mmu(load_profile("x86_32"), swap_pages=100)
    registry = CollectorRegistry()
    registry.register(MmuCollector(mmu))
    mmu.create_process("init", 0, 0, 0, set(), [], [5000])
    proc = mmu.create_process("app", 0, 1, 0, set(), [], [5001])
    addr, _ = mmu.mmap(
        proc, 0, 3 * 4096, v.PROT_READ | v.PROT_WRITE, v.MAP_PRIVATE | v.MAP_ANONYMOUS
    )
    plan = mmu.plan_access(proc, addr, 3 * 4096, write=True)
    mmu.apply_access(proc, plan, [6000, 6001, 6002], [5002])
    assert registry.get_sample_value("memsim_mmu_page_faults_total", {"kind": "minor"}) == 3
    assert registry.get_sample_value("memsim_mmu_processes") == 2
    assert registry.get_sample_value("memsim_mmu_resident_pages") == 3
    assert registry.get_sample_value("memsim_mmu_page_table_pages") == 3
    assert registry.get_sample_value("memsim_mmu_lru_pages", {"list": "active"}) == 3
    # Priority 0, swappiness 100: everything old and unreferenced goes.
    for _ in range(3):
        mmu.shrink_zone((0, "Normal"), 32, 0, 100, {})
    assert registry.get_sample_value("memsim_mmu_swap_pages_total", {"direction": "out"}) == 3
    assert registry.get_sample_value("memsim_mmu_swapped_pages") == 3
    assert registry.get_sample_value("memsim_mmu_resident_pages") == 0
