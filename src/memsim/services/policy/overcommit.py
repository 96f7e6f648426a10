"""Commit accounting: __vm_enough_memory as 2.6.24's mm/mmap.c has it (the
caller's CAP_SYS_ADMIN chosen by security/commoncap.c's cap_vm_enough_memory)
and as 4.19's mm/util.c has it (admin_reserve_kbytes, user_reserve_kbytes),
CommitLimit and Committed_AS as /proc/meminfo prints them, which mappings
2.6.24 charges, and a ledger of Committed_AS by pid.

All counts are pages. The kernel charges first (vm_acct_memory) and checks
after, so in mode 2 a request fits only while Committed_AS + pages stays
strictly below the bound: with a bound of exactly CommitLimit (root, a
caller under 32 pages of total_vm), a mapping of CommitLimit - Committed_AS
pages is refused and one page less is granted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from memsim.services.policy.errors import BadUncharge, BadValue
from memsim.services.policy.sysctl import (
    OVERCOMMIT_ALWAYS,
    OVERCOMMIT_GUESS,
    OVERCOMMIT_NEVER,
    Sysctls,
)


@dataclass(frozen=True)
class MemState:
    """The counters __vm_enough_memory reads, in pages."""

    totalram_pages: int
    total_swap_pages: int = 0
    nr_free_pages: int = 0
    # NR_FILE_PAGES: the page cache, swap cache included.
    nr_file_pages: int = 0
    # nr_swap_pages: free swap.
    nr_swap_pages: int = 0
    nr_slab_reclaimable: int = 0
    # totalreserve_pages: each zone's highest lowmem_reserve plus its high
    # watermark (calculate_totalreserve_pages).
    totalreserve_pages: int = 0
    hugetlb_pages: int = 0
    # NR_SHMEM: read by 4.19 only.
    nr_shmem: int = 0
    page_size: int = 4096

    def kb_to_pages(self, kbytes: int) -> int:
        """kbytes >> (PAGE_SHIFT - 10)."""
        return kbytes // (self.page_size // 1024)


@dataclass(frozen=True)
class CommitCheck:
    """The verdict on one request, and the figures behind it."""

    ok: bool
    pages: int
    mode: int
    committed: int  # Committed_AS before the request
    # What Committed_AS + pages (mode 2) or the request (mode 0) was held to;
    # None in mode 1.
    bound: int | None
    reason: str


def _ratio_pages(mem: MemState, ratio: int, kbytes: int) -> int:
    """RAM that mode 2 lets be committed, before swap: overcommit_kbytes when
    set, else (RAM - hugetlb) * overcommit_ratio / 100."""
    if kbytes:
        return mem.kb_to_pages(kbytes)
    return (mem.totalram_pages - mem.hugetlb_pages) * ratio // 100


def vm_commit_limit(mem: MemState, ratio: int, kbytes: int = 0) -> int:
    """CommitLimit in pages (4.19 vm_commit_limit; 2.6.24's meminfo computes
    the same with no overcommit_kbytes)."""
    return _ratio_pages(mem, ratio, kbytes) + mem.total_swap_pages


def meminfo_lines(limit_pages: int, committed_pages: int, page_size: int) -> list[str]:
    """The two lines of /proc/meminfo, as 2.6.24's meminfo_read_proc."""
    kb = page_size // 1024
    return [
        f"CommitLimit:  {limit_pages * kb:8d} kB",
        f"Committed_AS: {max(committed_pages, 0) * kb:8d} kB",
    ]


def vm_enough_memory_2_6_24(
    pages: int,
    committed: int,
    mem: MemState,
    *,
    overcommit_memory: int,
    overcommit_ratio: int,
    overcommit_kbytes: int = 0,
    cap_sys_admin: bool,
    total_vm: int,
) -> CommitCheck:
    """2.6.24's __vm_enough_memory: may `pages` more be committed on top of
    `committed`? total_vm is the calling process's (mm->total_vm), in pages,
    before the request. The "last 3% for root" is 1/32."""
    if overcommit_memory == OVERCOMMIT_ALWAYS:
        return CommitCheck(True, pages, OVERCOMMIT_ALWAYS, committed, None, "always overcommit")
    if overcommit_memory == OVERCOMMIT_GUESS:
        free = mem.nr_file_pages + mem.nr_swap_pages + mem.nr_slab_reclaimable
        if not cap_sys_admin:
            free -= free // 32
        if free > pages:
            return CommitCheck(True, pages, 0, committed, free, "page cache, swap and slab")
        # nr_free_pages() is the expensive part: only when about to fail.
        n = mem.nr_free_pages
        if n <= mem.totalreserve_pages:
            return CommitCheck(False, pages, 0, committed, free, "free pages all reserved")
        n -= mem.totalreserve_pages
        if not cap_sys_admin:
            n -= n // 32
        free += n
        if free > pages:
            return CommitCheck(True, pages, 0, committed, free, "with free pages")
        return CommitCheck(False, pages, 0, committed, free, "heuristic: not enough memory")
    allowed = _ratio_pages(mem, overcommit_ratio, overcommit_kbytes)
    if not cap_sys_admin:
        allowed -= allowed // 32
    allowed += mem.total_swap_pages
    # Leave 3% of the caller's size for other processes.
    allowed -= total_vm // 32
    ok = committed + pages < allowed
    return CommitCheck(ok, pages, OVERCOMMIT_NEVER, committed, allowed, "strict")


