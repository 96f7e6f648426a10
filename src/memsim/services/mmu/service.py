"""The MMU's service layer: every operation that needs frames plans in the
core, gets them from the zone in batch calls, applies, and gives back what
was freed. A lock per process plays mmap_sem: calls on one process run one at
a time, calls on different processes interleave at their zone calls."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Concatenate, ParamSpec, TypeVar

import structlog

from memsim.policy.v1.policy_pb2 import WatchSysctlsResponse
from memsim.services.mmu.core import (
    DEF_PRIORITY,
    MAX_ACCESS_BYTES,
    AccessPlan,
    Mmu,
    Reclaimed,
    Released,
    Segfault,
)
from memsim.services.mmu.errors import InvalidRequest, MachineHalted, NoMemory, ProcessDead
from memsim.services.mmu.frame_cache import FrameCache, sizes_for
from memsim.services.mmu.kernel_objects import CACHES, KernelObjects
from memsim.services.mmu.policy_port import PolicyPort
from memsim.services.mmu.process import ROOT_CGROUP, SIGSEGV, Process
from memsim.services.mmu.slab_port import SlabPort
from memsim.services.mmu.swapfile import SwapFile
from memsim.services.mmu.vma import MAP_POPULATE, PROT_WRITE
from memsim.services.mmu.zone_port import ZonePort
from memsim.services.policy.memcg import MEM_CGROUP_RECLAIM_RETRIES
from memsim.services.policy.sysctl import Sysctls
from memsim.services.policy.watch import sysctl_values
from memsim.services.zone.gfp import GFP_HIGHUSER_MOVABLE, GFP_KERNEL

log = structlog.get_logger("memsim.mmu")

# Reads and writes travel in one gRPC message, whose limit is 4 MiB with the
# envelope: 2 MiB of data leaves room.
MAX_IO_BYTES = 1 << 21
# Memory cgroups. A fault of a process outside the root group is charged a
# batch at a time, at most this many pages (and at most half the group's
# limit), so that the pages of its earlier batches can be reclaimed for the
# later ones, as the kernel's page-at-a-time charge allows.
MEMCG_BATCH_PAGES = 64
# try_to_free_mem_cgroup_pages' sc.swap_cluster_max.
SWAP_CLUSTER_MAX = 32
# congestion_wait(WRITE, HZ/10) between reclaim retries that freed nothing,
# shortened as the zone's is; after an OOM round that said wait, this long
# before the charge is tried again; and at most this long in all for the
# OOM rounds of one charge.
MEMCG_CONGESTION_WAIT_S = 0.002
MEMCG_OOM_RETRY_S = 0.005
MEMCG_OOM_TIMEOUT_S = 10.0

P = ParamSpec("P")
R = TypeVar("R")


def syncs_objects(
    method: Callable[Concatenate[MmuService, P], Awaitable[R]],
) -> Callable[Concatenate[MmuService, P], Awaitable[R]]:
    """After a call that may add or drop processes or VMAs (also one that
    failed half way, or killed its process), the kernel objects follow."""

    @functools.wraps(method)
    async def wrapper(self: MmuService, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(self, *args, **kwargs)
        finally:
            await self.sync_objects()

    return wrapper


@dataclass
class AccessResult:
    minor_faults: int = 0
    major_faults: int = 0
    segfault: Segfault | None = None
    data: bytes = b""


class MmuService:
    def __init__(
        self, mmu: Mmu, zone: ZonePort, swapfile: SwapFile | None = None, swappiness: int = 60
    ) -> None:
        self.mmu = mmu
        self.zone = zone
        self.swapfile = swapfile
        self.swappiness = swappiness
        high, batch = sizes_for(
            0 if mmu.nommu else sum(z.managed for z in mmu.layout.zones.values())
        )
        self.cache = FrameCache(high, batch, self._node_of_pfn, mmu.profile.cpu_node)
        # task_struct, mm_struct and vm_area_struct from the slab, once connected.
        self.slab: SlabPort | None = None
        self.objects: KernelObjects | None = None
        self._locks: defaultdict[int, asyncio.Lock] = defaultdict(asyncio.Lock)
        # pid -> a signal sent while a call of its was in flight (see exit).
        self._pending_kill: dict[int, int] = {}
        # pid -> pages a fault in flight planned for: reclaim leaves them be.
        self._pinned: dict[int, tuple[int, int]] = {}
        # The policy service for memory cgroups' charges and OOM killer;
        # None: nothing is charged.
        self.policy: PolicyPort | None = None
        # Memory cgroup -> its limit in pages as the last charge reply said.
        self._memcg_limits: dict[str, int] = {}
        # Events of memory cgroups: charge refusals, pages reclaimed inside a
        # group, OOM rounds asked for.
        self.memcg_events = {"charge_failures": 0, "reclaimed": 0, "oom": 0}

    def _zone_of_pfn(self, pfn: int) -> tuple[int, str]:
        zone = self.mmu.layout.zone_of_pfn(pfn)
        assert zone is not None, f"pfn {pfn} is in no zone"
        return zone.key

    def _node_of_pfn(self, pfn: int) -> int:
        return self._zone_of_pfn(pfn)[0]

    def cpu_of(self, proc: Process) -> int:
        """The simulated CPU a process runs on: one of its allowed nodes'."""
        profile = self.mmu.profile
        node = proc.nodes[proc.pid % len(proc.nodes)]
        cpus = profile.node_cpus(node)
        return cpus[proc.pid % len(cpus)]

    async def _frames(
        self, gfp_mask: int, count: int, cpu: int, proc: Process | None = None
    ) -> list[int]:
        """count frames from the CPU's list; if it has too few, what it has and
        the rest from the zone in one call, which also refills the list. proc:
        whom they are for (the OOM killer's allocating task); a process held
        to some nodes (its cpuset) or bound to some (its MPOL_BIND mempolicy)
        takes its frames from the zone, which keeps to them, since the CPU's
        list holds frames of any node. The bind nodes go with every
        allocation of the process, page tables too: the zone applies them
        as alloc_pages_current does (not below policy_zone)."""
        if not count:
            return []
        if proc is not None and (
            proc.mempolicy.bind_nodes or len(set(proc.nodes)) < self.mmu.profile.nodes
        ):
            return await self.zone.alloc(
                gfp_mask,
                count,
                cpu,
                pid=proc.pid,
                nodes=proc.nodes,
                mempolicy_nodes=proc.mempolicy.bind_nodes,
            )
        frames = self.cache.take(gfp_mask, count, cpu)
        if frames is not None:
            return frames
        have = self.cache.take_all(gfp_mask, cpu)
        try:
            more = await self.zone.alloc(
                gfp_mask,
                count - len(have),
                cpu,
                self.cache.batch,
                pid=proc.pid if proc is not None else 0,
                nodes=proc.nodes if proc is not None else (),
            )
        except BaseException:
            await self._free(gfp_mask, have, cpu)
            raise
        self.cache.refills += 1
        frames = have + more
        await self._free(gfp_mask, frames[count:], cpu)
        return frames[:count]

    async def _free(self, gfp_mask: int, pfns: list[int], cpu: int) -> None:
        """To the CPU's list; what does not fit to the zone."""
        if pfns:
            await self.zone.free(self.cache.put(gfp_mask, pfns, cpu), cpu)

    async def _give_back(self, released: Released, cpu: int) -> int:
        if self.swapfile is not None:
            for slot in released.slots:
                self.swapfile.discard(slot)
        pages = released.frames + released.tables
        await self._free(GFP_HIGHUSER_MOVABLE, released.frames, cpu)
        await self._free(GFP_KERNEL, released.tables, cpu)
        for pfn, order in released.blocks:
            await self.zone.free_block(pfn, order, cpu)
        await self._uncharge(released.uncharged)
        return len(pages) + sum(1 << order for _, order in released.blocks)

    async def _uncharge(self, uncharged: dict[str, int]) -> None:
        """mem_cgroup_uncharge_page for the pages that left each group."""
        if self.policy is None:
            return
        for group, pages in uncharged.items():
            if pages:
                await self.policy.uncharge(group, pages)

    async def reclaim(
        self, node: int, zone: str, nr_to_reclaim: int, priority: int
    ) -> tuple[int, int, int]:
        """The zone's kswapd or direct reclaim asks for pages of one zone.

        The pages of a fault in flight are passed over: between its plan and
        its apply they must stay as planned, and the allocation reclaiming may
        be that very fault.
        """
        result = self.mmu.shrink_zone(
            (node, zone), nr_to_reclaim, priority, self.swappiness, self._pinned
        )
        await self._page_out(result)
        # Frames held for faults to come are the cheapest to give.
        held = self.cache.drain(keep=lambda pfn: self._zone_of_pfn(pfn) != (node, zone))
        await self.zone.free(held, 0, cold=True)
        lru = self.mmu.lru.get((node, zone))
        left = len(lru.active) + len(lru.inactive) if lru is not None else 0
        return result.scanned, len(result.frames) + len(held), left

    async def _page_out(self, result: Reclaimed) -> None:
        """What reclaim swapped out: the bytes to the swap file before the
        frames go back to the zone, and the pages out of their groups."""
        if result.swapped:
            assert self.swapfile is not None
            for slot, data in result.swapped:  # pageout, before the frames go
                self.swapfile.write(slot, data)
        await self.zone.free(result.frames, 0, cold=True)  # as __pagevec_free does
        await self._uncharge(result.uncharged)

    async def set_mempolicy(self, pid: int, token: str, mode: str, nodes: list[int]) -> Process:
        """set_mempolicy(2), called by the process itself: its allocations
        from now on (the pages it has stay where they are)."""
        async with self._locked(pid):
            proc = self.mmu.process(pid, token)
            self.mmu.set_mempolicy(proc, mode, nodes)
            return proc

    # -- memory cgroups (2.6.25 mm/memcontrol.c) ---------------------------------------------

    def set_cgroup(self, pid: int, name: str) -> Process:
        """Moves a live process into a memory cgroup (cgroup_attach_task's
        mem_cgroup_move_task): its faults charge the new group from now on;
        what it charged before stays charged where it was."""
        proc = self.mmu.process(pid)
        self.mmu.set_cgroup(proc, name)
        return proc

    async def reclaim_memcg(self, group: str, pages: int) -> int:
        """try_to_free_mem_cgroup_pages: the group's own pages swapped out,
        priority by priority from DEF_PRIORITY, until `pages` are free; the
        pages freed."""
        freed = 0
        for priority in range(DEF_PRIORITY, -1, -1):
            result = self.mmu.shrink_memcg(
                group, pages - freed, priority, self.swappiness, self._pinned
            )
            await self._page_out(result)
            freed += len(result.frames)
            if freed >= pages or not self.mmu.memcg_pages(group):
                break
        self.memcg_events["reclaimed"] += freed
        return freed

    def _memcg_batch(self, group: str) -> int:
        limit = self._memcg_limits.get(group)
        if limit is None:
            return MEMCG_BATCH_PAGES
        return max(1, min(MEMCG_BATCH_PAGES, limit // 2))

    def _check_not_killed(self, proc: Process) -> None:
        """The OOM killer chose the process whose charge it was called for:
        its kill waits for this call to end, which must end now."""
        if proc.pid in self._pending_kill:
            raise NoMemory(f"process {proc.pid} was killed while it charged its memory cgroup")

    async def _charge_memcg(self, proc: Process, pages: int) -> str | None:
        """mem_cgroup_charge_common for a batch of pages: the group charged
        (None: nothing was, the root group is never charged). Over the
        limit, the group's own pages are reclaimed and the charge retried;
        after MEM_CGROUP_RECLAIM_RETRIES rounds of reclaim that freed
        nothing, mem_cgroup_out_of_memory. A kill (or a wait) retries the
        charge, within MEMCG_OOM_TIMEOUT_S; a panic fails it (the machine is
        halted); a give-up fails it with ENOMEM."""
        group = proc.cgroup
        if self.policy is None or group == ROOT_CGROUP or pages <= 0:
            return None
        loop = asyncio.get_running_loop()
        until = loop.time() + MEMCG_OOM_TIMEOUT_S
        retries = MEM_CGROUP_RECLAIM_RETRIES
        while True:
            self._check_not_killed(proc)
            charge = await self.policy.charge(group, pages)
            if charge.gone:  # the policy no longer knows it: back in the root group
                log.warning("memcg_gone", pid=proc.pid, cgroup=group)
                if proc.cgroup == group:
                    proc.cgroup = ROOT_CGROUP
                self._memcg_limits.pop(group, None)
                return None
            self._memcg_limits[group] = charge.limit_pages
            if charge.ok:
                return group
            self.memcg_events["charge_failures"] += 1
            self._check_not_killed(proc)
            want = max(SWAP_CLUSTER_MAX, pages - charge.room_pages)
            if await self.reclaim_memcg(group, want):
                continue
            if retries:
                retries -= 1
                await asyncio.sleep(MEMCG_CONGESTION_WAIT_S)
                continue
            self.memcg_events["oom"] += 1
            verdict = await self.policy.out_of_memory(GFP_KERNEL, proc.pid, group)
            if verdict.decision == "panic":
                raise MachineHalted(verdict.message)
            self._check_not_killed(proc)
            if verdict.decision not in ("killed", "wait"):
                raise NoMemory(
                    f"memory cgroup {group} is at its limit ({charge.limit_pages} pages) "
                    f"and nothing in it can be reclaimed or killed: {verdict.message}"
                )
            if loop.time() >= until:
                raise NoMemory(
                    f"memory cgroup {group} is still at its limit "
                    f"({charge.limit_pages} pages) after {MEMCG_OOM_TIMEOUT_S:g} s of OOM kills"
                )
            if verdict.decision == "wait":
                await asyncio.sleep(MEMCG_OOM_RETRY_S)

    # -- commit accounting ---------------------------------------------------------------

    def set_sysctls(self, sysctls: Sysctls) -> None:
        """Applies a snapshot of the vm.* sysctls (from the policy service's
        WatchSysctls, or `memsim sysctl -w`): the commit check's
        overcommit_memory, overcommit_ratio and the rest, and vm.swappiness
        for reclaim. Takes effect for the next call; nothing is re-checked."""
        self.mmu.set_sysctls(sysctls)
        self.swappiness = sysctls.swappiness

    def follow_sysctls(self, state: WatchSysctlsResponse) -> None:
        """A state from the policy service's watch: its values over ours."""
        sysctls = copy.deepcopy(self.mmu.sysctls)
        sysctls.load_state(sysctl_values(state))
        self.set_sysctls(sysctls)

    async def refresh_counters(self) -> None:
        """Reads the zone's free and reserved pages and the slab's reclaimable
        pages into the copy the commit check uses: one or two calls, off the
        path of any process's call."""
        free, reserve = await self.zone.counters()
        reclaimable = await self.slab.reclaimable_pages() if self.slab is not None else None
        self.mmu.mem.update(
            nr_free_pages=free, totalreserve_pages=reserve, nr_slab_reclaimable=reclaimable
        )

    async def refresh_counters_forever(self, interval_s: float) -> None:
        """refresh_counters every interval_s until cancelled; a failed read
        keeps the last values (logged), as a counter a little old is still a
        fair estimate."""
        while True:
            try:
                await self.refresh_counters()
            except Exception as exc:  # a peer restarting must not end the loop
                log.warning("counters_refresh_failed", error=str(exc))
            await asyncio.sleep(interval_s)

    async def connect_slab(self, slab: SlabPort) -> None:
        """From now on the MMU's kernel objects come from the slab service."""
        self.objects = KernelObjects(await slab.tunables(CACHES))
        self.slab = slab
        await self.sync_objects()

    def object_counts(self) -> dict[str, int]:
        alive = self.mmu.alive()
        return {
            "task_struct": len(alive),
            "mm_struct": len(alive),
            "vm_area_struct": sum(len(p.mm.space) for p in alive),
        }

    async def sync_objects(self) -> None:
        if self.slab is None or self.objects is None:
            return
        got = {
            name: await self.slab.cache_alloc(name, count)
            for name, count in self.objects.wanted(self.object_counts()).items()
        }
        for name, addresses in self.objects.settle(self.object_counts(), got).items():
            await self.slab.cache_free(name, addresses)

    async def drain_cache(self) -> int:
        """drain_all_pages: every frame held for faults to come back to the zone,
        and the kernel objects on the MMU's arrays back to the slab."""
        if self.slab is not None and self.objects is not None:
            for name, addresses in self.objects.drain().items():
                await self.slab.cache_free(name, addresses)
        held = self.cache.drain()
        await self.zone.free(held, 0)
        return len(held)

    async def boot(self) -> Process:
        """init, pid 1."""
        return await self.create_process("init", 0, 0, 0, set(), [])

    @syncs_objects
    async def create_process(
        self, name: str, uid: int, parent: int, nice: int, capabilities: set[str], nodes: list[int]
    ) -> Process:
        cpu = 0
        pgd = await self._frames(GFP_KERNEL, self.mmu.plan_create(), cpu)
        try:
            return self.mmu.create_process(name, uid, parent or 1, nice, capabilities, nodes, pgd)
        except BaseException:
            await self._free(GFP_KERNEL, pgd, cpu)
            raise

    @syncs_objects
    async def fork(self, pid: int, token: str, name: str) -> Process:
        async with self._locked(pid):
            parent = self.mmu.process(pid, token)
            cpu = self.cpu_of(parent)
            tables = await self._frames(GFP_KERNEL, self.mmu.plan_fork(parent), cpu, parent)
            try:
                return self.mmu.fork(parent, name or None, tables)
            except BaseException:
                await self._free(GFP_KERNEL, tables, cpu)
                raise

    @syncs_objects
    async def exit(self, pid: int, token: str | None, signal: int = 0) -> int:
        """Exit, or a signal's death; the pages freed. A signal to a process
        with a call in flight is delivered when that call ends (as the kernel
        delivers it on the way back to user space): 0 pages now. So the OOM
        killer never waits on its victim's own fault, which waits on it."""
        if signal and self._locks[pid].locked():
            self.mmu.process(pid, token)  # it must exist and live
            self._pending_kill.setdefault(pid, signal)
            return 0
        async with self._locked(pid):
            proc = self.mmu.process(pid, token)
            released = self.mmu.kill(proc, signal) if signal else self.mmu.exit(proc)
            return await self._give_back(released, self.cpu_of(proc))

    @contextlib.asynccontextmanager
    async def _locked(self, pid: int) -> AsyncIterator[None]:
        """The process's calls one at a time; a signal that came meanwhile is
        delivered at the end, and a call that failed for want of memory
        because its process was killed says so."""
        async with self._locks[pid]:
            try:
                yield
            except NoMemory:
                if pid in self._pending_kill:
                    raise ProcessDead(
                        f"process {pid} was killed by the OOM killer (SIGKILL) while it "
                        "waited for memory"
                    ) from None
                raise
            finally:
                signal = self._pending_kill.pop(pid, None)
                if signal is not None:
                    await self._deliver(pid, signal)

    async def _deliver(self, pid: int, signal: int) -> None:
        proc = self.mmu.processes.get(pid)
        if proc is not None and proc.alive:
            await self._give_back(self.mmu.kill(proc, signal), self.cpu_of(proc))

    @syncs_objects
    async def mmap(
        self, pid: int, token: str, addr: int, length: int, prot: int, flags: int
    ) -> int:
        async with self._locked(pid):
            proc = self.mmu.process(pid, token)
            if self.mmu.nommu:
                return await self._mmap_block(proc, length, prot, flags)
            address, released = self.mmu.mmap(proc, addr, length, prot, flags)
            await self._give_back(released, self.cpu_of(proc))
            if flags & MAP_POPULATE:  # fault it all in now, as make_pages_present
                with contextlib.suppress(NoMemory):  # best effort: the mapping stays
                    await self._access(proc, address, length, bool(prot & PROT_WRITE))
            return address

    async def _mmap_block(self, proc: Process, length: int, prot: int, flags: int) -> int:
        """No MMU: one physically contiguous block, or a refusal that says why."""
        order = self.mmu.nommu_order(flags, length)
        cpu = self.cpu_of(proc)
        try:
            pfn = await self.zone.alloc_block(
                GFP_KERNEL,
                order,
                cpu,
                pid=proc.pid,
                nodes=proc.nodes,
                mempolicy_nodes=proc.mempolicy.bind_nodes,
            )
        except NoMemory as exc:
            free = await self.zone.free_pages()
            why = (
                f"{free} pages are free but no block of {1 << order} is: the free memory "
                "is fragmented (see /proc/buddyinfo)"
                if free >= 1 << order
                else f"only {free} pages are free"
            )
            raise NoMemory(
                f"mmap of {length} bytes needs {1 << order} contiguous pages "
                f"(order {order}) without an MMU; {why}. {exc}"
            ) from None
        return self.mmu.map_block(proc, pfn, order, length, prot, flags)

    @syncs_objects
    async def munmap(self, pid: int, token: str, addr: int, length: int) -> int:
        async with self._locked(pid):
            proc = self.mmu.process(pid, token)
            released = (
                self.mmu.unmap_block(proc, addr, length)
                if self.mmu.nommu
                else self.mmu.munmap(proc, addr, length)
            )
            return await self._give_back(released, self.cpu_of(proc))

    async def shmget(self, pid: int, token: str, key: int, size: int, create: bool) -> int:
        async with self._locked(pid):
            return self.mmu.shmget(self.mmu.process(pid, token), key, size, create)

    @syncs_objects
    async def shmat(self, pid: int, token: str, shmid: int, addr: int, read_only: bool) -> int:
        async with self._locked(pid):
            return self.mmu.shmat(self.mmu.process(pid, token), shmid, addr, read_only)

    @syncs_objects
    async def shmdt(self, pid: int, token: str, addr: int) -> int:
        async with self._locked(pid):
            proc = self.mmu.process(pid, token)
            return await self._give_back(self.mmu.shmdt(proc, addr), self.cpu_of(proc))

    async def shmrm(self, pid: int, token: str, shmid: int) -> int:
        async with self._locked(pid):
            proc = self.mmu.process(pid, token)
            return await self._give_back(self.mmu.shmrm(proc, shmid), self.cpu_of(proc))

    @syncs_objects
    async def mprotect(self, pid: int, token: str, addr: int, length: int, prot: int) -> None:
        async with self._locked(pid):
            self.mmu.mprotect(self.mmu.process(pid, token), addr, length, prot)

    @syncs_objects
    async def brk(self, pid: int, token: str, addr: int) -> int:
        async with self._locked(pid):
            proc = self.mmu.process(pid, token)
            if addr == 0:
                return proc.mm.brk
            new_brk, released = self.mmu.brk(proc, addr)
            await self._give_back(released, self.cpu_of(proc))
            return new_brk

    @syncs_objects
    async def touch(
        self, pid: int, token: str, addr: int, length: int, write: bool
    ) -> AccessResult:
        async with self._locked(pid):
            return await self._access(self.mmu.process(pid, token), addr, length, write)

    async def _access(
        self,
        proc: Process,
        addr: int,
        length: int,
        write: bool,
        payload: bytes | None = None,
        read: bool = False,
    ) -> AccessResult:
        """A fault over a range; for a process in a memory cgroup, a batch of
        at most _memcg_batch pages at a time, each charged before its frames
        are taken."""
        if (
            self.policy is None
            or proc.cgroup == ROOT_CGROUP
            or self.mmu.nommu
            or not 0 < length <= MAX_ACCESS_BYTES
        ):
            return await self._access_batch(proc, addr, length, write, payload, read)
        total = AccessResult()
        data: list[bytes] = []
        end = addr + length
        at = addr
        while at < end:
            step = self._memcg_batch(proc.cgroup) << self.mmu.page_shift
            upto = min(end, (at // step + 1) * step)
            part = await self._access_batch(
                proc,
                at,
                upto - at,
                write,
                payload[at - addr : upto - addr] if payload is not None else None,
                read,
            )
            total.minor_faults += part.minor_faults
            total.major_faults += part.major_faults
            data.append(part.data)
            if part.segfault is not None:
                total.segfault = part.segfault
                break
            at = upto
        total.data = b"".join(data)
        return total

    @syncs_objects
    async def write(self, pid: int, token: str, addr: int, payload: bytes) -> AccessResult:
        if not payload:
            raise InvalidRequest("write: no data")
        if len(payload) > MAX_IO_BYTES:
            raise InvalidRequest(f"write: {len(payload)} bytes is more than {MAX_IO_BYTES}")
        async with self._locked(pid):
            proc = self.mmu.process(pid, token)
            return await self._access(proc, addr, len(payload), True, payload)

    @syncs_objects
    async def read(self, pid: int, token: str, addr: int, length: int) -> AccessResult:
        if length > MAX_IO_BYTES:
            raise InvalidRequest(f"read: {length} bytes is more than {MAX_IO_BYTES}")
        async with self._locked(pid):
            proc = self.mmu.process(pid, token)
            return await self._access(proc, addr, length, False, read=True)

    async def _access_batch(
        self,
        proc: Process,
        addr: int,
        length: int,
        write: bool,
        payload: bytes | None = None,
        read: bool = False,
    ) -> AccessResult:
        if self.mmu.nommu:  # everything is present; nothing is protected
            self.mmu.check_nommu_access(proc, addr, length)
            if payload is not None:
                self.mmu.write_bytes(proc, addr, payload)
            return AccessResult(data=self.mmu.read_bytes(proc, addr, length) if read else b"")
        plan: AccessPlan = self.mmu.plan_access(proc, addr, length, write)
        cpu = self.cpu_of(proc)
        shift = self.mmu.page_shift
        self._pinned[proc.pid] = (addr >> shift, ((addr + length - 1) >> shift) + 1)
        try:
            # mem_cgroup_charge before the pages are taken; page tables are
            # the kernel's, not charged.
            memcg = await self._charge_memcg(proc, plan.frames_needed)
            try:
                tables = await self._frames(GFP_KERNEL, len(plan.tables), cpu, proc)
                try:
                    frames = await self._frames(GFP_HIGHUSER_MOVABLE, plan.frames_needed, cpu, proc)
                except BaseException:
                    await self._free(GFP_KERNEL, tables, cpu)
                    raise
            except BaseException:
                if memcg is not None:
                    await self._uncharge({memcg: plan.frames_needed})
                raise
        finally:
            del self._pinned[proc.pid]
        swapped_in: dict[int, bytes | None] = {}
        if self.swapfile is not None:
            swapped_in = {
                vpn: self.swapfile.read(slot)
                for vpn, slot in plan.swap_slots(proc.mm.pt.ptes).items()
            }
        released = self.mmu.apply_access(proc, plan, frames, tables, swapped_in, memcg)
        # No await until the bytes are copied: reclaim could take the pages.
        minor, major = plan.faults
        result = AccessResult(minor_faults=minor, major_faults=major)
        done = length if plan.segfault is None else plan.segfault.address - addr
        if payload is not None and done > 0:
            self.mmu.write_bytes(proc, addr, payload[:done])
        if read and done > 0:
            result.data = self.mmu.read_bytes(proc, addr, done)
        if plan.segfault is not None:  # the kernel sends SIGSEGV: the process dies
            result.segfault = plan.segfault
            self.mmu.note_protection_fault(proc, plan.segfault)
            released.extend(self.mmu.exit(proc, SIGSEGV))
        await self._give_back(released, cpu)
        return result
