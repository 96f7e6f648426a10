"""The MMU's memory cgroup charging (2.6.25 mm/memcontrol.c) over a fake
policy port: pages charged at fault and uncharged when they go (munmap,
exit, swap-out), fork's child in its parent's group, reclaim inside the
group first and then the group's OOM killer, and nothing asked of the
policy for a process of the root group."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from memsim.profiles.loader import load_profile
from memsim.services.buddy.local import LocalBuddy
from memsim.services.mmu import vma as v
from memsim.services.mmu.core import Mmu
from memsim.services.mmu.errors import (
    InvalidRequest,
    MachineHalted,
    NoMemory,
    NoSuchProcess,
    ProcessDead,
)
from memsim.services.mmu.policy_port import CgroupCharge, OomVerdict
from memsim.services.mmu.process import SIGKILL, Process
from memsim.services.mmu.service import MmuService
from memsim.services.mmu.swapfile import SwapFile
from memsim.services.mmu.zone_port import LocalZone
from memsim.services.policy.memcg import MEM_CGROUP_RECLAIM_RETRIES
from memsim.services.zone.allocator import ZoneAllocator
from memsim.services.zone.gfp import GFP_KERNEL
from memsim.services.zone.machine import Machine

PAGE = 4096
SWAP_PAGES = 4096
RW = v.PROT_READ | v.PROT_WRITE
PRIVATE = v.MAP_PRIVATE | v.MAP_ANONYMOUS

OnOom = Callable[[int, str], Awaitable[OomVerdict]]


class FakePolicy:
    """res_counters in pages, and a scripted OOM killer."""

    def __init__(self, limits: dict[str, int] | None = None) -> None:
        self.limits = dict(limits or {})
        self.usage: defaultdict[str, int] = defaultdict(int)
        self.failcnt: defaultdict[str, int] = defaultdict(int)
        self.calls: list[tuple[str, str, int]] = []
        self.ooms: list[tuple[int, int, str]] = []
        self.on_oom: OnOom | None = None

    async def charge(self, group: str, pages: int) -> CgroupCharge:
        self.calls.append(("charge", group, pages))
        limit = self.limits.get(group, 1 << 40)
        if self.usage[group] + pages > limit:
            self.failcnt[group] += 1
            return CgroupCharge(False, self.usage[group], limit)
        self.usage[group] += pages
        return CgroupCharge(True, self.usage[group], limit)

    async def uncharge(self, group: str, pages: int) -> None:
        self.calls.append(("uncharge", group, pages))
        assert 0 < pages <= self.usage[group], (group, pages, self.usage[group])
        self.usage[group] -= pages

    async def out_of_memory(self, gfp_mask: int, pid: int, group: str) -> OomVerdict:
        self.ooms.append((gfp_mask, pid, group))
        if self.on_oom is None:
            return OomVerdict("give_up", "nothing to kill")
        return await self.on_oom(pid, group)


Fixture = tuple[MmuService, FakePolicy]


async def build(tmp_path: Path, swap_pages: int) -> tuple[MmuService, ZoneAllocator]:
    profile = load_profile("x86_32", mem="64M")
    allocator = ZoneAllocator(Machine(profile), LocalBuddy())
    await allocator.boot()
    swapfile = SwapFile(tmp_path / "swap", PAGE) if swap_pages else None
    svc = MmuService(Mmu(profile, swap_pages=swap_pages), LocalZone(allocator), swapfile)
    await svc.boot()
    return svc, allocator


@pytest_asyncio.fixture
async def fx(tmp_path: Path) -> AsyncIterator[Fixture]:
    svc, allocator = await build(tmp_path, SWAP_PAGES)
    policy = FakePolicy()
    svc.policy = policy
    try:
        yield svc, policy
    finally:
        await allocator.stop()


@pytest_asyncio.fixture
async def noswap(tmp_path: Path) -> AsyncIterator[Fixture]:
    svc, allocator = await build(tmp_path, 0)
    policy = FakePolicy()
    svc.policy = policy
    try:
        yield svc, policy
    finally:
        await allocator.stop()


async def spawn(svc: MmuService, group: str = "/", name: str = "app") -> Process:
    proc = await svc.create_process(name, 1000, 1, 0, set(), [])
    if group != "/":
        svc.set_cgroup(proc.pid, group)
    return proc


async def mapped(svc: MmuService, proc: Process, pages: int) -> int:
    return await svc.mmap(proc.pid, proc.token, 0, pages * PAGE, RW, PRIVATE)


async def write(svc: MmuService, proc: Process, addr: int, pages: int) -> None:
    await svc.touch(proc.pid, proc.token, addr, pages * PAGE, True)


def swapped(svc: MmuService, proc: Process) -> int:
    return svc.mmu.swap_pages(proc)


async def test_pages_are_charged_at_fault_and_uncharged_at_munmap_and_exit(fx: Fixture) -> None:
    svc, policy = fx
    proc = await spawn(svc, "/g")
    addr = await mapped(svc, proc, 64)
    await svc.touch(proc.pid, proc.token, addr, 64 * PAGE, False)  # the zero page: no charge
    assert policy.usage["/g"] == 0
    await write(svc, proc, addr, 40)
    assert policy.usage["/g"] == 40
    assert svc.mmu.memcg_pages("/g") == 40
    await write(svc, proc, addr, 40)  # already there: no new charge
    assert policy.usage["/g"] == 40
    await svc.munmap(proc.pid, proc.token, addr, 16 * PAGE)
    assert policy.usage["/g"] == 24
    await svc.exit(proc.pid, proc.token)
    assert policy.usage["/g"] == 0
    assert svc.mmu.memcg_pages("/g") == 0
    assert not svc.mmu.memcg_charged


async def test_a_kill_uncharges_and_a_batch_is_charged_before_its_frames(fx: Fixture) -> None:
    svc, policy = fx
    proc = await spawn(svc, "/g")
    addr = await mapped(svc, proc, 200)
    await write(svc, proc, addr, 200)
    # Faults of a group's process are charged a batch at a time.
    charges = [pages for kind, _, pages in policy.calls if kind == "charge"]
    assert sum(charges) == 200
    assert max(charges) <= 64
    assert policy.usage["/g"] == 200
    await svc.exit(proc.pid, None, SIGKILL)
    assert policy.usage["/g"] == 0


async def test_swap_out_uncharges_and_swap_in_charges_again(fx: Fixture) -> None:
    svc, policy = fx
    proc = await spawn(svc, "/g")
    addr = await mapped(svc, proc, 32)
    await write(svc, proc, addr, 32)
    freed = await svc.reclaim_memcg("/g", 8)
    assert freed >= 8
    assert swapped(svc, proc) == freed
    assert policy.usage["/g"] == 32 - freed
    await write(svc, proc, addr, 32)  # back from swap: charged as new pages
    assert policy.usage["/g"] == 32
    assert swapped(svc, proc) == 0


async def test_the_zones_reclaim_uncharges_what_it_swaps_out(fx: Fixture) -> None:
    svc, policy = fx
    proc = await spawn(svc, "/g")
    addr = await mapped(svc, proc, 32)
    await write(svc, proc, addr, 32)
    lru = next(key for key, z in svc.mmu.lru.items() if z.active)
    for _ in range(3):  # the first pass clears the accessed bits
        await svc.reclaim(lru[0], lru[1], 16, 0)
    assert swapped(svc, proc) >= 16
    assert policy.usage["/g"] == 32 - swapped(svc, proc)


async def test_a_forked_child_inherits_the_group_and_charges_its_own_copies(
    fx: Fixture,
) -> None:
    svc, policy = fx
    parent = await spawn(svc, "/g")
    addr = await mapped(svc, parent, 16)
    await write(svc, parent, addr, 16)
    child = await svc.fork(parent.pid, parent.token, "kid")
    assert child.cgroup == "/g"
    assert policy.usage["/g"] == 16  # shared copy-on-write: charged once
    await write(svc, child, addr, 4)  # copies, charged as new pages
    assert policy.usage["/g"] == 20
    await svc.exit(parent.pid, parent.token)
    # The parent's 4 frames the child copied went; the 12 it shares stay.
    assert policy.usage["/g"] == 16
    await svc.exit(child.pid, child.token)
    assert policy.usage["/g"] == 0


async def test_a_process_moved_leaves_its_charges_with_the_old_group(fx: Fixture) -> None:
    svc, policy = fx
    proc = await spawn(svc, "/a")
    addr = await mapped(svc, proc, 16)
    await write(svc, proc, addr, 8)
    svc.set_cgroup(proc.pid, "/b")  # 2.6.25's mem_cgroup_move_task moves no charges
    assert (policy.usage["/a"], policy.usage["/b"]) == (8, 0)
    await write(svc, proc, addr, 16)
    assert (policy.usage["/a"], policy.usage["/b"]) == (8, 8)
    await svc.munmap(proc.pid, proc.token, addr, 16 * PAGE)
    assert (policy.usage["/a"], policy.usage["/b"]) == (0, 0)


async def test_the_root_group_asks_the_policy_nothing(fx: Fixture) -> None:
    svc, policy = fx
    proc = await spawn(svc)
    addr = await mapped(svc, proc, 64)
    await write(svc, proc, addr, 64)
    child = await svc.fork(proc.pid, proc.token, "kid")
    await write(svc, child, addr, 8)
    await svc.reclaim_memcg("/", 8)
    lru = next(key for key, z in svc.mmu.lru.items() if z.active)
    await svc.reclaim(lru[0], lru[1], 16, 0)
    await svc.munmap(proc.pid, proc.token, addr, 64 * PAGE)
    await svc.exit(child.pid, child.token)
    assert policy.calls == []
    assert policy.ooms == []
    assert not svc.mmu.memcg_charged


async def test_over_the_limit_the_group_reclaims_its_own_pages_first(fx: Fixture) -> None:
    svc, policy = fx
    policy.limits["/a"] = 64
    other = await spawn(svc, "/b", "other")
    other_addr = await mapped(svc, other, 64)
    await write(svc, other, other_addr, 64)
    root = await spawn(svc, "/", "rootproc")
    root_addr = await mapped(svc, root, 32)
    await write(svc, root, root_addr, 32)
    proc = await spawn(svc, "/a")
    addr = await mapped(svc, proc, 256)
    await write(svc, proc, addr, 256)
    assert policy.usage["/a"] <= 64
    assert swapped(svc, proc) == 256 - policy.usage["/a"] >= 192
    assert policy.failcnt["/a"] > 0
    assert policy.ooms == []
    # Nobody else's pages were touched.
    assert (swapped(svc, other), other.mm.rss, policy.usage["/b"]) == (0, 64, 64)
    assert (swapped(svc, root), root.mm.rss) == (0, 32)
    # The bytes came back from swap as written.
    await svc.write(proc.pid, proc.token, addr, b"first page")
    assert (await svc.read(proc.pid, proc.token, addr, 10)).data == b"first page"
    assert policy.usage["/a"] <= 64


async def test_nothing_to_reclaim_calls_the_groups_oom_killer_which_kills_inside(
    noswap: Fixture,
) -> None:
    svc, policy = noswap
    policy.limits["/a"] = 48
    victim = await spawn(svc, "/a", "victim")
    vaddr = await mapped(svc, victim, 32)
    await write(svc, victim, vaddr, 32)
    outside = await spawn(svc, "/", "outside")
    oaddr = await mapped(svc, outside, 32)
    await write(svc, outside, oaddr, 32)
    proc = await spawn(svc, "/a")
    addr = await mapped(svc, proc, 32)

    async def kill_victim(pid: int, group: str) -> OomVerdict:
        await svc.exit(victim.pid, None, SIGKILL)
        return OomVerdict("killed", f"killed process {victim.pid}")

    policy.on_oom = kill_victim
    await write(svc, proc, addr, 32)
    assert policy.ooms == [(GFP_KERNEL, proc.pid, "/a")]
    # MEM_CGROUP_RECLAIM_RETRIES rounds of reclaim that freed nothing, and the
    # first try: refused each time before the OOM killer.
    assert policy.failcnt["/a"] == MEM_CGROUP_RECLAIM_RETRIES + 1
    assert not victim.alive
    assert proc.alive
    assert policy.usage["/a"] == 32
    assert (outside.alive, outside.mm.rss) == (True, 32)


async def test_the_oom_killer_choosing_the_charging_process_ends_its_call(
    noswap: Fixture,
) -> None:
    svc, policy = noswap
    policy.limits["/a"] = 16
    proc = await spawn(svc, "/a")
    addr = await mapped(svc, proc, 64)

    async def kill_current(pid: int, group: str) -> OomVerdict:
        assert await svc.exit(pid, None, SIGKILL) == 0  # deferred: its call is in flight
        return OomVerdict("killed", f"killed process {pid}")

    policy.on_oom = kill_current
    with pytest.raises(ProcessDead, match="killed by the OOM killer"):
        await write(svc, proc, addr, 64)
    assert len(policy.ooms) == 1
    assert not proc.alive
    assert proc.exit_signal == SIGKILL
    assert policy.usage["/a"] == 0
    assert not svc.mmu.memcg_charged


async def test_a_wait_retries_the_charge_until_memory_comes_back(noswap: Fixture) -> None:
    svc, policy = noswap
    policy.limits["/a"] = 16
    holder = await spawn(svc, "/a", "holder")
    haddr = await mapped(svc, holder, 16)
    await write(svc, holder, haddr, 16)
    proc = await spawn(svc, "/a")
    addr = await mapped(svc, proc, 8)
    rounds = 0

    async def wait_then_free(pid: int, group: str) -> OomVerdict:
        nonlocal rounds
        rounds += 1
        if rounds == 3:
            await svc.munmap(holder.pid, holder.token, haddr, 16 * PAGE)
        return OomVerdict("wait", "another OOM kill is in progress")

    policy.on_oom = wait_then_free
    await write(svc, proc, addr, 8)
    assert rounds == 3
    assert policy.usage["/a"] == 8


@pytest.mark.parametrize(("decision", "error"), [("panic", MachineHalted), ("give_up", NoMemory)])
async def test_a_panic_or_a_give_up_fails_the_fault_and_leaks_nothing(
    noswap: Fixture, decision: str, error: type[Exception]
) -> None:
    svc, policy = noswap
    policy.limits["/a"] = 16
    proc = await spawn(svc, "/a")
    addr = await mapped(svc, proc, 32)
    await write(svc, proc, addr, 16)
    await svc.drain_cache()
    free_before = await svc.zone.free_pages()

    async def verdict(pid: int, group: str) -> OomVerdict:
        return OomVerdict(decision, "Kernel panic - not syncing: out of memory(memcg)")

    policy.on_oom = verdict
    with pytest.raises(error):
        await svc.touch(proc.pid, proc.token, addr + 16 * PAGE, 16 * PAGE, True)
    assert policy.ooms == [(GFP_KERNEL, proc.pid, "/a")]
    assert policy.usage["/a"] == 16
    assert proc.mm.rss == 16
    await svc.drain_cache()
    assert await svc.zone.free_pages() == free_before


async def test_set_cgroup_refuses_bad_input_and_changes_nothing(fx: Fixture) -> None:
    svc, _ = fx
    proc = await spawn(svc, "/a")
    for bad in ("", "batch", "/a/", "/a//b", "/a/../b", "/."):
        with pytest.raises(InvalidRequest):
            svc.set_cgroup(proc.pid, bad)
        assert proc.cgroup == "/a"
    with pytest.raises(NoSuchProcess):
        svc.set_cgroup(999, "/b")
    await svc.exit(proc.pid, proc.token)
    with pytest.raises(ProcessDead):
        svc.set_cgroup(proc.pid, "/b")
    assert proc.cgroup == "/a"
    svc.set_cgroup(1, "/")  # init may be moved (back) too
