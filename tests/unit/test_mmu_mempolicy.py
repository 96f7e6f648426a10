"""set_mempolicy in the MMU (2.6.24's sys_set_mempolicy, mpol_copy at fork)
over the zone allocator in process: refusals as the kernel's (each EINVAL,
nothing changed), a forked child's inherited policy, and the frames and
page tables of a bound process taken from its nodes, past the per-CPU frame
lists. On the `numa` profile with 64 MiB: node 0 has DMA and DMA32, node 1
DMA32."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio

from memsim.profiles.loader import load_profile
from memsim.services.buddy.local import LocalBuddy
from memsim.services.mmu import pagetable as pt
from memsim.services.mmu import vma as v
from memsim.services.mmu.core import Mmu
from memsim.services.mmu.errors import InvalidRequest, PermissionDenied, ProcessDead
from memsim.services.mmu.process import MPOL_BIND, MPOL_DEFAULT, Mempolicy, Process
from memsim.services.mmu.service import MmuService
from memsim.services.mmu.zone_port import LocalZone
from memsim.services.zone.allocator import ZoneAllocator
from memsim.services.zone.machine import Machine

PAGE = 4096
RW = v.PROT_READ | v.PROT_WRITE
PRIVATE = v.MAP_PRIVATE | v.MAP_ANONYMOUS


@dataclass
class Stack:
    service: MmuService
    allocator: ZoneAllocator

    @property
    def mmu(self) -> Mmu:
        return self.service.mmu

    def node_of(self, pfn: int) -> int:
        zone = self.allocator.machine.zone_of_pfn(pfn)
        assert zone is not None
        return zone.node

    def frame_nodes(self, proc: Process) -> set[int]:
        """The nodes of the process's own frames and of its page tables but
        the pgd (which CreateProcess takes in init's context)."""
        frames = {pt.pte_pfn(pte) for pte in proc.mm.pt.ptes.values()}
        tables = {pfn for key, pfn in proc.mm.pt.tables.items() if key != (0, 0)}
        return {self.node_of(pfn) for pfn in frames | tables}


@pytest_asyncio.fixture
async def numa() -> AsyncIterator[Stack]:
    profile = load_profile("numa", mem="64M")
    allocator = ZoneAllocator(Machine(profile), LocalBuddy())
    await allocator.boot()
    service = MmuService(Mmu(profile), LocalZone(allocator))
    await service.boot()
    try:
        yield Stack(service, allocator)
    finally:
        await allocator.stop()


async def spawn(s: Stack, name: str, nodes: list[int] | None = None) -> Process:
    return await s.service.create_process(name, 1000, 0, 0, set(), nodes or [])


def test_mempolicy_reads_as_numa_maps_shows_it() -> None:
    assert str(Mempolicy()) == "default"
    assert str(Mempolicy(MPOL_BIND, (1,))) == "bind=1"
    assert str(Mempolicy(MPOL_BIND, (0, 1, 2, 5))) == "bind=0-2,5"
    assert Mempolicy(MPOL_BIND, (1,)).bind_nodes == (1,)
    assert Mempolicy().bind_nodes == ()


@pytest.mark.parametrize(
    ("mode", "nodes", "match"),
    [
        ("preferred", [1], "unknown mempolicy mode 'preferred'"),
        ("interleave", [0, 1], "unknown mempolicy mode"),
        ("7", [1], "unknown mempolicy mode '7'"),
        (MPOL_BIND, [], "MPOL_BIND needs at least one node"),
        (MPOL_DEFAULT, [1], "MPOL_DEFAULT takes no nodes"),
        (MPOL_BIND, [2], r"outside 0\.\.1"),
        (MPOL_BIND, [0, 64], r"nodes \[64\] are outside 0\.\.1"),
        (MPOL_BIND, [-1], r"outside 0\.\.1"),
    ],
)
async def test_set_mempolicy_refuses_as_the_kernel_and_changes_nothing(
    numa: Stack, mode: str, nodes: list[int], match: str
) -> None:
    proc = await spawn(numa, "app")
    await numa.service.set_mempolicy(proc.pid, proc.token, MPOL_BIND, [1])
    with pytest.raises(InvalidRequest, match=match):
        await numa.service.set_mempolicy(proc.pid, proc.token, mode, nodes)
    assert proc.mempolicy == Mempolicy(MPOL_BIND, (1,))


async def test_a_node_outside_the_cpuset_is_refused(numa: Stack) -> None:
    proc = await spawn(numa, "pinned", [1])
    with pytest.raises(InvalidRequest, match=r"nodes \[0\] are outside the cpuset"):
        await numa.service.set_mempolicy(proc.pid, proc.token, MPOL_BIND, [0, 1])
    # contextualize_policy comes before mpol_check_policy: an MPOL_DEFAULT
    # with a node outside the cpuset is refused for the cpuset.
    with pytest.raises(InvalidRequest, match="outside the cpuset"):
        await numa.service.set_mempolicy(proc.pid, proc.token, MPOL_DEFAULT, [0])
    assert proc.mempolicy == Mempolicy()
    await numa.service.set_mempolicy(proc.pid, proc.token, MPOL_BIND, [1])
    assert proc.mempolicy == Mempolicy(MPOL_BIND, (1,))


async def test_the_wrong_token_or_a_dead_process_changes_nothing(numa: Stack) -> None:
    proc = await spawn(numa, "app")
    with pytest.raises(PermissionDenied):
        await numa.service.set_mempolicy(proc.pid, "not-its-token", MPOL_BIND, [1])
    assert proc.mempolicy == Mempolicy()
    await numa.service.exit(proc.pid, proc.token)
    with pytest.raises(ProcessDead):
        await numa.service.set_mempolicy(proc.pid, proc.token, MPOL_BIND, [1])
    assert proc.mempolicy == Mempolicy()


async def test_mpol_default_undoes_a_binding_and_duplicates_are_one_node(numa: Stack) -> None:
    proc = await spawn(numa, "app")
    await numa.service.set_mempolicy(proc.pid, proc.token, MPOL_BIND, [1, 0, 1])
    assert proc.mempolicy == Mempolicy(MPOL_BIND, (0, 1))
    await numa.service.set_mempolicy(proc.pid, proc.token, MPOL_DEFAULT, [])
    assert proc.mempolicy == Mempolicy()


async def test_a_forked_child_inherits_the_policy_and_a_new_process_does_not(
    numa: Stack,
) -> None:
    parent = await spawn(numa, "parent")
    await numa.service.set_mempolicy(parent.pid, parent.token, MPOL_BIND, [1])
    child = await numa.service.fork(parent.pid, parent.token, "child")
    assert child.mempolicy == Mempolicy(MPOL_BIND, (1,))
    # Each has its own from now on.
    await numa.service.set_mempolicy(child.pid, child.token, MPOL_DEFAULT, [])
    assert parent.mempolicy == Mempolicy(MPOL_BIND, (1,))
    other = await numa.service.create_process("other", 1000, parent.pid, 0, set(), [])
    assert other.mempolicy == Mempolicy()


async def test_a_bound_process_takes_its_frames_from_its_nodes_past_the_cpu_lists(
    numa: Stack,
) -> None:
    svc = numa.service
    free = await spawn(numa, "free")
    await spawn(numa, "idle")  # runs on node 1: the next one on node 0 again
    proc = await spawn(numa, "bound")
    # Both run on a CPU of node 0 (the cpuset is every node), whose lists
    # fill with node 0's frames; a bound fault must not take them.
    assert {numa.mmu.profile.cpu_node(svc.cpu_of(p)) for p in (free, proc)} == {0}
    free_at = await svc.mmap(free.pid, free.token, 0, 64 * PAGE, RW, PRIVATE)
    await svc.touch(free.pid, free.token, free_at, 64 * PAGE, True)
    assert numa.frame_nodes(free) == {0}
    await svc.set_mempolicy(proc.pid, proc.token, MPOL_BIND, [1])
    cached = svc.cache.pages()
    refills = svc.cache.refills
    at = await svc.mmap(proc.pid, proc.token, 0, 256 * PAGE, RW, PRIVATE)
    await svc.touch(proc.pid, proc.token, at, 256 * PAGE, True)
    assert proc.mm.rss >= 256
    # User pages and page tables (GFP_KERNEL) alike, as alloc_pages_current.
    assert numa.frame_nodes(proc) == {1}
    assert (svc.cache.pages(), svc.cache.refills) == (cached, refills)
    # A forked child, bound too, breaks copy-on-write onto node 1.
    child = await svc.fork(proc.pid, proc.token, "child")
    await svc.touch(child.pid, child.token, at, 16 * PAGE, True)
    assert numa.frame_nodes(child) == {1}
    # MPOL_DEFAULT again: the CPU's lists serve it, node 0 first.
    await svc.set_mempolicy(proc.pid, proc.token, MPOL_DEFAULT, [])
    more = await svc.mmap(proc.pid, proc.token, 0, 64 * PAGE, RW, PRIVATE)
    await svc.touch(proc.pid, proc.token, more, 64 * PAGE, True)
    ptes = proc.mm.pt.ptes
    new = {pt.pte_pfn(ptes[vpn]) for vpn in range(more // PAGE, more // PAGE + 64)}
    assert {numa.node_of(pfn) for pfn in new} == {0}
