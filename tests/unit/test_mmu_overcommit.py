"""The MMU's commit accounting, as 2.6.24 keeps Committed_AS: which mappings
are charged (VM_ACCOUNT), the check before the charge in each mode, and the
charge going back with munmap, exit and shmem objects. A refused call changes
nothing."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry

from memsim.profiles.loader import load_profile
from memsim.services.buddy.local import LocalBuddy
from memsim.services.mmu import vma as v
from memsim.services.mmu.core import STACK_BYTES, Mmu
from memsim.services.mmu.errors import NoMemory
from memsim.services.mmu.metrics import MmuCollector
from memsim.services.mmu.process import Process
from memsim.services.mmu.server import mmu_stats, process_info
from memsim.services.mmu.service import MmuService
from memsim.services.mmu.swap import SwapArea
from memsim.services.mmu.zone_port import LocalZone
from memsim.services.policy.sysctl import Sysctls
from memsim.services.zone.allocator import ZoneAllocator
from memsim.services.zone.machine import Machine

PAGE = 4096
RW = v.PROT_READ | v.PROT_WRITE
RO = v.PROT_READ
PRIVATE = v.MAP_PRIVATE | v.MAP_ANONYMOUS
SHARED = v.MAP_SHARED | v.MAP_ANONYMOUS
NORESERVE = v.MAP_NORESERVE
SWAP_PAGES = 320
# Every new process: the data segment (2 pages) and the stack (32 pages).
EXEC_PAGES = 2 + (STACK_BYTES // PAGE)


@pytest.fixture
def mmu() -> Mmu:
    m = Mmu(load_profile("x86_32", mem="64M"), swap_pages=SWAP_PAGES)
    m.create_process("init", 0, 0, 0, set(), [], [100])
    return m


def spawn(mmu: Mmu, uid: int = 1000, name: str = "app") -> Process:
    return mmu.create_process(name, uid, 1, 0, set(), [], [200 + mmu.next_pid])


def sysctl(mmu: Mmu, **values: int) -> None:
    """`sysctl -w vm.NAME=VALUE ...`, applied as the policy service would."""
    sysctls = copy.deepcopy(mmu.sysctls)
    sysctls.set_many([(f"vm.{k}", str(val)) for k, val in values.items()], admin=True)
    mmu.set_sysctls(sysctls)


def no_commit_room(mmu: Mmu) -> None:
    """Mode 2 with CommitLimit 0: no ratio of RAM, no swap."""
    sysctl(mmu, overcommit_memory=2, overcommit_ratio=0)
    mmu.swap = SwapArea(0)


def vmas(proc: Process) -> list[tuple[int, int, str, bool]]:
    return [(a.start, a.end, a.perms, a.account) for a in proc.mm.space]


def assert_ledger_matches_vmas(mmu: Mmu) -> None:
    """Every process holds exactly its VM_ACCOUNT pages; shmem objects the rest."""
    for proc in mmu.alive():
        accounted = sum(a.pages for a in proc.mm.space if a.account)
        assert mmu.commit.by_pid.get(proc.pid, 0) == accounted, proc.name
    assert mmu.committed_as == sum(mmu.commit.by_pid.values())


def snapshot(mmu: Mmu, proc: Process) -> tuple[object, ...]:
    stats = mmu_stats(mmu)
    stats.commit_refusals = 0
    return (
        process_info(mmu, proc),
        stats,
        sorted(mmu.processes),
        mmu.next_pid,
        dict(mmu.commit.by_pid),
    )


def mmap(mmu: Mmu, proc: Process, pages: int, prot: int = RW, flags: int = PRIVATE) -> int:
    addr, _ = mmu.mmap(proc, 0, pages * PAGE, prot, flags)
    return addr


# -- what is charged ------------------------------------------------------------------


def test_exec_charges_its_stack_and_data_and_exit_gives_them_back(mmu: Mmu) -> None:
    before = mmu.committed_as
    proc = spawn(mmu)
    assert mmu.committed_pages(proc) == EXEC_PAGES
    assert mmu.committed_as == before + EXEC_PAGES
    assert [a.account for a in proc.mm.space] == [False, True, True]  # text, data, stack
    mmap(mmu, proc, 10)
    mmap(mmu, proc, 5, prot=RO)  # private read-only: not charged
    assert mmu.committed_pages(proc) == EXEC_PAGES + 10
    assert_ledger_matches_vmas(mmu)
    mmu.exit(proc)
    assert mmu.committed_as == before
    assert proc.pid not in mmu.commit.by_pid


def test_split_by_munmap_then_munmap_the_rest_gives_all_back(mmu: Mmu) -> None:
    proc = spawn(mmu)
    start = mmu.committed_as
    addr = mmap(mmu, proc, 10)
    assert mmu.committed_as == start + 10
    mmu.munmap(proc, addr + 4 * PAGE, 2 * PAGE)  # the middle: two VMAs, both VM_ACCOUNT
    assert mmu.committed_as == start + 8
    pieces = [a for a in proc.mm.space if a.start in (addr >> 12, (addr >> 12) + 6)]
    assert [(a.pages, a.account) for a in pieces] == [(4, True), (4, True)]
    assert_ledger_matches_vmas(mmu)
    mmu.munmap(proc, addr, 10 * PAGE)  # over the hole too
    assert mmu.committed_as == start
    assert_ledger_matches_vmas(mmu)


def test_mmap_merges_only_with_an_equally_accounted_neighbour(mmu: Mmu) -> None:
    sysctl(mmu, overcommit_memory=0)
    proc = spawn(mmu)
    addr = mmap(mmu, proc, 4)
    mmu.mmap(proc, addr + 4 * PAGE, 4 * PAGE, RW, PRIVATE | v.MAP_FIXED)
    mmu.mmap(proc, addr + 8 * PAGE, 4 * PAGE, RW, PRIVATE | v.MAP_FIXED | NORESERVE)
    vpn = addr >> 12
    assert [x for x in vmas(proc) if vpn <= x[0] < vpn + 12] == [
        (vpn, vpn + 8, "rw-p", True),
        (vpn + 8, vpn + 12, "rw-p", False),
    ]
    assert_ledger_matches_vmas(mmu)


def test_mprotect_charges_a_private_mapping_made_writable_and_never_gives_back(
    mmu: Mmu,
) -> None:
    proc = spawn(mmu)
    start = mmu.committed_as
    addr = mmap(mmu, proc, 10, prot=RO)
    assert mmu.committed_as == start
    mmu.mprotect(proc, addr, 4 * PAGE, RW)
    assert mmu.committed_as == start + 4
    mmu.mprotect(proc, addr, 10 * PAGE, RW)  # the 4 are VM_ACCOUNT already: 6 more
    assert mmu.committed_as == start + 10
    mmu.mprotect(proc, addr, 10 * PAGE, RO)  # mprotect_fixup never uncharges
    assert mmu.committed_as == start + 10
    mmu.mprotect(proc, addr, 10 * PAGE, RW)  # still VM_ACCOUNT: nothing more
    assert mmu.committed_as == start + 10
    vpn = addr >> 12
    assert [x for x in vmas(proc) if x[0] == vpn] == [(vpn, vpn + 10, "rw-p", True)]
    # Writable already, or shared (whose object was charged at mmap, read-only
    # or not): mprotect charges nothing.
    rw = mmap(mmu, proc, 3, flags=PRIVATE | NORESERVE)
    shared_ro = mmap(mmu, proc, 3, prot=RO, flags=SHARED)
    assert mmu.committed_as == start + 13
    mmu.mprotect(proc, rw, 3 * PAGE, RW | v.PROT_EXEC)
    mmu.mprotect(proc, shared_ro, 3 * PAGE, RW)
    assert mmu.committed_as == start + 13
    assert_ledger_matches_vmas(mmu)
    mmu.munmap(proc, addr, 10 * PAGE)
    mmu.munmap(proc, shared_ro, 3 * PAGE)
    assert mmu.committed_as == start


def test_a_shared_anonymous_mapping_is_charged_to_its_object_until_its_last_mapper(
    mmu: Mmu,
) -> None:
    parent = spawn(mmu)
    start = mmu.committed_as
    addr = mmap(mmu, parent, 8, flags=SHARED)
    assert mmu.committed_as == start + 8
    assert mmu.committed_pages(parent) == EXEC_PAGES  # not the process's own
    child = mmu.fork(parent, None, [300])
    # dup_mmap copies no VM_ACCOUNT for it: only the child's private VMAs are charged.
    assert mmu.committed_as == start + 8 + EXEC_PAGES
    mmu.munmap(parent, addr, 4 * PAGE)  # the object is as big as ever
    mmu.exit(parent)
    assert mmu.committed_as == start + 8
    mmu.munmap(child, addr, 8 * PAGE)  # its last mapping: shmem_delete_inode
    assert mmu.committed_as == start
    assert mmu.shmem_users == {}


def test_a_system_v_segment_is_charged_at_shmget_until_destroyed(mmu: Mmu) -> None:
    proc = spawn(mmu)
    start = mmu.committed_as
    shmid = mmu.shmget(proc, 0, 5 * PAGE, create=True)
    assert mmu.committed_as == start + 5
    addr = mmu.shmat(proc, shmid, 0, read_only=False)
    mmu.shmrm(proc, shmid)
    assert mmu.committed_as == start + 5  # still attached
    mmu.shmdt(proc, addr)
    assert mmu.committed_as == start


# -- the check --------------------------------------------------------------------------


def test_mode_2_boundary_is_committed_plus_pages_strictly_below_the_limit(mmu: Mmu) -> None:
    root = spawn(mmu, uid=0, name="root")
    mmu.munmap(root, (mmu.task_pages << 12) - STACK_BYTES, STACK_BYTES)  # no stack
    assert root.mm.space.total_pages < 32  # total_vm / 32 is 0: the bound is CommitLimit
    sysctl(mmu, overcommit_memory=2, overcommit_ratio=50)
    limit = mmu.commit_limit
    assert limit == mmu.mem.totalram_pages * 50 // 100 + SWAP_PAGES
    room = limit - mmu.committed_as
    before = snapshot(mmu, root)
    with pytest.raises(NoMemory) as refused:
        mmap(mmu, root, room)
    assert str(refused.value) == (
        f"mmap: {room} pages not allowed: Committed_AS {mmu.committed_as} + {room} "
        f">= limit {limit} (vm.overcommit_memory=2)"
    )
    assert snapshot(mmu, root) == before  # nothing mapped, nothing charged
    assert mmu.commit_refusals == 1
    mmap(mmu, root, room - 1)
    assert mmu.committed_as == limit - 1
    with pytest.raises(NoMemory):
        mmap(mmu, root, 1)
    assert_ledger_matches_vmas(mmu)


def test_mode_2_keeps_the_users_reserves(mmu: Mmu) -> None:
    """Without CAP_SYS_ADMIN 1/32 of the RAM share goes; 1/32 of the caller's
    own total_vm goes for everyone."""
    user = spawn(mmu)
    mmap(mmu, user, 2000, prot=RO)  # total_vm 2042: 63 pages of reserve
    sysctl(mmu, overcommit_memory=2)
    ram = mmu.mem.totalram_pages * 50 // 100
    allowed = ram - ram // 32 + SWAP_PAGES - user.mm.space.total_pages // 32
    room = allowed - mmu.committed_as
    with pytest.raises(NoMemory, match=f"limit {allowed} "):
        mmap(mmu, user, room)
    mmap(mmu, user, room - 1)
    assert mmu.committed_as == allowed - 1


def test_mode_1_always_grants(mmu: Mmu) -> None:
    sysctl(mmu, overcommit_memory=1)
    proc = spawn(mmu)
    pages = 3 * mmu.commit_limit  # far beyond RAM and swap
    mmap(mmu, proc, pages)
    assert mmu.committed_as > mmu.commit_limit
    assert mmu.committed_pages(proc) == EXEC_PAGES + pages


def test_mode_0_heuristic_gives_root_the_last_32nd(mmu: Mmu) -> None:
    sysctl(mmu, overcommit_memory=0)
    mmu.mem.update(nr_free_pages=1000, totalreserve_pages=200, nr_slab_reclaimable=0)
    # user: swap 320 - 10, free pages 800 - 25 = 1085; root: 320 + 800 = 1120.
    user, root = spawn(mmu), spawn(mmu, uid=0, name="root")
    with pytest.raises(NoMemory, match=r"mmap: 1085 pages not allowed: .*overcommit_memory=0"):
        mmap(mmu, user, 1085)
    mmap(mmu, user, 1084)
    mmap(mmu, root, 1119)
    with pytest.raises(NoMemory):
        mmap(mmu, root, 1120)
    # The heuristic weighs each request alone, not what is committed already.
    mmap(mmu, root, 1119)
    capable = mmu.create_process("cap", 1000, 1, 0, {"CAP_SYS_ADMIN"}, [], [400])
    mmap(mmu, capable, 1119)
    # All of the free pages reserved: only swap and slab count.
    mmu.mem.update(nr_free_pages=200)
    with pytest.raises(NoMemory, match="free pages all reserved"):
        mmap(mmu, root, SWAP_PAGES)
    mmap(mmu, root, SWAP_PAGES - 1)


def test_map_noreserve_skips_the_charge_except_in_mode_2(mmu: Mmu) -> None:
    proc = spawn(mmu)
    start = mmu.committed_as
    sysctl(mmu, overcommit_memory=0)
    huge = 4 * mmu.commit_limit  # the heuristic would refuse this if it were asked
    addr = mmap(mmu, proc, huge, flags=PRIVATE | NORESERVE)
    assert mmu.committed_as == start
    mmu.munmap(proc, addr, huge * PAGE)
    mmap(mmu, proc, 4, flags=SHARED | NORESERVE)
    assert mmu.committed_as == start
    sysctl(mmu, overcommit_memory=2)
    mmap(mmu, proc, 4, flags=PRIVATE | NORESERVE)
    assert mmu.committed_as == start + 4
    with pytest.raises(NoMemory):
        mmap(mmu, proc, huge, flags=PRIVATE | NORESERVE)
    assert_ledger_matches_vmas(mmu)


def test_a_refused_brk_leaves_the_break(mmu: Mmu) -> None:
    proc = spawn(mmu)
    start_brk = proc.mm.brk
    brk, _ = mmu.brk(proc, start_brk + 10 * PAGE)
    assert brk == start_brk + 10 * PAGE
    assert mmu.committed_pages(proc) == EXEC_PAGES + 10
    no_commit_room(mmu)
    before = snapshot(mmu, proc)
    assert mmu.brk(proc, brk + 1)[0] == brk  # sys_brk returns the old break
    assert snapshot(mmu, proc) == before
    assert mmu.commit_refusals == 1
    assert "brk: 1 pages not allowed" in mmu.last_refusal
    brk, _ = mmu.brk(proc, start_brk + 3 * PAGE)  # shrinking is always allowed
    assert mmu.committed_pages(proc) == EXEC_PAGES + 3
    assert_ledger_matches_vmas(mmu)


def test_fork_charges_the_childs_copies_and_a_refused_fork_creates_nothing(
    mmu: Mmu,
) -> None:
    parent = spawn(mmu)
    mmap(mmu, parent, 100)
    mmap(mmu, parent, 50, prot=RO)
    mmu.brk(parent, parent.mm.brk + 4 * PAGE)
    own = mmu.committed_pages(parent)
    assert own == EXEC_PAGES + 104
    child = mmu.fork(parent, None, [300])
    assert mmu.committed_pages(child) == own
    assert_ledger_matches_vmas(mmu)
    mmu.exit(child)
    # Room for all of the copies but their last page: the last VMA's check
    # fails and what the earlier ones charged goes back. (A System V segment
    # takes up the rest of the room: it is charged, but not in total_vm.)
    sysctl(mmu, overcommit_memory=2)
    reserve = parent.mm.space.total_pages // 32  # the parent's: dup_mmap runs in it
    ram = mmu.mem.totalram_pages // 2
    allowed = ram - ram // 32 + SWAP_PAGES - reserve
    fill = allowed - mmu.committed_as - own
    shmid = mmu.shmget(parent, 0, fill * PAGE, create=True)
    before = snapshot(mmu, parent)
    with pytest.raises(NoMemory, match=rf"fork: 32 pages not allowed: Committed_AS {allowed - 32}"):
        mmu.fork(parent, None, [301])
    assert snapshot(mmu, parent) == before
    assert_ledger_matches_vmas(mmu)
    mmu.shmrm(parent, shmid)
    mmu.shmget(parent, 0, (fill - 1) * PAGE, create=True)
    child = mmu.fork(parent, None, [301])  # one page more: the last copy fits
    assert mmu.committed_as == allowed - 1
    assert_ledger_matches_vmas(mmu)


def test_a_refused_exec_creates_nothing(mmu: Mmu) -> None:
    no_commit_room(mmu)
    count, next_pid, committed = len(mmu.processes), mmu.next_pid, mmu.committed_as
    with pytest.raises(NoMemory, match="execve"):
        spawn(mmu)
    assert (len(mmu.processes), mmu.next_pid, mmu.committed_as) == (count, next_pid, committed)


def test_map_fixed_counts_what_it_replaces_and_a_refusal_keeps_the_old_mapping(
    mmu: Mmu,
) -> None:
    root = spawn(mmu, uid=0, name="root")
    sysctl(mmu, overcommit_memory=2)
    room = mmu.commit_limit - root.mm.space.total_pages // 32 - mmu.committed_as
    addr = mmap(mmu, root, room - 1)  # at the bound
    # Mapping the same range again fits: do_munmap gives the old charge back first.
    mmu.mmap(root, addr, (room - 1) * PAGE, RW, PRIVATE | v.MAP_FIXED)
    before = snapshot(mmu, root)
    with pytest.raises(NoMemory):
        mmu.mmap(root, addr, room * PAGE, RW, PRIVATE | v.MAP_FIXED)
    assert snapshot(mmu, root) == before
    assert_ledger_matches_vmas(mmu)


def test_a_refused_mprotect_changes_nothing(mmu: Mmu) -> None:
    proc = spawn(mmu)
    addr = mmap(mmu, proc, 10, prot=RO)
    no_commit_room(mmu)
    before = snapshot(mmu, proc)
    with pytest.raises(NoMemory, match="mprotect: 10 pages not allowed"):
        mmu.mprotect(proc, addr, 10 * PAGE, RW)
    assert snapshot(mmu, proc) == before


def test_sysctls_are_a_snapshot(mmu: Mmu) -> None:
    sysctls = copy.deepcopy(mmu.sysctls)
    mmu.set_sysctls(sysctls)
    sysctls.set("vm.overcommit_memory", "2", admin=True)
    assert mmu.sysctls.overcommit_memory == 0
    assert isinstance(mmu.sysctls, Sysctls)


def test_commit_metrics(mmu: Mmu) -> None:
    registry = CollectorRegistry()
    registry.register(MmuCollector(mmu))
    proc = spawn(mmu)
    mmap(mmu, proc, 10)
    assert registry.get_sample_value("memsim_mmu_committed_as_pages") == mmu.committed_as
    assert registry.get_sample_value("memsim_mmu_commit_limit_pages") == mmu.commit_limit
    sysctl(mmu, overcommit_memory=2, overcommit_ratio=0)
    with pytest.raises(NoMemory):
        mmap(mmu, proc, SWAP_PAGES)
    assert registry.get_sample_value("memsim_mmu_commit_refusals_total") == 1
    assert registry.get_sample_value("memsim_mmu_commit_limit_pages") == SWAP_PAGES


# -- the service: counters refreshed in the background, no call per mmap ----------------


class CountingZone(LocalZone):
    def __init__(self, allocator: ZoneAllocator) -> None:
        super().__init__(allocator)
        self.counter_reads = 0

    async def counters(self) -> tuple[int, int]:
        self.counter_reads += 1
        return await super().counters()


@pytest_asyncio.fixture
async def service() -> AsyncIterator[tuple[MmuService, CountingZone]]:
    profile = load_profile("x86_32", mem="64M")
    allocator = ZoneAllocator(Machine(profile), LocalBuddy())
    await allocator.boot()
    zone = CountingZone(allocator)
    svc = MmuService(Mmu(profile, swap_pages=SWAP_PAGES), zone)
    await svc.boot()
    try:
        yield svc, zone
    finally:
        await allocator.stop()


async def test_the_check_runs_locally_on_counters_refreshed_apart(
    service: tuple[MmuService, CountingZone],
) -> None:
    svc, zone = service
    proc = await svc.create_process("app", 1000, 1, 0, set(), [])
    for _ in range(20):
        await svc.mmap(proc.pid, proc.token, 0, PAGE, RW, PRIVATE)
    assert zone.counter_reads == 0
    await svc.refresh_counters()
    assert zone.counter_reads == 1
    machine = zone.allocator.machine
    assert svc.mmu.mem.nr_free_pages == sum(z.free_pages for z in machine.zones.values())
    assert svc.mmu.mem.refreshes == 1
    sysctls = copy.deepcopy(svc.mmu.sysctls)
    sysctls.set_many([("vm.overcommit_memory", "2"), ("vm.swappiness", "10")], admin=True)
    svc.set_sysctls(sysctls)
    assert svc.swappiness == 10
    with pytest.raises(NoMemory, match="overcommit_memory=2"):
        await svc.mmap(proc.pid, proc.token, 0, 1 << 30, RW, PRIVATE)
    sysctls.set("vm.overcommit_ratio", "0", admin=True)
    svc.set_sysctls(sysctls)
    svc.mmu.swap = SwapArea(0)  # CommitLimit 0
    processes = dict(svc.mmu.processes)
    held = len(svc.cache) + await zone.free_pages()
    with pytest.raises(NoMemory, match="fork"):
        await svc.fork(proc.pid, proc.token, "")
    assert svc.mmu.processes == processes
    assert len(svc.cache) + await zone.free_pages() == held  # the child's tables went back
    assert zone.counter_reads == 1
