"""The MMU core: VMA split and merge, page-table walks, copy-on-write, exit."""

from __future__ import annotations

import pytest

from memsim.profiles.loader import load_profile
from memsim.services.mmu import vma as v
from memsim.services.mmu.core import COW, HIT, NEW, REUSE, ZERO, Mmu
from memsim.services.mmu.errors import InvalidRequest, NoSuchProcess, PermissionDenied
from memsim.services.mmu.pagetable import PageTable
from memsim.services.mmu.process import Process
from memsim.services.mmu.vma import AddressSpace, Vma

RW = v.PROT_READ | v.PROT_WRITE
ANON = v.MAP_PRIVATE | v.MAP_ANONYMOUS


def spans(space: AddressSpace) -> list[tuple[int, int, str]]:
    return [(a.start, a.end, a.perms) for a in space]


def test_adjacent_compatible_vmas_merge_and_others_do_not() -> None:
    space = AddressSpace()
    space.insert(Vma(10, 20, RW))
    space.insert(Vma(20, 30, RW))  # after: merges
    space.insert(Vma(5, 10, RW))  # before: merges
    assert spans(space) == [(5, 30, "rw-p")]
    space.insert(Vma(30, 40, v.PROT_READ))  # other protection: no merge
    space.insert(Vma(40, 50, RW, shared=True))  # shared: no merge with private
    space.insert(Vma(50, 60, RW, name="[heap]"))
    space.insert(Vma(60, 70, RW, name="[heap]"))  # the heap merges with itself
    assert spans(space) == [(5, 30, "rw-p"), (30, 40, "r--p"), (40, 50, "rw-s"), (50, 70, "rw-p")]


def test_munmap_and_mprotect_split_and_remerge() -> None:
    space = AddressSpace()
    space.insert(Vma(0, 10, RW))
    assert space.unmap(3, 5) == [(3, 5)]
    assert spans(space) == [(0, 3, "rw-p"), (5, 10, "rw-p")]
    space.protect(6, 8, v.PROT_READ)
    assert spans(space) == [(0, 3, "rw-p"), (5, 6, "rw-p"), (6, 8, "r--p"), (8, 10, "rw-p")]
    space.protect(6, 8, RW)  # back as it was: the three merge again
    assert spans(space) == [(0, 3, "rw-p"), (5, 10, "rw-p")]
    assert not space.mapped_through(0, 10)
    assert space.mapped_through(5, 10)


def test_top_down_unmapped_area() -> None:
    space = AddressSpace()
    space.insert(Vma(90, 100, RW))
    space.insert(Vma(70, 85, RW))
    assert space.unmapped_area(5, 100, 1) == 85  # the gap 85..90
    assert space.unmapped_area(6, 100, 1) == 64  # below 70
    assert space.unmapped_area(70, 100, 1) is None


def test_page_table_walks_need_one_table_page_per_level() -> None:
    # x86_32: 1024 entries a table: pte pages cover 1024 pages (4 MiB).
    two = PageTable(levels=2, page_size=4096, pte_bytes=4)
    assert two.bits == 10
    assert two.table_keys(0x12345) == [(1, 0x12345 >> 10)]
    assert two.missing_tables([0, 1, 1023, 1024]) == [(1, 0), (1, 1)]
    # x86_64: 512 entries; a walk goes through pud, pmd and pte pages.
    four = PageTable(levels=4, page_size=4096, pte_bytes=8)
    vpn = (1 << 27) + (5 << 18) + (7 << 9) + 3
    assert four.table_keys(vpn) == [(1, vpn >> 27), (2, vpn >> 18), (3, vpn >> 9)]
    four.tables.update({(0, 0): 1, (1, 1): 2, (2, (1 << 9) + 5): 3, (3, vpn >> 9): 4})
    assert four.missing_tables([vpn, vpn + 1]) == []
    assert four.tables_left_empty([(vpn, vpn + 1)]) == []
    assert sorted(four.tables_left_empty([])) == [(1, 1), (2, 517), (3, vpn >> 9)]


@pytest.fixture
def mmu() -> Mmu:
    m = Mmu(load_profile("x86_32"))
    m.create_process("init", 0, 0, 0, set(), [], [100])
    return m


def app(mmu: Mmu, pgd: int = 101) -> Process:
    return mmu.create_process("app", 1000, 1, 0, set(), [], [pgd])


