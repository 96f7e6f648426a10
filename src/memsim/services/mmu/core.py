"""The MMU's domain: processes, address spaces, page tables and page contents.

Pure and synchronous. Anything that needs frames is split in two: a plan
(what would change, how many frames and table pages it takes) and an apply
that takes the frames the service got from the zone and returns any it did
not use. Between the two nothing of that process changes: the service holds
the process's lock (its mmap_sem); only other processes can drop their share
of a copy-on-write frame, which apply re-checks.

Commit accounting (Committed_AS, vm_committed_space) is 2.6.24's: a mapping
that mmap_region, do_brk, exec's stack or dup_mmap gives VM_ACCOUNT is charged
when it is made, after security_vm_enough_memory says yes, and is given back
with the VMA (munmap, also of a part; exit). A shared anonymous mapping's charge
belongs to its shmem object and a System V segment's to the segment. The check
runs here, on the cached sysctls and counters (set_sysctls, mem): no call.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field

from memsim.profiles.loader import MachineProfile
from memsim.services.mmu import pagetable as pt
from memsim.services.mmu import vma as v
from memsim.services.mmu.commit import MemCounters, refusal_message
from memsim.services.mmu.errors import (
    InvalidRequest,
    NoMemory,
    NoSuchProcess,
    NoSuchSegment,
    PermissionDenied,
    ProcessDead,
)
from memsim.services.mmu.lru import ZoneLru, owner, owner_vpn
from memsim.services.mmu.pagetable import PageTable
from memsim.services.mmu.process import (
    CAPABILITIES,
    MPOL_BIND,
    MPOL_DEFAULT,
    MPOL_MODES,
    OOM_ADJUST_MAX,
    OOM_DISABLE,
    OOM_SCORE_ADJ_MAX,
    ROOT_CGROUP,
    SIGKILL,
    SIGSEGV,
    Mempolicy,
    Mm,
    Process,
)
from memsim.services.mmu.swap import SwapArea
from memsim.services.mmu.vma import AddressSpace, Vma
from memsim.services.policy.overcommit import (
    CommitLedger,
    MemState,
    mmap_is_charged,
    mprotect_is_charged,
    vm_commit_limit,
)
from memsim.services.policy.sysctl import Sysctls
from memsim.services.zone.cpuset import memory_nodes
from memsim.services.zone.machine import Machine

# The stack every process starts with, and the gap mmap leaves below it
# (mmap_base: TASK_SIZE less the stack rlimit, at least 128 MiB).
STACK_BYTES = 128 << 10
MMAP_GAP_BYTES = 128 << 20
EXE_TEXT_PAGES = 8
# One call faults at most this much in (fault-around of a whole range).
MAX_ACCESS_BYTES = 1 << 30
EXE_DATA_PAGES = 2
INIT_PID = 1

# What a planned page needs.
NEW, ZERO, COW, REUSE, HIT, SWAPIN = "new", "zero", "cow", "reuse", "hit", "swapin"
# A page of a shared memory segment: already in the segment, or new to it.
SHM, SHM_NEW = "shm", "shmnew"
# SHMMAX of 2.6: the largest segment.
SHMMAX = 0x2000000
DEF_PRIORITY = 12
# What zone_pages() counts per zone.
MMU_ZONE_KINDS = ("anon", "page_table", "shmem")


@dataclass
class Segfault:
    address: int
    reason: str


@dataclass
class AccessPlan:
    """What touching [start, end) pages would do, up to a fault if any."""

    write: bool
    pages: list[tuple[int, str]] = field(default_factory=list)
    tables: list[tuple[int, int]] = field(default_factory=list)
    segfault: Segfault | None = None

    @property
    def frames_needed(self) -> int:
        return sum(1 for _, kind in self.pages if kind in (NEW, COW, SWAPIN, SHM_NEW))

    @property
    def faults(self) -> tuple[int, int]:
        """(minor, major): every page that was not already mapped as needed is
        a fault, and those that come back from swap are the major ones."""
        major = sum(1 for _, kind in self.pages if kind == SWAPIN)
        return sum(1 for _, kind in self.pages if kind != HIT) - major, major

    def swap_slots(self, ptes: dict[int, int]) -> dict[int, int]:
        """vpn -> swap slot of every page this plan swaps in."""
        return {vpn: pt.pte_pfn(ptes[vpn]) for vpn, kind in self.pages if kind == SWAPIN}


@dataclass
class Released:
    """Frames and page-table pages to give back to the zone, and swap slots
    whose contents are no longer wanted."""

    frames: list[int] = field(default_factory=list)
    tables: list[int] = field(default_factory=list)
    slots: list[int] = field(default_factory=list)
    # No MMU: (pfn, order) of whole blocks.
    blocks: list[tuple[int, int]] = field(default_factory=list)
    # Memory cgroup -> pages to uncharge (mem_cgroup_uncharge_page).
    uncharged: dict[str, int] = field(default_factory=dict)

    def extend(self, other: Released) -> None:
        self.frames += other.frames
        self.tables += other.tables
        self.slots += other.slots
        self.blocks += other.blocks
        for group, pages in other.uncharged.items():
            self.uncharged[group] = self.uncharged.get(group, 0) + pages


@dataclass
class ShmSegment:
    """A System V shared memory segment: its frames outlive any one mapping."""

    shmid: int
    key: int
    pages: int
    uid: int
    frames: dict[int, int] = field(default_factory=dict)  # page in segment -> pfn
    removed: bool = False  # IPC_RMID: destroyed once nobody has it attached
    # Its owner in the commit ledger (shmem_acct_size at shmget): released
    # when the segment is destroyed.
    commit_key: int = 0


@dataclass
class Reclaimed:
    """What shrink_zone did: pages scanned and freed, and the bytes of every
    page it swapped out, which must reach the swap file before the frames go."""

    scanned: int = 0
    frames: list[int] = field(default_factory=list)
    swapped: list[tuple[int, bytearray | None]] = field(default_factory=list)
    # Memory cgroup -> pages swapped out of it, to uncharge.
    uncharged: dict[str, int] = field(default_factory=dict)


def valid_cgroup_name(name: str) -> bool:
    """An absolute group path: "/", "/a", "/a/b" (no empty, "." or ".." part)."""
    if name == ROOT_CGROUP:
        return True
    parts = name.split("/")
    return name.startswith("/") and all(p not in ("", ".", "..") for p in parts[1:])


class Mmu:
    def __init__(self, profile: MachineProfile, seed: int = 0, swap_pages: int = 0) -> None:
        self.profile = profile
        self.page_size = profile.page_size
        self.page_shift = profile.page_size.bit_length() - 1
        self.task_pages = profile.task_size >> self.page_shift
        gap = max(MMAP_GAP_BYTES, STACK_BYTES) >> self.page_shift
        self.mmap_base = self.task_pages - gap
        self.processes: dict[int, Process] = {}
        self.next_pid = INIT_PID
        self._rng = random.Random(seed)
        # Owners of every frame mapped more than once (fork, MAP_SHARED). A
        # frame mapped once is not listed: its owner is its LRU entry's value.
        self.sharers: dict[int, list[int]] = {}
        self.layout = Machine(profile)
        self.lru = {key: ZoneLru() for key in self.layout.zones}
        self.swap = SwapArea(swap_pages)
        self.swap_events = {"pswpin": 0, "pswpout": 0}
        # uClinux: no page tables, one address space, no protection.
        self.nommu = not profile.mmu
        self.shm: dict[int, ShmSegment] = {}
        self.shm_keys: dict[int, int] = {}  # key -> shmid; IPC_PRIVATE (0) is never listed
        self.shm_frames: dict[int, int] = {}  # pfn -> shmid
        self._next_shmid = 0
        # Bytes of frames that were written; unwritten frames read as zeros.
        self.data: dict[int, bytearray] = {}
        self.clock_ms = 0
        self.faults = {"minor": 0, "major": 0, "protection": 0}
        # Commit accounting: the sysctls as last applied, Committed_AS by
        # owner (a pid, or a shmem object's negative key), and the zone's and
        # slab's counters as last refreshed.
        kb = self.page_size // 1024
        self.mem = MemCounters.at_boot(self.layout)
        self.sysctls = Sysctls(
            min_free_kbytes=self.layout.min_free_kbytes,
            lowmem_reserve_ratio=self.layout.lowmem_reserve_ratio,
            free_kbytes=self.mem.totalram_pages * kb,
        )
        self.commit = CommitLedger()
        self.commit_refusals = 0
        self.last_refusal = ""
        # Shared anonymous mappings' shmem objects: key -> mms that map it.
        self.shmem_users: dict[int, int] = {}
        self._next_commit_key = -1
        # Memory cgroups (2.6.25's page_cgroup): the group each frame was
        # charged to, for frames charged outside the root group, and each
        # group's own LRU of its charged anonymous pages, oldest first.
        self.memcg_charged: dict[int, str] = {}
        self.memcg_lru: dict[str, dict[int, None]] = {}

    # -- commit accounting (mm/mmap.c, security/commoncap.c) ------------------------------

    def set_sysctls(self, sysctls: Sysctls) -> None:
        """Applies a snapshot of the vm.* sysctls (the policy service owns
        them): the MMU keeps its own copy, so later writes to the object
        passed do not reach it until it is applied again."""
        self.sysctls = copy.deepcopy(sysctls)

    def mem_state(self) -> MemState:
        """The counters __vm_enough_memory reads: swap live, the rest cached.
        memsim has no page cache, so NR_FILE_PAGES is 0."""
        mem = self.mem
        return MemState(
            totalram_pages=mem.totalram_pages,
            total_swap_pages=self.swap.total,
            nr_free_pages=mem.nr_free_pages,
            nr_file_pages=0,
            nr_swap_pages=self.swap.free,
            nr_slab_reclaimable=mem.nr_slab_reclaimable,
            totalreserve_pages=mem.totalreserve_pages,
            page_size=self.page_size,
        )

    @property
    def committed_as(self) -> int:
        """Committed_AS in pages."""
        return self.commit.committed

    @property
    def commit_limit(self) -> int:
        """CommitLimit in pages, as /proc/meminfo computes it."""
        return vm_commit_limit(
            self.mem_state(), self.sysctls.overcommit_ratio, self.sysctls.overcommit_kbytes
        )

    @staticmethod
    def cap_sys_admin(proc: Process) -> bool:
        """cap_vm_enough_memory's test: root has every capability."""
        return proc.uid == 0 or "CAP_SYS_ADMIN" in proc.capabilities

    def committed_pages(self, proc: Process) -> int:
        """What the process's own VMAs hold of Committed_AS."""
        return self.commit.by_pid.get(proc.pid, 0)

    def _new_commit_key(self) -> int:
        key = self._next_commit_key
        self._next_commit_key -= 1
        return key

    def _charge(
        self,
        owner: int,
        sizes: list[int],
        what: str,
        *,
        cap_sys_admin: bool,
        total_vm: int,
        released: int = 0,
    ) -> None:
        """security_vm_enough_memory for each size in turn, charging `owner`;
        on a refusal, what this call charged goes back and NoMemory says why.
        released: pages the caller will uncharge once this succeeds (what a
        MAP_FIXED mapping replaces), counted as gone already, as the kernel
        unmaps before it checks."""
        charged = 0
        mem = self.mem_state()
        for pages in sizes:
            if not pages:
                continue
            # The ledger's own check_and_charge, on Committed_AS less what the
            # caller is about to release.
            self.commit.committed -= released
            try:
                check = self.commit.check_and_charge(
                    owner,
                    pages,
                    mem,
                    self.sysctls,
                    cap_sys_admin=cap_sys_admin,
                    total_vm=total_vm,
                )
            finally:
                self.commit.committed += released
            if not check.ok:
                if charged:
                    self.commit.uncharge(owner, charged)
                self.commit_refusals += 1
                self.last_refusal = refusal_message(what, check)
                raise NoMemory(self.last_refusal)
            charged += pages

    def _release_shmem(self, keys: set[int], still_mapped: set[int]) -> None:
        """One mm fewer maps each of keys (unless it still does): an object
        nobody maps any longer goes, and its charge with it."""
        for key in keys - still_mapped:
            users = self.shmem_users[key] - 1
            if users:
                self.shmem_users[key] = users
            else:
                del self.shmem_users[key]
                self.commit.release(key)

    # -- processes -----------------------------------------------------------------

    def process(self, pid: int, token: str | None = None, *, alive: bool = True) -> Process:
        """The process named by pid, checked against its token."""
        proc = self.processes.get(pid)
        if proc is None:
            raise NoSuchProcess(f"no process with pid {pid}")
        if token is not None and token != proc.token:
            raise PermissionDenied(f"wrong token for pid {pid}")
        if alive and not proc.alive:
            how = f"was killed by signal {proc.exit_signal}" if proc.exit_signal else "has exited"
            raise ProcessDead(f"pid {pid} ({proc.name}) {how}")
        return proc

    def plan_create(self) -> int:
        """Table pages a new process needs: its pgd."""
        return 1 if self.profile.pt_levels else 0

    def create_process(
        self,
        name: str,
        uid: int,
        ppid: int,
        nice: int,
        capabilities: set[str],
        nodes: list[int],
        pgd: list[int],
        *,
        charge: bool = True,
    ) -> Process:
        """execve of a new program; charge False: fork's child, whose mm is
        replaced by the parent's copy."""
        self._check_new(name, uid, ppid, nice, capabilities, nodes)
        pid = self.next_pid
        mm = self._new_mm(name, pgd)
        if charge:  # exec: the stack (VM_STACK_FLAGS) and the data (private, writable)
            self._charge(
                pid,
                [a.pages for a in mm.space if a.account],
                "execve",
                cap_sys_admin=uid == 0 or "CAP_SYS_ADMIN" in capabilities,
                total_vm=0,
            )
        self.next_pid += 1
        proc = Process(
            pid=pid,
            token=f"{self._rng.getrandbits(128):032x}",
            name=name,
            uid=uid,
            ppid=ppid if pid != INIT_PID else 0,
            nice=nice,
            capabilities=frozenset(capabilities),
            nodes=tuple(nodes or range(self.profile.nodes)),
            mm=mm,
            start_time_ms=self.clock_ms,
        )
        self.processes[pid] = proc
        if proc.ppid in self.processes:
            self.processes[proc.ppid].children.append(pid)
        return proc

    def _check_new(
        self, name: str, uid: int, ppid: int, nice: int, capabilities: set[str], nodes: list[int]
    ) -> None:
        if not name or len(name) > 15 or "/" in name:
            raise InvalidRequest(
                f"process name {name!r} must be 1..15 characters, no '/' (TASK_COMM_LEN)"
            )
        if uid < 0:
            raise InvalidRequest(f"uid {uid} is negative")
        if not -20 <= nice <= 19:
            raise InvalidRequest(f"nice {nice} is outside -20..19")
        unknown = set(capabilities) - set(CAPABILITIES)
        if unknown:
            raise InvalidRequest(
                f"unknown capabilities {sorted(unknown)} (known: {', '.join(CAPABILITIES)})"
            )
        bad_nodes = [n for n in nodes if not 0 <= n < self.profile.nodes]
        if bad_nodes:
            raise InvalidRequest(f"nodes {bad_nodes} are outside 0..{self.profile.nodes - 1}")
        if self.processes and ppid not in self.processes:
            raise NoSuchProcess(f"no parent process with pid {ppid}")

    def _new_mm(self, name: str, pgd: list[int]) -> Mm:
        space = AddressSpace()
        table = PageTable(self.profile.pt_levels, self.page_size, self.profile.pte_bytes)
        if self.nommu:  # the image and stack of a flat binary are not simulated
            return Mm(space, table, start_brk=0, brk=0)
        exe = self.profile.exe_base >> self.page_shift
        space.insert(Vma(exe, exe + EXE_TEXT_PAGES, v.PROT_READ | v.PROT_EXEC, name=name))
        data_end = exe + EXE_TEXT_PAGES + EXE_DATA_PAGES
        space.insert(
            Vma(
                exe + EXE_TEXT_PAGES,
                data_end,
                v.PROT_READ | v.PROT_WRITE,
                name=name,
                account=True,
            )
        )
        stack = STACK_BYTES >> self.page_shift
        space.insert(
            Vma(
                self.task_pages - stack,
                self.task_pages,
                v.PROT_READ | v.PROT_WRITE,
                name="[stack]",
                growsdown=True,
                account=True,
            )
        )
        for pfn in pgd:
            table.tables[(0, 0)] = pfn
        mm = Mm(space, table, start_brk=data_end, brk=data_end << self.page_shift)
        mm.note_vm()
        return mm

    # -- mmap, munmap, mprotect, brk -----------------------------------------------------

    def _pages(self, addr: int, length: int, what: str) -> tuple[int, int]:
        if addr % self.page_size:
            raise InvalidRequest(
                f"{what}: address {addr:#x} is not page aligned ({self.page_size} bytes)"
            )
        if length <= 0:
            raise InvalidRequest(f"{what}: length {length} must be positive")
        start = addr >> self.page_shift
        end = start + ((length + self.page_size - 1) >> self.page_shift)
        if end > self.task_pages:
            raise InvalidRequest(
                f"{what}: [{addr:#x}, {addr + length:#x}) reaches past "
                f"TASK_SIZE {self.profile.task_size:#x}"
            )
        return start, end

    def mmap(
        self, proc: Process, addr: int, length: int, prot: int, flags: int
    ) -> tuple[int, Released]:
        """do_mmap_pgoff for anonymous memory: the address, and what MAP_FIXED unmapped."""
        if prot & ~v.PROT_MASK:
            raise InvalidRequest(f"mmap: unknown protection bits {prot & ~v.PROT_MASK:#x}")
        if flags & ~v.MAP_KNOWN:
            raise InvalidRequest(f"mmap: unknown flags {flags & ~v.MAP_KNOWN:#x}")
        if bool(flags & v.MAP_SHARED) == bool(flags & v.MAP_PRIVATE):
            raise InvalidRequest("mmap: exactly one of MAP_SHARED and MAP_PRIVATE is needed")
        if not flags & v.MAP_ANONYMOUS:
            raise InvalidRequest(
                "mmap: only anonymous mappings (MAP_ANONYMOUS): memsim has no files"
            )
        if length <= 0:
            raise InvalidRequest(f"mmap: length {length} must be positive")
        pages = (length + self.page_size - 1) >> self.page_shift
        released = Released()
        fixed = bool(flags & v.MAP_FIXED)
        if fixed:
            start, end = self._pages(addr, length, "mmap")
        else:
            hint = addr >> self.page_shift if addr % self.page_size == 0 else 0
            if (
                hint
                and hint + pages <= self.task_pages
                and proc.mm.space.is_free(hint, hint + pages)
            ):
                start = hint
            else:
                floor = 1
                found = proc.mm.space.unmapped_area(pages, self.mmap_base, floor)
                if found is None:
                    raise NoMemory(
                        f"mmap: no free range of {pages} pages below "
                        f"{self.mmap_base << self.page_shift:#x}"
                    )
                start = found
            end = start + pages
        shared = bool(flags & v.MAP_SHARED)
        charged = mmap_is_charged(
            writable=bool(prot & v.PROT_WRITE),
            shared=shared,
            anonymous=True,
            noreserve=bool(flags & v.MAP_NORESERVE),
            overcommit_memory=self.sysctls.overcommit_memory,
        )
        # MAP_FIXED: the kernel unmaps first (do_munmap), then checks; memsim
        # checks as if it had, and unmaps only once the check says yes, so
        # that a refused mmap changes nothing.
        old_vm = proc.mm.space.total_pages
        gone, gone_charged = self._unmap_figures(proc, start, end) if fixed else (0, 0)
        key = self._new_commit_key() if shared else 0
        if charged:
            self._charge(
                key if shared else proc.pid,
                [pages],
                "mmap",
                cap_sys_admin=self.cap_sys_admin(proc),
                total_vm=old_vm - gone,
                released=gone_charged,
            )
        if fixed:
            released = self._unmap(proc, start, end)
        proc.mm.space.insert(
            Vma(
                start,
                end,
                prot,
                shared=shared,
                noreserve=bool(flags & v.MAP_NORESERVE),
                growsdown=bool(flags & v.MAP_GROWSDOWN),
                account=charged and not shared,
                anon_shmem=key,
            )
        )
        if shared:
            self.shmem_users[key] = 1
        proc.mm.note_vm()
        return start << self.page_shift, released

    def munmap(self, proc: Process, addr: int, length: int) -> Released:
        start, end = self._pages(addr, length, "munmap")
        return self._unmap(proc, start, end)

    @staticmethod
    def _unmap_figures(proc: Process, start: int, end: int) -> tuple[int, int]:
        """(pages mapped, pages of them with VM_ACCOUNT) in [start, end)."""
        mapped = accounted = 0
        for area in proc.mm.space.overlapping(start, end):
            pages = min(area.end, end) - max(area.start, start)
            mapped += pages
            if area.account:
                accounted += pages
        return mapped, accounted

    def _unmap(self, proc: Process, start: int, end: int) -> Released:
        """do_munmap: unmap_region gives back the VM_ACCOUNT pages removed
        (vm_unacct_memory), also of a VMA that is cut in two."""
        mm = proc.mm
        released = Released()
        overlapping = mm.space.overlapping(start, end)
        segments = {a.shm for a in overlapping if a.shm is not None}
        objects = {a.anon_shmem for a in overlapping if a.anon_shmem}
        _, accounted = self._unmap_figures(proc, start, end)
        if accounted:
            self.commit.uncharge(proc.pid, accounted)
        for lo, hi in mm.space.unmap(start, end):
            released.extend(self._drop_ptes(proc, lo, hi))
        if objects:
            self._release_shmem(objects, {a.anon_shmem for a in mm.space if a.anon_shmem})
        spans = [(x.start, x.end) for x in mm.space]
        for key in mm.pt.tables_left_empty(spans):
            released.tables.append(mm.pt.tables.pop(key))
        for shmid in segments:
            released.extend(self._shm_maybe_destroy(shmid))
        return released

    def _drop_ptes(self, proc: Process, lo: int, hi: int) -> Released:
        """zap_pte_range over [lo, hi): frames nobody maps any longer, and swap
        slots nobody points at, are released."""
        released = Released()
        mm = proc.mm
        ptes = mm.pt.ptes
        vpns = (
            [vpn for vpn in ptes if lo <= vpn < hi]
            if hi - lo > len(ptes)
            else [vpn for vpn in range(lo, hi) if vpn in ptes]
        )
        for vpn in vpns:
            pte = ptes.pop(vpn)
            if pte & pt.PTE_SWAP:
                if self.swap.put(pt.pte_pfn(pte)):
                    released.slots.append(pt.pte_pfn(pte))
            elif pte >> pt.PTE_SHIFT in self.shm_frames and not pte & pt.PTE_ZERO:
                mm.note_rss(-1)  # the segment keeps the frame
            elif not pte & pt.PTE_ZERO:
                mm.note_rss(-1)
                if self._put_frame(pt.pte_pfn(pte), owner(proc.pid, vpn)):
                    released.frames.append(pt.pte_pfn(pte))
                    self._uncharge_frame(pt.pte_pfn(pte), released.uncharged)
        return released

    def _lru_of(self, pfn: int) -> ZoneLru:
        zone = self.layout.zone_of_pfn(pfn)
        assert zone is not None, f"frame {pfn} is in no zone"
        return self.lru[zone.key]

    def _put_frame(self, pfn: int, who: int) -> bool:
        """page_remove_rmap: drops one mapping of a frame; True when it was the last."""
        sharers = self.sharers.get(pfn)
        if sharers is None:
            self._lru_of(pfn).remove(pfn)
            self.data.pop(pfn, None)
            return True
        sharers.remove(who)
        if len(sharers) == 1:  # mapped once again: its owner is its LRU entry
            del self.sharers[pfn]
            self._lru_of(pfn).set_owner(pfn, owner_vpn(sharers[0]))
        return False

    def mapcount(self, pfn: int) -> int:
        sharers = self.sharers.get(pfn)
        return len(sharers) if sharers is not None else 1

    def mprotect(self, proc: Process, addr: int, length: int, prot: int) -> None:
        if self.nommu:
            raise InvalidRequest("mprotect needs an MMU: without one nothing can protect pages")
        if prot & ~v.PROT_MASK:
            raise InvalidRequest(f"mprotect: unknown protection bits {prot & ~v.PROT_MASK:#x}")
        if length == 0 and addr % self.page_size == 0:
            return  # sys_mprotect: nothing to do is not an error
        start, end = self._pages(addr, length, "mprotect")
        if not proc.mm.space.mapped_through(start, end):
            raise InvalidRequest(
                f"mprotect: [{addr:#x}, {addr + length:#x}) is not all mapped (ENOMEM)"
            )

        def charges(area: Vma) -> bool:
            return mprotect_is_charged(
                was_writable=bool(area.prot & v.PROT_WRITE),
                shared=area.shared,
                accounted=area.account,
                writable=bool(prot & v.PROT_WRITE),
            )

        # mprotect_fixup, VMA by VMA: making a private mapping writable
        # charges it (VM_ACCOUNT); nothing is given back the other way.
        sizes = [
            min(a.end, end) - max(a.start, start)
            for a in proc.mm.space.overlapping(start, end)
            if charges(a)
        ]
        self._charge(
            proc.pid,
            sizes,
            "mprotect",
            cap_sys_admin=self.cap_sys_admin(proc),
            total_vm=proc.mm.space.total_pages,
        )
        proc.mm.space.protect(start, end, prot, charges)
        if not prot & v.PROT_WRITE:  # write-protect what is mapped: change_pte_range
            ptes = proc.mm.pt.ptes
            for vpn in range(start, end):
                pte = ptes.get(vpn)
                if pte is not None and pte & pt.PTE_WRITE:
                    ptes[vpn] = pte & ~pt.PTE_WRITE

    def brk(self, proc: Process, new_brk: int) -> tuple[int, Released]:
        """sys_brk: moves the break; on failure it stays where it was."""
        mm = proc.mm
        released = Released()
        if self.nommu:  # a flat binary's heap is fixed when it is loaded
            return mm.brk, released
        if new_brk < (mm.start_brk << self.page_shift):
            return mm.brk, released
        old_end = (mm.brk + self.page_size - 1) >> self.page_shift
        new_end = (new_brk + self.page_size - 1) >> self.page_shift
        if new_end > self.task_pages:
            return mm.brk, released
        if new_end < old_end:
            released = self._unmap(proc, new_end, old_end)
        elif new_end > old_end:
            if not mm.space.is_free(old_end, new_end):
                return mm.brk, released  # would run into another mapping
            # do_brk: VM_ACCOUNT, always. A refusal is sys_brk's: the break
            # stays where it was and is returned, with no error of its own.
            try:
                self._charge(
                    proc.pid,
                    [new_end - old_end],
                    "brk",
                    cap_sys_admin=self.cap_sys_admin(proc),
                    total_vm=mm.space.total_pages,
                )
            except NoMemory:
                return mm.brk, released
            mm.space.insert(
                Vma(old_end, new_end, v.PROT_READ | v.PROT_WRITE, name="[heap]", account=True)
            )
        mm.brk = new_brk
        mm.note_vm()
        return mm.brk, released

    # -- System V shared memory (ipc/shm.c) ---------------------------------------------

    def shmget(self, proc: Process, key: int, size: int, create: bool) -> int:
        if key < 0 or size < 0:
            raise InvalidRequest(f"shmget: key {key} and size {size} must not be negative")
        shmid = self.shm_keys.get(key) if key else None
        if shmid is not None:
            segment = self.shm[shmid]
            if size > segment.pages * self.page_size:
                raise InvalidRequest(
                    f"shmget: segment {key:#x} has {segment.pages} pages, "
                    f"fewer than {size} bytes (EINVAL)"
                )
            return shmid
        if key and not create:
            raise NoSuchSegment(
                f"shmget: no segment with key {key:#x} (ENOENT; ask with create to make one)"
            )
        if not 0 < size <= SHMMAX:
            raise InvalidRequest(f"shmget: size {size} is outside 1..SHMMAX ({SHMMAX})")
        pages = (size + self.page_size - 1) >> self.page_shift
        commit_key = 0
        if not self.nommu:  # newseg's shmem_file_setup: VM_ACCOUNT (no SHM_NORESERVE here)
            commit_key = self._new_commit_key()
            self._charge(
                commit_key,
                [pages],
                "shmget",
                cap_sys_admin=self.cap_sys_admin(proc),
                total_vm=proc.mm.space.total_pages,
            )
        shmid = self._next_shmid
        self._next_shmid += 1
        self.shm[shmid] = ShmSegment(shmid, key, pages, proc.uid, commit_key=commit_key)
        if key:
            self.shm_keys[key] = shmid
        return shmid

    def _segment(self, shmid: int) -> ShmSegment:
        segment = self.shm.get(shmid)
        if segment is None or segment.removed:
            raise NoSuchSegment(f"no shared memory segment with id {shmid} (EINVAL)")
        return segment

    def shmat(self, proc: Process, shmid: int, addr: int, read_only: bool) -> int:
        if self.nommu:
            raise InvalidRequest("shmat: memsim's System V segments need an MMU")
        segment = self._segment(shmid)
        if addr:
            start, end = self._pages(addr, segment.pages << self.page_shift, "shmat")
            if not proc.mm.space.is_free(start, end):
                raise InvalidRequest(
                    f"shmat: [{addr:#x}, {end << self.page_shift:#x}) is already mapped (EINVAL)"
                )
        else:
            found = proc.mm.space.unmapped_area(segment.pages, self.mmap_base, 1)
            if found is None:
                raise NoMemory(f"shmat: no free range of {segment.pages} pages")
            start = found
        prot = v.PROT_READ if read_only else v.PROT_READ | v.PROT_WRITE
        proc.mm.space.insert(
            Vma(
                start,
                start + segment.pages,
                prot,
                shared=True,
                name=f"/SYSV{segment.key:08x} (deleted)",
                shm=shmid,
            )
        )
        proc.mm.note_vm()
        return start << self.page_shift

    def shmdt(self, proc: Process, addr: int) -> Released:
        vma = proc.mm.space.find(addr >> self.page_shift) if addr % self.page_size == 0 else None
        if vma is None or vma.shm is None or vma.start << self.page_shift != addr:
            raise InvalidRequest(f"shmdt: no shared memory segment is attached at {addr:#x}")
        return self._unmap(proc, vma.start, vma.end)

    def shmrm(self, proc: Process, shmid: int) -> Released:
        """shmctl(IPC_RMID): the key goes at once, the segment when nobody has it."""
        segment = self._segment(shmid)
        if proc.uid not in (0, segment.uid) and "CAP_SYS_ADMIN" not in proc.capabilities:
            raise PermissionDenied(f"shmctl: segment {shmid} belongs to uid {segment.uid}")
        segment.removed = True
        self.shm_keys.pop(segment.key, None)
        return self._shm_maybe_destroy(shmid)

    def _shm_maybe_destroy(self, shmid: int) -> Released:
        segment = self.shm.get(shmid)
        if segment is None or not segment.removed:
            return Released()
        if any(a.shm == shmid for p in self.alive() for a in p.mm.space):
            return Released()
        del self.shm[shmid]
        if segment.commit_key:  # shmem_delete_inode's shmem_unacct_size
            self.commit.release(segment.commit_key)
        frames = list(segment.frames.values())
        released = Released(frames=frames)
        for frame in frames:
            del self.shm_frames[frame]
            self.data.pop(frame, None)
            self._uncharge_frame(frame, released.uncharged)
        return released

    # -- no MMU (uClinux) --------------------------------------------------------------

    def nommu_order(self, flags: int, length: int) -> int:
        """The order of the block a no-MMU mmap takes: the length in pages,
        rounded up to a power of two (do_mmap_private's kmalloc)."""
        if flags & v.MAP_FIXED:
            raise InvalidRequest(
                "mmap: MAP_FIXED needs an MMU: without one the address is wherever the block is"
            )
        if length <= 0:
            raise InvalidRequest(f"mmap: length {length} must be positive")
        pages = (length + self.page_size - 1) >> self.page_shift
        order = (pages - 1).bit_length()
        if order >= self.profile.max_order:
            raise NoMemory(
                f"mmap: {length} bytes needs a block of order {order}, above "
                f"MAX_ORDER - 1 = {self.profile.max_order - 1}"
            )
        return order

    def map_block(
        self, proc: Process, pfn: int, order: int, length: int, prot: int, flags: int
    ) -> int:
        """Maps a block at its own physical address, present at once."""
        pages = (length + self.page_size - 1) >> self.page_shift
        proc.mm.space.insert(
            Vma(pfn, pfn + pages, prot, shared=bool(flags & v.MAP_SHARED), block=True)
        )
        proc.mm.blocks[pfn] = (pfn, order)
        proc.mm.note_rss(1 << order)
        proc.mm.note_vm()
        return pfn << self.page_shift

    def unmap_block(self, proc: Process, addr: int, length: int) -> Released:
        start, end = self._pages(addr, length, "munmap")
        vma = proc.mm.space.find(start)
        if vma is None or start not in proc.mm.blocks or vma.start != start or vma.end != end:
            raise InvalidRequest(
                f"munmap: [{addr:#x}, {addr + length:#x}) is not one whole "
                "mapping; without an MMU only whole mappings go"
            )
        return self._drop_block(proc, start)

    def _drop_block(self, proc: Process, start: int) -> Released:
        pfn, order = proc.mm.blocks.pop(start)
        proc.mm.space.unmap(start, start + 1)
        proc.mm.space.unmap(start, start + (1 << order))
        proc.mm.note_rss(-(1 << order))
        for frame in range(pfn, pfn + (1 << order)):
            self.data.pop(frame, None)
        return Released(blocks=[(pfn, order)])

    def check_nommu_access(self, proc: Process, addr: int, length: int) -> None:
        """Nothing traps without an MMU: any process may touch any mapped memory,
        its own or not. Memory nobody mapped memsim refuses rather than invent."""
        if length <= 0:
            raise InvalidRequest(f"length {length} must be positive")
        start = addr >> self.page_shift
        end = ((addr + length - 1) >> self.page_shift) + 1
        for other in [proc, *self.alive()]:
            if other.mm.space.mapped_through(start, end):
                return
        raise InvalidRequest(
            f"[{addr:#x}, {addr + length:#x}) is in no process's mapping "
            "(no MMU: nothing would trap, so memsim refuses)"
        )

    def _frame(self, proc: Process, vpn: int) -> int:
        return vpn if self.nommu else pt.pte_pfn(proc.mm.pt.ptes[vpn])

    # -- faults and page contents -------------------------------------------------------

    def plan_access(self, proc: Process, addr: int, length: int, write: bool) -> AccessPlan:
        """handle_mm_fault over a range, without changing anything."""
        if length <= 0:
            raise InvalidRequest(f"length {length} must be positive")
        if length > MAX_ACCESS_BYTES:
            raise InvalidRequest(f"length {length} is more than {MAX_ACCESS_BYTES} in one call")
        # Above TASK_SIZE there is no VMA: the access faults like any other.
        plan = AccessPlan(write)
        mm = proc.mm
        ptes = mm.pt.ptes
        start = addr >> self.page_shift
        end = (addr + length - 1 >> self.page_shift) + 1
        vma: Vma | None = None
        new_vpns: list[int] = []
        for vpn in range(start, end):
            if vma is None or not vma.start <= vpn < vma.end:
                vma = mm.space.find(vpn)
            at = max(addr, vpn << self.page_shift)
            if vma is None:
                plan.segfault = Segfault(at, "no mapping at this address")
                break
            if write and not vma.prot & v.PROT_WRITE:
                plan.segfault = Segfault(at, f"write to a {vma.perms} mapping")
                break
            if not write and not vma.prot & (v.PROT_READ | v.PROT_WRITE):
                plan.segfault = Segfault(at, f"read of a {vma.perms} mapping")
                break
            pte = ptes.get(vpn)
            if pte is None and vma.shm is not None:  # shmem_fault: the segment's page
                in_segment = vpn - vma.start + vma.pgoff in self.shm[vma.shm].frames
                plan.pages.append((vpn, SHM if in_segment else SHM_NEW))
                new_vpns.append(vpn)
            elif pte is None:
                plan.pages.append((vpn, NEW if write else ZERO))
                new_vpns.append(vpn)
            elif pte & pt.PTE_SWAP:
                plan.pages.append((vpn, SWAPIN))  # a major fault: do_swap_page
            elif not write or pte & pt.PTE_WRITE:
                plan.pages.append((vpn, HIT))
            elif pte & pt.PTE_ZERO or (self.mapcount(pt.pte_pfn(pte)) > 1 and not vma.shared):
                plan.pages.append((vpn, COW))
            else:
                plan.pages.append((vpn, REUSE))
        plan.tables = mm.pt.missing_tables(new_vpns)
        return plan

    def apply_access(
        self,
        proc: Process,
        plan: AccessPlan,
        frames: list[int],
        tables: list[int],
        swapped_in: dict[int, bytes | None] | None = None,
        memcg: str | None = None,
    ) -> Released:
        """Carries out a plan with frames and table pages from the zone and the
        bytes of the pages it swaps in; gives back what it did not need.
        memcg: the group the frames were charged to (None: none were), which
        each new frame is recorded as belonging to; those not needed are
        uncharged again."""
        mm = proc.mm
        ptes = mm.pt.ptes
        spare = list(reversed(frames))
        released = Released()
        for key, pfn in zip(plan.tables, tables, strict=True):
            mm.pt.tables[key] = pfn
        dirty = pt.PTE_DIRTY if plan.write else 0
        for vpn, kind in plan.pages:
            if kind == HIT:
                ptes[vpn] |= pt.PTE_ACCESSED | dirty
                continue
            if kind == ZERO:
                ptes[vpn] = pt.PTE_PRESENT | pt.PTE_ZERO | pt.PTE_ACCESSED
                continue
            if kind in (SHM, SHM_NEW):
                area = mm.space.find(vpn)
                assert area is not None
                assert area.shm is not None
                segment = self.shm[area.shm]
                index = vpn - area.start + area.pgoff
                if index not in segment.frames:  # SHM_NEW (or SHM gone meanwhile)
                    frame = spare.pop()
                    segment.frames[index] = frame
                    self.shm_frames[frame] = segment.shmid
                    self._charge_frame(frame, memcg, lru=False)  # shmem: cache charge
                writable = pt.PTE_WRITE if area.prot & v.PROT_WRITE else 0
                ptes[vpn] = pt.make_pte(
                    segment.frames[index], pt.PTE_PRESENT | pt.PTE_ACCESSED | writable
                )
                mm.note_rss(1)
                continue
            old = ptes.get(vpn)
            if (
                kind == COW
                and old is not None
                and not old & pt.PTE_ZERO
                and self.mapcount(pt.pte_pfn(old)) == 1
            ):
                kind = REUSE  # the other mappers went away meanwhile
            if kind == REUSE:
                assert old is not None
                ptes[vpn] = old | pt.PTE_WRITE | pt.PTE_ACCESSED | pt.PTE_DIRTY
                continue
            pfn = spare.pop()
            flags = pt.PTE_PRESENT | pt.PTE_WRITE | pt.PTE_ACCESSED | pt.PTE_DIRTY
            if kind == SWAPIN:
                assert old is not None
                assert swapped_in is not None
                contents = swapped_in[vpn]
                if contents is not None:
                    self.data[pfn] = bytearray(contents)
                slot = pt.pte_pfn(old)
                if self.swap.put(slot):
                    released.slots.append(slot)
                if not plan.write:
                    flags &= ~pt.PTE_DIRTY
                self.swap_events["pswpin"] += 1
            else:
                if kind == COW and old is not None and not old & pt.PTE_ZERO:
                    source = self.data.get(pt.pte_pfn(old))
                    if source is not None:
                        self.data[pfn] = bytearray(source)
                    mm.note_rss(-1)  # the shared frame is no longer this page's
                    self._put_frame(pt.pte_pfn(old), owner(proc.pid, vpn))
            mm.note_rss(1)
            self._lru_of(pfn).add_active(pfn, vpn)  # the pte's own key object: no copy
            self._charge_frame(pfn, memcg, lru=True)
            ptes[vpn] = pt.make_pte(pfn, flags)
        minor, major = plan.faults
        proc.minor_faults += minor
        proc.major_faults += major
        self.faults["minor"] += minor
        self.faults["major"] += major
        # Simulated time: a millisecond a call plus one per 256 pages faulted,
        # on the process's clock and the machine's, so that runs replay alike.
        work = len(plan.pages) // 256 + (1 if plan.pages else 0)
        proc.cpu_time_ms += work
        self.clock_ms += work
        released.frames += spare
        if memcg is not None and spare:
            released.uncharged[memcg] = released.uncharged.get(memcg, 0) + len(spare)
        return released

    def write_bytes(self, proc: Process, addr: int, payload: bytes) -> None:
        """Copies bytes into pages that apply_access made present and writable."""
        offset = 0
        while offset < len(payload):
            vaddr = addr + offset
            vpn, in_page = vaddr >> self.page_shift, vaddr & (self.page_size - 1)
            chunk = min(len(payload) - offset, self.page_size - in_page)
            pfn = self._frame(proc, vpn)
            page = self.data.get(pfn)
            if page is None:
                page = self.data[pfn] = bytearray(self.page_size)
            page[in_page : in_page + chunk] = payload[offset : offset + chunk]
            offset += chunk

    def read_bytes(self, proc: Process, addr: int, length: int) -> bytes:
        ptes = proc.mm.pt.ptes
        out = bytearray()
        offset = 0
        while offset < length:
            vaddr = addr + offset
            vpn, in_page = vaddr >> self.page_shift, vaddr & (self.page_size - 1)
            chunk = min(length - offset, self.page_size - in_page)
            if self.nommu:
                page = self.data.get(vpn)
            else:
                pte = ptes[vpn]
                page = None if pte & pt.PTE_ZERO else self.data.get(pt.pte_pfn(pte))
            out += page[in_page : in_page + chunk] if page is not None else bytes(chunk)
            offset += chunk
        return bytes(out)

    def note_protection_fault(self, proc: Process, fault: Segfault) -> None:
        self.faults["protection"] += 1
        proc.fault_address = fault.address

    # -- fork, exit, kill ------------------------------------------------------------

    def plan_fork(self, parent: Process) -> int:
        """Table pages the child needs: as many as the parent has."""
        if self.nommu:
            raise InvalidRequest(
                "fork needs an MMU to copy an address space: without one, "
                "create the process anew (vfork and exec)"
            )
        return len(parent.mm.pt.tables)

    def fork(self, parent: Process, name: str | None, tables: list[int]) -> Process:
        """copy_mm: the child shares every frame; private writable ones become
        copy-on-write in both (copy_one_pte). dup_mmap charges the child for
        every VM_ACCOUNT VMA it copies, one security_vm_enough_memory each
        (with the parent's total_vm): a refusal creates nothing."""
        args = (
            name or parent.name,
            parent.uid,
            parent.pid,
            parent.nice,
            set(parent.capabilities),
            list(parent.nodes),
        )
        self._check_new(*args)
        pmm = parent.mm
        self._charge(
            self.next_pid,
            [a.pages for a in pmm.space if a.account],
            "fork",
            cap_sys_admin=self.cap_sys_admin(parent),
            total_vm=pmm.space.total_pages,
        )
        child = self.create_process(*args, tables[:1], charge=False)
        child.cgroup = parent.cgroup  # the mm's mem_cgroup is the parent's
        child.mempolicy = parent.mempolicy  # copy_process: mpol_copy
        mm = child.mm
        mm.space = AddressSpace()
        for area in pmm.space:
            mm.space.insert(area)
        for obj in {a.anon_shmem for a in pmm.space if a.anon_shmem}:
            self.shmem_users[obj] += 1
        mm.start_brk, mm.brk = pmm.start_brk, pmm.brk
        for key, pfn in zip([k for k in pmm.pt.tables if k != (0, 0)], tables[1:], strict=True):
            mm.pt.tables[key] = pfn
        pptes, cptes = pmm.pt.ptes, mm.pt.ptes
        vma: Vma | None = None
        for vpn, pte in pptes.items():
            if vma is None or not vma.start <= vpn < vma.end:
                vma = pmm.space.find(vpn)
            assert vma is not None
            if pte & pt.PTE_SWAP:
                self.swap.dup(pt.pte_pfn(pte))  # both point at the same slot
                cptes[vpn] = pte
                continue
            if not vma.shared:
                pte &= ~pt.PTE_WRITE
                pptes[vpn] = pte
            cptes[vpn] = pte
            if pte >> pt.PTE_SHIFT in self.shm_frames and not pte & pt.PTE_ZERO:
                mm.note_rss(1)  # the segment's frame: mapped once more
            elif not pte & pt.PTE_ZERO:
                pfn = pt.pte_pfn(pte)
                sharers = self.sharers.setdefault(pfn, [owner(parent.pid, vpn)])
                sharers.append(owner(child.pid, vpn))
                mm.note_rss(1)
        mm.note_vm()
        return child

    def exit(self, proc: Process, signal: int = 0) -> Released:
        """exit_mm: every mapping and table page goes; the record stays, dead."""
        mm = proc.mm
        released = Released()
        for start in list(mm.blocks):
            released.extend(self._drop_block(proc, start))
        segments = {a.shm for a in mm.space if a.shm is not None}
        objects = {a.anon_shmem for a in mm.space if a.anon_shmem}
        for vma in list(mm.space):
            released.extend(self._drop_ptes(proc, vma.start, vma.end))
        mm.space = AddressSpace()
        # exit_mmap: every VM_ACCOUNT page goes out of Committed_AS at once.
        self.commit.release(proc.pid)
        self._release_shmem(objects, set())
        released.tables += list(mm.pt.tables.values())
        mm.pt.tables.clear()
        proc.alive = False
        for shmid in segments:
            released.extend(self._shm_maybe_destroy(shmid))
        proc.exit_signal = signal
        for pid in proc.children:  # orphans go to init
            child = self.processes.get(pid)
            if child is not None and child.alive:
                child.ppid = INIT_PID
        return released

    def kill(self, proc: Process, signal: int) -> Released:
        if signal not in (SIGKILL, SIGSEGV):
            raise InvalidRequest(f"signal {signal}: memsim delivers SIGKILL (9) and SIGSEGV (11)")
        if proc.pid == INIT_PID:
            raise InvalidRequest("init (pid 1) cannot be killed")
        return self.exit(proc, signal)

    # -- reclaim ---------------------------------------------------------------------

    def _mapper(self, pfn: int, vpn: int) -> Process | None:
        """The process whose pte at vpn maps the frame (the reverse map of a
        page mapped once: its LRU entry keeps the page, not the process, which
        saves an integer for every resident page)."""
        for proc in self.processes.values():
            if proc.alive:
                pte = proc.mm.pt.ptes.get(vpn)
                if (
                    pte is not None
                    and pte >> pt.PTE_SHIFT == pfn
                    and pte & pt.PTE_PRESENT
                    and not pte & (pt.PTE_SWAP | pt.PTE_ZERO)
                ):
                    return proc
        return None

    @staticmethod
    def _test_and_clear_young(proc: Process, vpn: int) -> bool:
        """page_referenced for a page mapped once: its pte's accessed bit."""
        pte = proc.mm.pt.ptes[vpn]
        if pte & pt.PTE_ACCESSED:
            proc.mm.pt.ptes[vpn] = pte & ~pt.PTE_ACCESSED
            return True
        return False

    def shrink_zone(
        self,
        zone: tuple[int, str],
        nr_to_reclaim: int,
        priority: int,
        swappiness: int,
        pinned: dict[int, tuple[int, int]],
    ) -> Reclaimed:
        """shrink_zone of 2.6.24's mm/vmscan.c for anonymous pages.

        shrink_active_list moves old, unreferenced pages to the inactive list,
        but mapped pages only when swap_tendency says so: half the share of
        memory that is mapped, plus distress (100 >> priority), plus
        vm.swappiness, reaching 100. shrink_inactive_list then gives a
        referenced page a second chance (back to active) and swaps the rest
        out. Pages a fault in flight has planned for (pinned: pid -> page range)
        and pages mapped more than once are passed over.
        """
        result = Reclaimed()
        lru = self.lru.get(zone)
        if lru is None or not self.swap.free:
            return result  # no swap: anonymous pages cannot be reclaimed
        mapped = sum(len(z.active) + len(z.inactive) for z in self.lru.values())
        total = sum(z.managed for z in self.layout.zones.values()) or 1
        distress = 100 >> min(priority, DEF_PRIORITY)
        reclaim_mapped = mapped * 100 // total // 2 + distress + swappiness >= 100
        scan = max(nr_to_reclaim, len(lru.active) >> priority)
        for pfn, vpn in list(lru.active.items())[:scan]:
            result.scanned += 1
            self._shrink_active_page(lru, pfn, vpn, reclaim_mapped, pinned)
        budget = max(nr_to_reclaim, len(lru.inactive) >> priority)
        for pfn, vpn in list(lru.inactive.items())[:budget]:
            if len(result.frames) >= nr_to_reclaim:
                break
            result.scanned += 1
            if self._shrink_inactive_page(lru, pfn, vpn, pinned, result) == "full":
                break
        return result

    def shrink_memcg(
        self,
        group: str,
        nr_to_reclaim: int,
        priority: int,
        swappiness: int,
        pinned: dict[int, tuple[int, int]],
    ) -> Reclaimed:
        """shrink_zone of try_to_free_mem_cgroup_pages (2.6.25): the same
        two lists, but only the pages charged to group
        (mem_cgroup_isolate_pages walks the group's own LRU), in every zone.
        Every page of a group is mapped anonymous memory, so
        mem_cgroup_calc_mapped_ratio is 100: mapped pages are reclaimed
        when 50 + distress + swappiness reaches 100."""
        result = Reclaimed()
        pages = self.memcg_lru.get(group)
        if not pages or not self.swap.free:
            return result
        distress = 100 >> min(priority, DEF_PRIORITY)
        reclaim_mapped = 50 + distress + swappiness >= 100
        active: list[tuple[int, ZoneLru]] = []
        inactive: list[tuple[int, ZoneLru]] = []
        for pfn in pages:
            lru = self._lru_of(pfn)
            if pfn in lru.active:
                active.append((pfn, lru))
            elif pfn in lru.inactive:
                inactive.append((pfn, lru))
        scan = max(nr_to_reclaim, len(active) >> priority)
        for pfn, lru in active[:scan]:
            result.scanned += 1
            if not self._shrink_active_page(lru, pfn, lru.active[pfn], reclaim_mapped, pinned):
                del pages[pfn]  # rotated: the newest end of the group's list too
                pages[pfn] = None
            else:
                inactive.append((pfn, lru))
        budget = max(nr_to_reclaim, len(inactive) >> priority)
        for pfn, lru in inactive[:budget]:
            if len(result.frames) >= nr_to_reclaim:
                break
            vpn = lru.inactive.get(pfn)
            if vpn is None:
                continue
            result.scanned += 1
            outcome = self._shrink_inactive_page(lru, pfn, vpn, pinned, result)
            if outcome == "activated" and pfn in pages:
                del pages[pfn]
                pages[pfn] = None
            elif outcome == "full":
                break
        return result

    def _shrink_active_page(
        self,
        lru: ZoneLru,
        pfn: int,
        vpn: int,
        reclaim_mapped: bool,
        pinned: dict[int, tuple[int, int]],
    ) -> bool:
        """shrink_active_list for one page: True if it went to the inactive
        list, False if it was rotated to the newest end of the active one."""
        del lru.active[pfn]
        proc = None if pfn in self.sharers else self._mapper(pfn, vpn)
        if (
            proc is None
            or self._pinned(proc.pid, vpn, pinned)
            or not reclaim_mapped
            or self._test_and_clear_young(proc, vpn)
        ):
            lru.active[pfn] = vpn  # rotate: the newest end of the list
            return False
        lru.inactive[pfn] = vpn
        return True

    def _shrink_inactive_page(
        self,
        lru: ZoneLru,
        pfn: int,
        vpn: int,
        pinned: dict[int, tuple[int, int]],
        result: Reclaimed,
    ) -> str:
        """shrink_page_list for one page: "skipped" (left where it is),
        "activated" (referenced: a second chance), "full" (no swap slot:
        activated, and reclaim stops) or "out" (swapped out, its frame and
        its charge in result)."""
        proc = None if pfn in self.sharers else self._mapper(pfn, vpn)
        if proc is None or self._pinned(proc.pid, vpn, pinned):
            return "skipped"
        del lru.inactive[pfn]
        if self._test_and_clear_young(proc, vpn):
            lru.active[pfn] = vpn  # second chance
            return "activated"
        slot = self.swap.get()
        if slot is None:
            lru.active[pfn] = vpn  # swap is full: activate_locked
            return "full"
        proc.mm.pt.ptes[vpn] = pt.make_pte(slot, pt.PTE_SWAP)
        proc.mm.note_rss(-1)
        result.swapped.append((slot, self.data.pop(pfn, None)))
        result.frames.append(pfn)
        self._uncharge_frame(pfn, result.uncharged)  # the swap cache's page goes with it
        self.swap_events["pswpout"] += 1
        return "out"

    @staticmethod
    def _pinned(pid: int, vpn: int, pinned: dict[int, tuple[int, int]]) -> bool:
        span = pinned.get(pid)
        return span is not None and span[0] <= vpn < span[1]

    def lru_counts(self) -> tuple[int, int]:
        return (
            sum(len(z.active) for z in self.lru.values()),
            sum(len(z.inactive) for z in self.lru.values()),
        )

    def zone_pages(self) -> dict[tuple[int, str], dict[str, int]]:
        """Frames the MMU core holds, by the zone they came from and what they
        hold: "anon" (the frames on the zone's LRU lists, shared anonymous
        mappings' included, and without an MMU the processes' blocks),
        "page_table" (the live processes' table pages) and "shmem" (System V
        segments' frames). Every zone of the machine is listed."""
        pages = {key: dict.fromkeys(MMU_ZONE_KINDS, 0) for key in self.layout.zones}
        for key, lru in self.lru.items():
            pages[key]["anon"] = len(lru.active) + len(lru.inactive)

        def add(pfn: int, kind: str, count: int = 1) -> None:
            zone = self.layout.zone_of_pfn(pfn)
            if zone is not None:
                pages[zone.key][kind] += count

        for proc in self.alive():
            for pfn, order in proc.mm.blocks.values():
                add(pfn, "anon", 1 << order)
            for pfn in proc.mm.pt.tables.values():
                add(pfn, "page_table")
        for pfn in self.shm_frames:
            add(pfn, "shmem")
        return pages

    def swap_pages(self, proc: Process) -> int:
        """VmSwap: the process's ptes that point into swap."""
        return sum(1 for pte in proc.mm.pt.ptes.values() if pte & pt.PTE_SWAP)

    def set_times(self, proc: Process, cpu_time_ms: int | None, start_time_ms: int | None) -> None:
        if start_time_ms is not None and start_time_ms > self.clock_ms:
            raise InvalidRequest(
                f"start time {start_time_ms} ms is after now "
                f"({self.clock_ms} ms on the machine's clock)"
            )
        if cpu_time_ms is not None:
            proc.cpu_time_ms = cpu_time_ms
        if start_time_ms is not None:
            proc.start_time_ms = start_time_ms

    def set_oom_adj(self, proc: Process, oom_adj: int, oom_score_adj: int) -> None:
        """Stores them; whether the writer may is the policy service's check."""
        if not OOM_DISABLE <= oom_adj <= OOM_ADJUST_MAX:
            raise InvalidRequest(f"oom_adj {oom_adj} is outside {OOM_DISABLE}..{OOM_ADJUST_MAX}")
        if not -OOM_SCORE_ADJ_MAX <= oom_score_adj <= OOM_SCORE_ADJ_MAX:
            raise InvalidRequest(
                f"oom_score_adj {oom_score_adj} is outside "
                f"{-OOM_SCORE_ADJ_MAX}..{OOM_SCORE_ADJ_MAX}"
            )
        proc.oom_adj, proc.oom_score_adj = oom_adj, oom_score_adj

    def set_mempolicy(self, proc: Process, mode: str, nodes: list[int]) -> None:
        """sys_set_mempolicy of 2.6.24, its checks in the kernel's order, each
        EINVAL, and nothing changed on a refusal: the mode (MPOL_MAX; memsim
        models MPOL_DEFAULT and MPOL_BIND), the nodemask's nodes (get_nodes:
        beyond the machine), contextualize_policy (a subset of the task's
        cpuset, its mems_allowed), mpol_check_policy (MPOL_DEFAULT takes no
        nodes, MPOL_BIND at least one, every one with memory)."""
        if mode not in MPOL_MODES:
            raise InvalidRequest(
                f"unknown mempolicy mode {mode!r}: memsim has {', '.join(MPOL_MODES)} "
                "(MPOL_PREFERRED and MPOL_INTERLEAVE are not modelled)"
            )
        count = self.profile.nodes
        bad = sorted({n for n in nodes if not 0 <= n < count})
        if bad:
            raise InvalidRequest(
                f"nodes {bad} are outside 0..{count - 1}: the machine has {count} node(s)"
            )
        wanted = set(nodes)
        outside = sorted(wanted - set(proc.nodes))
        if outside:
            raise InvalidRequest(
                f"nodes {outside} are outside the cpuset of pid {proc.pid} "
                f"(mems_allowed {list(proc.nodes)})"
            )
        if mode == MPOL_DEFAULT and wanted:
            raise InvalidRequest("MPOL_DEFAULT takes no nodes (the nodemask must be empty)")
        if mode == MPOL_BIND and not wanted:
            raise InvalidRequest("MPOL_BIND needs at least one node (the nodemask is empty)")
        empty = sorted(wanted - memory_nodes(self.layout))
        if empty:
            raise InvalidRequest(f"nodes {empty} have no memory (not in N_HIGH_MEMORY)")
        proc.mempolicy = Mempolicy(mode, tuple(sorted(wanted)))

    # -- memory cgroups (2.6.25 mm/memcontrol.c) ---------------------------------------

    def set_cgroup(self, proc: Process, name: str) -> None:
        """mem_cgroup_move_task: the mm's group changes; the charges already
        made stay with the group that made them (2.6.25 moves none). Whether
        the group exists is the policy service's check."""
        if not name:
            raise InvalidRequest("memory cgroup name is empty (want /, /a or /a/b)")
        if not valid_cgroup_name(name):
            raise InvalidRequest(f"bad memory cgroup name {name!r}: want an absolute path /a/b")
        proc.cgroup = name

    def _charge_frame(self, pfn: int, group: str | None, *, lru: bool) -> None:
        """page_cgroup's mem_cgroup: the frame is group's (lru: an anonymous
        page on the group's LRU, which its reclaim scans)."""
        if group is None:
            return
        self.memcg_charged[pfn] = group
        if lru:
            self.memcg_lru.setdefault(group, {})[pfn] = None

    def _uncharge_frame(self, pfn: int, into: dict[str, int]) -> None:
        """mem_cgroup_uncharge_page of a frame's last mapping: counted in
        `into` for the service to tell the policy."""
        group = self.memcg_charged.pop(pfn, None)
        if group is None:
            return
        into[group] = into.get(group, 0) + 1
        pages = self.memcg_lru.get(group)
        if pages is not None:
            pages.pop(pfn, None)
            if not pages:
                del self.memcg_lru[group]

    def memcg_pages(self, group: str) -> int:
        """Frames charged to group that are on its LRU (resident anonymous pages)."""
        return len(self.memcg_lru.get(group, ()))

    def alive(self) -> list[Process]:
        return [p for p in self.processes.values() if p.alive]