def vm_enough_memory_modern(
    pages: int,
    committed: int,
    mem: MemState,
    *,
    overcommit_memory: int,
    overcommit_ratio: int,
    overcommit_kbytes: int,
    admin_reserve_kbytes: int,
    user_reserve_kbytes: int,
    cap_sys_admin: bool,
    total_vm: int | None,
) -> CommitCheck:
    """4.19's __vm_enough_memory: the 1/32s become admin_reserve_kbytes for
    callers without CAP_SYS_ADMIN and, in mode 2, min(total_vm / 32,
    user_reserve_kbytes). total_vm None: no mm (a kernel caller)."""
    if overcommit_memory == OVERCOMMIT_ALWAYS:
        return CommitCheck(True, pages, OVERCOMMIT_ALWAYS, committed, None, "always overcommit")
    admin_reserve = 0 if cap_sys_admin else mem.kb_to_pages(admin_reserve_kbytes)
    if overcommit_memory == OVERCOMMIT_GUESS:
        free = mem.nr_free_pages + mem.nr_file_pages - mem.nr_shmem
        free += mem.nr_swap_pages + mem.nr_slab_reclaimable
        if free <= mem.totalreserve_pages:
            return CommitCheck(False, pages, 0, committed, free, "free pages all reserved")
        free -= mem.totalreserve_pages + admin_reserve
        ok = free > pages
        return CommitCheck(ok, pages, 0, committed, free, "heuristic")
    allowed = vm_commit_limit(mem, overcommit_ratio, overcommit_kbytes) - admin_reserve
    if total_vm is not None:
        allowed -= min(total_vm // 32, mem.kb_to_pages(user_reserve_kbytes))
    # percpu_counter_read_positive of the counter already charged.
    ok = max(committed + pages, 0) < allowed
    return CommitCheck(ok, pages, OVERCOMMIT_NEVER, committed, allowed, "strict")


def vm_enough_memory(
    pages: int,
    committed: int,
    mem: MemState,
    sysctls: Sysctls,
    *,
    cap_sys_admin: bool,
    total_vm: int,
) -> CommitCheck:
    """The check vm.oom_policy selects, with the current sysctls."""
    if pages < 0:
        raise BadValue(f"cannot commit {pages} pages")
    if sysctls.modern:
        return vm_enough_memory_modern(
            pages,
            committed,
            mem,
            overcommit_memory=sysctls.overcommit_memory,
            overcommit_ratio=sysctls.overcommit_ratio,
            overcommit_kbytes=sysctls.overcommit_kbytes,
            admin_reserve_kbytes=sysctls.admin_reserve_kbytes,
            user_reserve_kbytes=sysctls.user_reserve_kbytes,
            cap_sys_admin=cap_sys_admin,
            total_vm=total_vm,
        )
    return vm_enough_memory_2_6_24(
        pages,
        committed,
        mem,
        overcommit_memory=sysctls.overcommit_memory,
        overcommit_ratio=sysctls.overcommit_ratio,
        overcommit_kbytes=sysctls.overcommit_kbytes,
        cap_sys_admin=cap_sys_admin,
        total_vm=total_vm,
    )


def mmap_is_charged(
    *, writable: bool, shared: bool, anonymous: bool, noreserve: bool, overcommit_memory: int
) -> bool:
    """Does 2.6.24 charge this new mapping? mmap_region charges private
    writable mappings itself, and shared anonymous ones through
    shmem_zero_setup's shmem_acct_size; MAP_NORESERVE is honoured only when
    overcommit is allowed (mode != 2). Shared file mappings and private
    read-only ones are not charged (an mprotect to writable is: see
    mprotect_is_charged). brk, stack growth and fork's copies of charged
    mappings are always charged."""
    if noreserve and overcommit_memory != OVERCOMMIT_NEVER:
        return False
    if shared:
        return anonymous
    return writable


def mprotect_is_charged(
    *, was_writable: bool, shared: bool, accounted: bool, writable: bool
) -> bool:
    """2.6.24 mprotect_fixup: making a private mapping writable charges it
    unless it was already charged, writable or shared."""
    return writable and not (accounted or was_writable or shared)


@dataclass
class CommitLedger:
    """Committed_AS (vm_committed_space) and who holds how much of it, so
    that an exit gives back exactly what the process was charged."""

    committed: int = 0
    by_pid: dict[int, int] = field(default_factory=dict)

    def check_and_charge(
        self,
        pid: int,
        pages: int,
        mem: MemState,
        sysctls: Sysctls,
        *,
        cap_sys_admin: bool,
        total_vm: int,
    ) -> CommitCheck:
        """security_vm_enough_memory: charges pid on success, changes
        nothing on refusal."""
        check = vm_enough_memory(
            pages, self.committed, mem, sysctls, cap_sys_admin=cap_sys_admin, total_vm=total_vm
        )
        if check.ok:
            self.charge(pid, pages)
        return check

    def charge(self, pid: int, pages: int) -> None:
        """vm_acct_memory with no check (state replayed from another service)."""
        if pages < 0:
            raise BadValue(f"cannot charge {pages} pages")
        self.committed += pages
        self.by_pid[pid] = self.by_pid.get(pid, 0) + pages

    def uncharge(self, pid: int, pages: int) -> None:
        """vm_unacct_memory for munmap, a shrinking brk, a failed mapping."""
        held = self.by_pid.get(pid, 0)
        if pages < 0 or pages > held:
            raise BadUncharge(f"pid {pid} holds {held} committed pages, cannot release {pages}")
        self.committed -= pages
        if pages == held:
            del self.by_pid[pid]
        else:
            self.by_pid[pid] = held - pages

    def release(self, pid: int) -> int:
        """exit_mmap: everything pid holds; returns the pages given back."""
        pages = self.by_pid.pop(pid, 0)
        self.committed -= pages
        return pages

    def reset(self) -> None:
        self.committed = 0
        self.by_pid.clear()