def test_a_new_process_has_its_image_and_stack_and_a_token(mmu: Mmu) -> None:
    proc = app(mmu)
    assert (proc.pid, proc.ppid) == (2, 1)
    assert len(proc.token) == 32
    assert [(a.start << 12, a.perms, a.name) for a in proc.mm.space] == [
        (0x08048000, "r-xp", "app"),
        (0x08050000, "rw-p", "app"),
        (0xBFFE0000, "rw-p", "[stack]"),
    ]
    assert mmu.process(2, proc.token) is proc
    with pytest.raises(PermissionDenied):
        mmu.process(2, "x")
    with pytest.raises(NoSuchProcess):
        mmu.process(7)


def test_faults_plan_then_apply_and_copy_on_write_after_fork(mmu: Mmu) -> None:
    parent = app(mmu)
    addr, _ = mmu.mmap(parent, 0, 2 * 4096, RW, ANON)
    vpn = addr >> 12
    plan = mmu.plan_access(parent, addr, 2 * 4096, write=False)
    assert plan.pages == [(vpn, ZERO), (vpn + 1, ZERO)]
    assert plan.frames_needed == 0  # reads map the zero page
    assert plan.tables == [(1, vpn >> 10)]
    mmu.apply_access(parent, plan, [], [102])
    plan = mmu.plan_access(parent, addr, 4096, write=True)
    assert plan.pages == [(vpn, COW)]  # a write to the zero page copies it
    assert mmu.apply_access(parent, plan, [500], []).frames == []
    mmu.write_bytes(parent, addr, b"hello")
    assert parent.mm.rss == 1
    child = mmu.fork(parent, None, [103, 104])
    assert mmu.mapcount(500) == 2
    assert mmu.plan_access(child, addr, 1, write=False).pages == [(vpn, HIT)]
    plan = mmu.plan_access(child, addr, 1, write=True)
    assert plan.pages == [(vpn, COW)]
    mmu.apply_access(child, plan, [501], [])
    mmu.write_bytes(child, addr, b"J")
    assert mmu.read_bytes(parent, addr, 5) == b"hello"
    assert mmu.read_bytes(child, addr, 5) == b"Jello"
    assert mmu.sharers == {}
    # The parent is the only mapper left: its write reuses the frame.
    assert mmu.plan_access(parent, addr, 1, write=True).pages == [(vpn, REUSE)]
    released = mmu.exit(child)
    assert released.frames == [501]
    assert sorted(released.tables) == [103, 104]


def test_cow_planned_but_the_other_mapper_left_reuses_and_returns_the_frame(
    mmu: Mmu,
) -> None:
    parent = app(mmu)
    addr, _ = mmu.mmap(parent, 0, 4096, RW, ANON)
    plan = mmu.plan_access(parent, addr, 1, write=True)
    assert plan.pages == [(addr >> 12, NEW)]
    mmu.apply_access(parent, plan, [600], [102])
    child = mmu.fork(parent, None, [103, 104])
    plan = mmu.plan_access(parent, addr, 1, write=True)
    assert plan.frames_needed == 1
    mmu.exit(child)  # meanwhile (another process's lock): the child goes
    assert mmu.apply_access(parent, plan, [601], []).frames == [601]


def test_bad_mmap_arguments_change_nothing(mmu: Mmu) -> None:
    proc = app(mmu)
    before = [(a.start, a.end) for a in proc.mm.space]
    for args, message in [
        ((0, 4096, 0x10, ANON), "unknown protection bits"),
        ((0, 4096, RW, ANON | 0x800000), "unknown flags"),
        ((0, 4096, RW, v.MAP_ANONYMOUS), "exactly one of MAP_SHARED and MAP_PRIVATE"),
        ((0, 4096, RW, v.MAP_PRIVATE), "only anonymous mappings"),
        ((0, 0, RW, ANON), "length 0 must be positive"),
        ((0x1001, 4096, RW, ANON | v.MAP_FIXED), "not page aligned"),
        ((0xBFFFF000, 8192, RW, ANON | v.MAP_FIXED), "past TASK_SIZE"),
    ]:
        with pytest.raises(InvalidRequest, match=message):
            mmu.mmap(proc, *args)
    assert [(a.start, a.end) for a in proc.mm.space] == before
