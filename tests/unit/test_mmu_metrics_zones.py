"""memsim_mmu_zone_pages (the MMU's frames by zone and kind) and
memsim_mmu_process_resident_pages (each live process's RSS), read at scrape
time after real faults, forks, shared memory and exits."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from memsim.profiles.loader import load_profile
from memsim.services.mmu import vma as v
from memsim.services.mmu.core import Mmu
from memsim.services.mmu.frame_cache import FrameCache
from memsim.services.mmu.metrics import MmuCollector
from memsim.services.mmu.process import Process
from memsim.services.zone.gfp import GFP_HIGHUSER_MOVABLE

PAGE = 4096
# x86_32: DMA is pfns 0..4095, Normal 4096..229375, HighMem 229376.. .
DMA, NORMAL, HIGHMEM = 100, 5000, 240000
RW = v.PROT_READ | v.PROT_WRITE


def touch(
    mmu: Mmu, proc: Process, addr: int, pages: int, frames: list[int], tables: list[int]
) -> None:
    """Faults [addr, addr + pages) in for writing with the frames and table pages
    given, as many as the plan asks for (the rest are left in the lists)."""
    plan = mmu.plan_access(proc, addr, pages * PAGE, write=True)
    got = [frames.pop(0) for _ in range(plan.frames_needed)]
    table_pages = [tables.pop(0) for _ in plan.tables]
    released = mmu.apply_access(proc, plan, got, table_pages)
    assert not released.frames


def test_zone_pages_and_process_rss_follow_the_mmu() -> None:
    mmu = Mmu(load_profile("x86_32"))
    cache = FrameCache(64, 8, node_of_pfn=lambda pfn: 0, node_of_cpu=lambda cpu: 0)
    registry = CollectorRegistry()
    registry.register(MmuCollector(mmu, cache))

    def zone_pages(zone: str, kind: str) -> float | None:
        return registry.get_sample_value(
            "memsim_mmu_zone_pages", {"node": "0", "zone": zone, "kind": kind}
        )

    def rss(proc: Process) -> float | None:
        return registry.get_sample_value(
            "memsim_mmu_process_resident_pages", {"pid": str(proc.pid), "comm": proc.name}
        )

    # Every zone and kind has a series from the start.
    for zone in ("DMA", "Normal", "HighMem"):
        for kind in ("anon", "page_table", "shmem", "frame_cache"):
            assert zone_pages(zone, kind) == 0

    tables = list(range(NORMAL, NORMAL + 100))
    init = mmu.create_process("init", 0, 0, 0, set(), [], [tables.pop(0)])
    app = mmu.create_process("app", 0, 1, 0, set(), [], [tables.pop(0)])
    assert rss(init) == 0
    assert rss(app) == 0
    assert zone_pages("Normal", "page_table") == 2  # the two pgds

    # Three user pages from HighMem and one more table page (2 levels on x86_32).
    addr, _ = mmu.mmap(app, 0, 3 * PAGE, RW, v.MAP_PRIVATE | v.MAP_ANONYMOUS)
    touch(mmu, app, addr, 3, [HIGHMEM, HIGHMEM + 1, HIGHMEM + 2], tables)
    assert zone_pages("HighMem", "anon") == 3
    assert zone_pages("Normal", "anon") == 0
    assert zone_pages("Normal", "page_table") == 3
    assert rss(app) == 3

    # fork: the child maps the same frames (no new anon page) and copies the tables.
    child = mmu.fork(app, "kid", [tables.pop(0) for _ in range(mmu.plan_fork(app))])
    assert rss(child) == 3
    assert zone_pages("HighMem", "anon") == 3
    assert zone_pages("Normal", "page_table") == 5
    # The child writes one page: copy-on-write into a frame from DMA.
    touch(mmu, child, addr, 1, [DMA], tables)
    assert zone_pages("DMA", "anon") == 1
    assert zone_pages("HighMem", "anon") == 3
    assert rss(child) == 3

    # A System V segment of two pages, its frames from Normal.
    shmid = mmu.shmget(app, 0, 2 * PAGE, create=True)
    at = mmu.shmat(app, shmid, 0, read_only=False)
    touch(mmu, app, at, 2, [NORMAL + 500, NORMAL + 501], tables)
    assert zone_pages("Normal", "shmem") == 2
    assert zone_pages("Normal", "anon") == 0
    assert rss(app) == 5
    page_tables = zone_pages("Normal", "page_table")

    # Frames on the MMU's own lists.
    assert cache.put(GFP_HIGHUSER_MOVABLE, [HIGHMEM + 10, HIGHMEM + 11, DMA + 1], 0) == []
    assert zone_pages("HighMem", "frame_cache") == 2
    assert zone_pages("DMA", "frame_cache") == 1

    # The child exits: its series goes, its copy and its tables with it.
    released = mmu.exit(child)
    assert released.frames == [DMA]
    assert rss(child) is None
    assert rss(app) == 5
    assert zone_pages("DMA", "anon") == 0
    assert zone_pages("HighMem", "anon") == 3
    assert page_tables is not None
    assert zone_pages("Normal", "page_table") == page_tables - 2

    # The sums agree with the MMU's totals.
    assert registry.get_sample_value("memsim_mmu_resident_pages") == 5
    assert registry.get_sample_value("memsim_mmu_page_table_pages") == page_tables - 2


def test_without_an_mmu_the_processes_blocks_are_anon_pages() -> None:
    mmu = Mmu(load_profile("nommu"))  # one Normal zone, no page tables
    registry = CollectorRegistry()
    registry.register(MmuCollector(mmu))
    mmu.create_process("init", 0, 0, 0, set(), [], [])
    proc = mmu.create_process("flat", 0, 1, 0, set(), [], [])
    order = mmu.nommu_order(v.MAP_PRIVATE | v.MAP_ANONYMOUS, 3 * PAGE)
    assert order == 2
    mmu.map_block(proc, 300, order, 3 * PAGE, RW, v.MAP_PRIVATE | v.MAP_ANONYMOUS)
    labels = {"node": "0", "zone": "Normal"}
    assert registry.get_sample_value("memsim_mmu_zone_pages", {**labels, "kind": "anon"}) == 4
    assert registry.get_sample_value("memsim_mmu_zone_pages", {**labels, "kind": "page_table"}) == 0
    assert (
        registry.get_sample_value(
            "memsim_mmu_process_resident_pages", {"pid": str(proc.pid), "comm": "flat"}
        )
        == 4
    )
