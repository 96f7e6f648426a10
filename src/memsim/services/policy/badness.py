"""Badness: how much the OOM killer would like to kill a task.

`badness` is 2.6.24's mm/oom_kill.c badness(), step for step with its
integer truncations; `oom_badness` is 4.19's (RSS + swap entries + page-table
pages, oom_score_adj in thousandths of the memory at stake, no root bonus:
4.17 dropped it). `int_sqrt` is lib/int_sqrt.c and SHIFT_HZ
include/linux/jiffies.h.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from memsim.services.policy.errors import BadValue

# include/linux/oom.h (2.6.24) and 2.6.36's oom_score_adj range.
OOM_DISABLE = -17
OOM_ADJUST_MIN = -16
OOM_ADJUST_MAX = 15
OOM_SCORE_ADJ_MIN = -1000
OOM_SCORE_ADJ_MAX = 1000

BITS_PER_LONG = 64
ULONG_MAX = (1 << BITS_PER_LONG) - 1
HZ = 250
INIT_PID = 1


def shift_hz(hz: int) -> int:
    """SHIFT_HZ: log2 of HZ rounded to the nearest power of two, as the
    ladder in jiffies.h sets it (HZ 192..383 -> 8)."""
    if not 12 <= hz < 1536:
        raise BadValue(f"HZ {hz} is outside jiffies.h's table (12..1535)")
    return 4 + sum(1 for low in (24, 48, 96, 192, 384, 768) if hz >= low)


SHIFT_HZ = shift_hz(HZ)


def int_sqrt_kernel(x: int) -> int:
    """lib/int_sqrt.c as written: the bit-by-bit square root."""
    op, res = x, 0
    one = 1 << (BITS_PER_LONG - 2)
    while one > op:
        one >>= 2
    while one != 0:
        if op >= res + one:
            op -= res + one
            res += 2 * one
        res //= 2
        one //= 4
    return res


def int_sqrt(x: int) -> int:
    """int_sqrt(): the kernel's loop yields floor(sqrt(x)) exactly, which
    math.isqrt computes faster (the tests hold the two equal)."""
    return math.isqrt(x)


@dataclass(frozen=True, slots=True)
class Task:
    """What the OOM killer reads of one task (task_struct and its mm).

    Memory is in pages. cpu_jiffies is utime + stime at the simulated HZ;
    start_time and the uptime the killer is given are seconds of monotonic
    time since boot. nodes is the cpuset's mems_allowed (None: every node);
    mempolicy_nodes an MPOL_BIND policy's nodes (None: default policy).
    capabilities is the effective set, by name ("CAP_SYS_ADMIN").
    """

    pid: int
    name: str
    uid: int = 0
    euid: int | None = None  # None: same as uid
    nice: int = 0
    capabilities: frozenset[str] = frozenset()
    total_vm: int = 0
    rss: int = 0
    swap_pages: int = 0
    pte_pages: int = 0
    cpu_jiffies: int = 0
    start_time: int = 0
    nodes: frozenset[int] | None = None
    mempolicy_nodes: frozenset[int] | None = None
    oom_adj: int = 0
    oom_score_adj: int = 0
    ppid: int = 0
    has_mm: bool = True
    # Which mm: None is an mm of its own. Tasks that share one (vfork,
    # CLONE_VM) name the same id.
    mm_id: int | None = None
    exiting: bool = False  # PF_EXITING
    memdie: bool = False  # TIF_MEMDIE: an earlier victim, still dying
    swapoff: bool = False  # PF_SWAPOFF (2.6.24) / oom_task_origin (4.19)
    memcg: str = "/"
    tgid: int | None = None  # None: same as pid
    cpu: int = 0  # task_cpu(), for dump_tasks

    @property
    def effective_uid(self) -> int:
        return self.uid if self.euid is None else self.euid

    @property
    def mm(self) -> int | None:
        """The identity of the task's mm, None when it has none."""
        if not self.has_mm:
            return None
        return self.pid if self.mm_id is None else self.mm_id

    @property
    def comm(self) -> str:
        """task->comm: TASK_COMM_LEN is 16 with the NUL."""
        return self.name[:15]


def nodes_intersect(a: frozenset[int] | None, b: frozenset[int] | None) -> bool:
    """nodes_intersects() where None is every node."""
    return a is None or b is None or not a.isdisjoint(b)


def badness(
    task: Task,
    children: Iterable[Task],
    uptime: int,
    caller_nodes: frozenset[int] | None = None,
    *,
    hz: int = HZ,
) -> int:
    """2.6.24 badness(p, uptime). children are p's direct children in list
    order; caller_nodes the allocating task's mems_allowed (the "current" of
    cpuset_mems_allowed_intersects). Every step truncates, in this order."""
    mm = task.mm
    if mm is None:
        return 0
    # The memory size of the process is the basis for the badness.
    points = task.total_vm
    # swapoff can easily use up all memory, so kill those first.
    if task.swapoff:
        return ULONG_MAX
    # Forking servers: half of each child's size, if the child has its own mm.
    for child in children:
        child_mm = child.mm
        if child_mm is not None and child_mm != mm:
            points += child.total_vm // 2 + 1
    # CPU time in tens of seconds, run time in thousands of seconds.
    cpu_time = task.cpu_jiffies >> (shift_hz(hz) + 3)
    run_time = (uptime - task.start_time) >> 10 if uptime >= task.start_time else 0
    s = int_sqrt(cpu_time)
    if s:
        points //= s
    s = int_sqrt(int_sqrt(run_time))
    if s:
        points //= s
    # Niced processes are most likely less important.
    if task.nice > 0:
        points *= 2
    # Superuser processes are usually more important: once, whichever holds.
    caps = task.capabilities
    if "CAP_SYS_ADMIN" in caps or task.uid == 0 or task.effective_uid == 0:
        points //= 4
    # Direct hardware access: killing it could leave the hardware in a mess.
    if "CAP_SYS_RAWIO" in caps:
        points //= 4
    # Not on our nodes: killing it may free nothing we can use.
    if not nodes_intersect(caller_nodes, task.nodes):
        points //= 8
    adj = task.oom_adj
    if adj > 0:
        if not points:
            points = 1
        points = (points << adj) & ULONG_MAX
    elif adj < 0:
        points >>= -adj
    return points


def oom_badness(task: Task, totalpages: int) -> int:
    """4.19 oom_badness() for a task the caller found eligible (memcg and
    node checks are the selection's): 0 for init, a task without mm and
    OOM_SCORE_ADJ_MIN; otherwise at least 1."""
    if task.pid == INIT_PID or not task.has_mm or task.oom_score_adj == OOM_SCORE_ADJ_MIN:
        return 0
    points = task.rss + task.swap_pages + task.pte_pages
    # Normalize to oom_score_adj units.
    points += task.oom_score_adj * (totalpages // 1000)
    return points if points > 0 else 1
