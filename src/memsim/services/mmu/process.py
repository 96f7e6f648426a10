"""Processes (task_struct) and their memory (mm_struct)."""

from __future__ import annotations

from dataclasses import dataclass, field

from memsim.services.mmu.pagetable import PageTable
from memsim.services.mmu.vma import AddressSpace

SIGKILL = 9
SIGSEGV = 11
# kill(1)'s names for the signals memsim delivers.
SIGNALS = {"SIGKILL": SIGKILL, "SIGSEGV": SIGSEGV, "KILL": SIGKILL, "SEGV": SIGSEGV}
# include/linux/oom.h: oom_adj's range (OOM_DISABLE turns the killer off for
# the task) and the modern oom_score_adj's.
OOM_DISABLE = -17
OOM_ADJUST_MAX = 15
OOM_SCORE_ADJ_MAX = 1000
CAPABILITIES = ("CAP_SYS_ADMIN", "CAP_SYS_RAWIO", "CAP_SYS_RESOURCE", "CAP_IPC_LOCK")
# The root memory cgroup: unlimited, and never charged (no call at all).
ROOT_CGROUP = "/"
# The mempolicy modes memsim models, by mm/mempolicy.c's policy_types names.
MPOL_DEFAULT = "default"
MPOL_BIND = "bind"
MPOL_MODES = (MPOL_DEFAULT, MPOL_BIND)


@dataclass(frozen=True)
class Mempolicy:
    """task->mempolicy of 2.6.24: MPOL_DEFAULT (the local node first, then
    the others by distance), or MPOL_BIND and its nodes (only there).
    Immutable, so that fork's copy (mpol_copy) is the same value."""

    mode: str = MPOL_DEFAULT
    nodes: tuple[int, ...] = ()

    @property
    def bind_nodes(self) -> tuple[int, ...]:
        """The nodes an allocation is bound to; empty: no binding."""
        return self.nodes if self.mode == MPOL_BIND else ()

    def __str__(self) -> str:
        """mpol_to_str, as /proc/PID/numa_maps shows it: "default", "bind=0-1"."""
        if not self.nodes:
            return self.mode
        return f"{self.mode}={nodelist(self.nodes)}"


def nodelist(nodes: tuple[int, ...]) -> str:
    """nodelist_scnprintf: ranges of consecutive nodes, "0-2,5"."""
    ranges: list[list[int]] = []
    for node in sorted(set(nodes)):
        if ranges and node == ranges[-1][1] + 1:
            ranges[-1][1] = node
        else:
            ranges.append([node, node])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


DEFAULT_MEMPOLICY = Mempolicy()


@dataclass
class Mm:
    space: AddressSpace
    pt: PageTable
    start_brk: int  # page numbers
    brk: int  # bytes: the break itself need not be page aligned
    rss: int = 0  # anon_rss: pages with a frame of their own
    # No MMU: the physically contiguous block behind each mapping, by its
    # first page (which is its pfn: addresses are physical).
    blocks: dict[int, tuple[int, int]] = field(default_factory=dict)
    hiwater_rss: int = 0
    hiwater_vm: int = 0

    def note_rss(self, delta: int) -> None:
        self.rss += delta
        self.hiwater_rss = max(self.hiwater_rss, self.rss)

    def note_vm(self) -> None:
        self.hiwater_vm = max(self.hiwater_vm, self.space.total_pages)


@dataclass
class Process:
    pid: int
    token: str
    name: str
    uid: int
    ppid: int
    nice: int
    capabilities: frozenset[str]
    nodes: tuple[int, ...]
    mm: Mm
    start_time_ms: int
    cpu_time_ms: int = 0
    alive: bool = True
    # The signal that ended it (0: exited by itself), and where a SIGSEGV hit.
    exit_signal: int = 0
    fault_address: int | None = None
    minor_faults: int = 0
    major_faults: int = 0
    children: list[int] = field(default_factory=list)
    oom_adj: int = 0
    oom_score_adj: int = 0
    # The memory cgroup whose limit its faults are charged to (mm->mem_cgroup).
    cgroup: str = ROOT_CGROUP
    # set_mempolicy's policy; a forked child inherits it.
    mempolicy: Mempolicy = DEFAULT_MEMPOLICY

    @property
    def state(self) -> str:
        return "R" if self.alive else "X"
