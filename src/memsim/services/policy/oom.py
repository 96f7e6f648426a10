"""The OOM killer: what happens when reclaim cannot serve an allocation.

vm.oom_policy = 2.6.24 follows 2.6.24's mm/oom_kill.c (constrained_alloc,
select_bad_process, oom_kill_process, oom_kill_task, out_of_memory), with
dump_tasks and mem_cgroup_out_of_memory from 2.6.25 and the memcg panic of
panic_on_oom = 2 from the later 2.6 kernels that added it (2.6.25 ignored
panic_on_oom for a cgroup). vm.oom_policy = modern follows 4.19's
(oom_evaluate_task, oom_kill_process's "sacrifice child", check_panic_on_oom).
The /proc files follow 2.6.24's fs/proc/base.c (oom_adj, oom_score) and
2.6.36's (oom_score_adj, and how it and oom_adj mirror each other).

Everything here is a pure function of a task snapshot: the decision says whom
to signal and what the kernel would have printed; the service does it.

Where the kernel would loop for ever (the allocating task, or the chosen one,
cannot be killed, and nothing else changes), memsim gives up: the decision
is GiveUp and the allocation fails.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from memsim.services.policy.badness import (
    HZ,
    INIT_PID,
    OOM_ADJUST_MAX,
    OOM_ADJUST_MIN,
    OOM_DISABLE,
    OOM_SCORE_ADJ_MAX,
    OOM_SCORE_ADJ_MIN,
    ULONG_MAX,
    Task,
    badness,
    nodes_intersect,
    oom_badness,
)
from memsim.services.policy.errors import BadValue, NoSuchTask, NotPermitted
from memsim.services.policy.sysctl import POLICIES, POLICY_2_6_24, POLICY_MODERN, Sysctls, strtoul

# /proc/PID/oom_adj takes at most PROC_NUMBUF - 1 characters.
PROC_NUMBUF = 13
# The comm of the swapper (pid 0): "current" of an allocation no process made.
KERNEL_COMM = "swapper"


class Constraint(Enum):
    """enum oom_constraint (CONSTRAINT_MEMCG is 2.6.35's name for a cgroup's OOM)."""

    NONE = "none"
    CPUSET = "cpuset"
    MEMORY_POLICY = "mempolicy"
    MEMCG = "memcg"


CONSTRAINT_NONE = Constraint.NONE
CONSTRAINT_CPUSET = Constraint.CPUSET
CONSTRAINT_MEMORY_POLICY = Constraint.MEMORY_POLICY
CONSTRAINT_MEMCG = Constraint.MEMCG


def constrained_alloc(
    zonelist_nodes: Iterable[int],
    cpuset_nodes: frozenset[int] | None,
    memory_nodes: Iterable[int],
) -> Constraint:
    """2.6.24 constrained_alloc: CPUSET if the cpuset forbids a node of the
    zonelist, MEMORY_POLICY if the zonelist leaves out a node with memory
    (an MPOL_BIND zonelist), else NONE. memory_nodes is N_HIGH_MEMORY."""
    left = set(memory_nodes)
    for nid in zonelist_nodes:
        if cpuset_nodes is not None and nid not in cpuset_nodes:
            return CONSTRAINT_CPUSET
        left.discard(nid)
    return CONSTRAINT_MEMORY_POLICY if left else CONSTRAINT_NONE


@dataclass(frozen=True)
class OomRequest:
    """One call of out_of_memory (or mem_cgroup_out_of_memory).

    current is the allocating task's pid (None: no process, the swapper).
    uptime is in seconds (2.6.24's badness). memcg names the group for
    CONSTRAINT_MEMCG. nodemask is the mempolicy's nodes for
    CONSTRAINT_MEMORY_POLICY and totalpages the memory at stake (see
    modern_totalpages); the modern policy reads both.
    """

    constraint: Constraint = CONSTRAINT_NONE
    current: int | None = None
    gfp_mask: int = 0
    order: int = 0
    uptime: int = 0
    memcg: str | None = None
    nodemask: frozenset[int] | None = None
    totalpages: int = 0


def modern_totalpages(
    constraint: Constraint,
    *,
    totalram_pages: int,
    total_swap_pages: int,
    node_spanned_pages: dict[int, int] | None = None,
    nodes: frozenset[int] | None = None,
    memcg_limit_pages: int = 0,
) -> int:
    """4.19 constrained_alloc's totalpages: RAM + swap; for a cpuset or
    mempolicy, swap + the spanned pages of its nodes; for a cgroup, its limit
    (at least 1)."""
    if constraint is CONSTRAINT_MEMCG:
        return memcg_limit_pages or 1
    if constraint is CONSTRAINT_NONE or nodes is None or node_spanned_pages is None:
        return totalram_pages + total_swap_pages
    return total_swap_pages + sum(node_spanned_pages.get(n, 0) for n in nodes)


@dataclass(frozen=True)
class OomSettings:
    """The sysctls the killer reads, and the machine's HZ and page size."""

    panic_on_oom: int = 0
    oom_kill_allocating_task: bool = False
    oom_dump_tasks: bool = True
    policy: str = POLICY_2_6_24
    hz: int = HZ
    page_size: int = 4096

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise BadValue(f"unknown OOM policy {self.policy!r}")

    @classmethod
    def from_sysctls(cls, sysctls: Sysctls, *, hz: int = HZ, page_size: int = 4096) -> OomSettings:
        return cls(
            sysctls.panic_on_oom,
            sysctls.oom_kill_allocating_task,
            sysctls.oom_dump_tasks,
            sysctls.oom_policy,
            hz,
            page_size,
        )


# -- decisions -----------------------------------------------------------------


@dataclass(frozen=True)
class Panic:
    """The machine halts; message is the kernel's whole panic line."""

    message: str
    log: tuple[str, ...]


@dataclass(frozen=True)
class Kill:
    """SIGKILL victim (and the others sharing its mm) and mark it TIF_MEMDIE.

    chosen is the task the killer chose and score what it printed for it;
    victim is the one that dies: a child of chosen, or chosen itself. An
    exiting victim is only marked (signal False in the modern policy).
    """

    chosen: int
    score: int
    victim: int
    also_killed: tuple[int, ...]
    signal: bool
    reason: str
    log: tuple[str, ...]


@dataclass(frozen=True)
class Wait:
    """Kill nothing now: pid (an earlier victim, or an exiting task) is
    already dying and will free memory; retry the allocation after."""

    pid: int
    why: str
    log: tuple[str, ...] = ()


@dataclass(frozen=True)
class GiveUp:
    """Nothing could be killed and the kernel would not panic: the
    allocation (or cgroup charge) fails."""

    why: str
    log: tuple[str, ...] = ()


Decision = Panic | Kill | Wait | GiveUp


def panic_line(message: str) -> str:
    """panic(fmt): printk("Kernel panic - not syncing: %s\\n")."""
    return "Kernel panic - not syncing: " + message.rstrip("\n")


def _panic(message: str, log: list[str]) -> Panic:
    line = panic_line(message)
    return Panic(line, (*log, line))


# -- the task list ---------------------------------------------------------------


class TaskTable:
    """The snapshot in the kernel's scan order (by pid here), with each
    task's children in list order and who shares each mm."""

    def __init__(self, tasks: Iterable[Task]) -> None:
        self.tasks: list[Task] = sorted(tasks, key=lambda t: t.pid)
        self.by_pid: dict[int, Task] = {}
        self.children: dict[int, list[Task]] = {}
        self.by_mm: dict[int, list[Task]] = {}
        shared = False
        for t in self.tasks:
            if t.pid in self.by_pid:
                raise BadValue(f"pid {t.pid} appears twice in the task list")
            self.by_pid[t.pid] = t
            if t.ppid != t.pid:
                self.children.setdefault(t.ppid, []).append(t)
            shared |= t.mm_id is not None
        if shared:
            for t in self.tasks:
                mm = t.mm
                if mm is not None:
                    self.by_mm.setdefault(mm, []).append(t)

    def __len__(self) -> int:
        return len(self.tasks)

    def get(self, pid: int | None) -> Task | None:
        if pid is None:
            return None
        task = self.by_pid.get(pid)
        if task is None:
            raise NoSuchTask(f"no task with pid {pid}")
        return task

    def children_of(self, task: Task) -> list[Task]:
        return self.children.get(task.pid, [])

    def sharing(self, mm: int) -> list[Task]:
        """Every task using mm (one, unless tasks name a shared mm_id)."""
        found = self.by_mm.get(mm)
        if found is not None:
            return found
        task = self.by_pid.get(mm)
        return [task] if task is not None and task.mm == mm else []


# -- kernel log lines --------------------------------------------------------------


def _printk(fmt: str, *args: object) -> str:
    """A log line from the kernel's own printk format."""
    return fmt % args


def as_long(points: int) -> int:
    """An unsigned long printed with %li (ULONG_MAX shows as -1)."""
    return points - (1 << 64) if points >= 1 << 63 else points


def _alt_hex(value: int) -> str:
    """C's %#x: no 0x prefix for zero, unlike Python's."""
    return f"{value:#x}" if value else "0"


def dump_tasks_2_6_25(tasks: Iterable[Task], memcg: str | None = None) -> list[str]:
    """2.6.25 dump_tasks: every task with an mm (of the cgroup, if given)."""
    lines = ["[ pid ]   uid  tgid total_vm      rss cpu oom_adj name"]
    for p in tasks:
        if not p.has_mm or (memcg is not None and p.memcg != memcg):
            continue
        tgid = p.pid if p.tgid is None else p.tgid
        lines.append(
            _printk(
                "[%5d] %5d %5d %8lu %8lu %3d     %3d %s",
                p.pid,
                p.uid,
                tgid,
                p.total_vm,
                p.rss,
                p.cpu,
                p.oom_adj,
                p.comm,
            )
        )
    return lines


def dump_tasks_modern(tasks: Iterable[Task], page_size: int) -> list[str]:
    """4.19 dump_tasks over the tasks the caller found eligible."""
    lines = [
        "Tasks state (memory values in pages):",
        "[  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name",
    ]
    for p in tasks:
        tgid = p.pid if p.tgid is None else p.tgid
        lines.append(
            _printk(
                "[%7d] %5d %5d %8lu %8lu %8ld %8lu         %5hd %s",
                p.pid,
                p.uid,
                tgid,
                p.total_vm,
                p.rss,
                p.pte_pages * page_size,
                p.swap_pages,
                p.oom_score_adj,
                p.comm,
            )
        )
    return lines


def nodelist(nodes: frozenset[int] | None) -> str:
    """%*pbl: "0-2,4"; "(null)" for no mask."""
    if nodes is None:
        return "(null)"
    ranges: list[str] = []
    for n in sorted(nodes):
        if ranges and ranges[-1].split("-")[-1] == str(n - 1):
            ranges[-1] = f"{ranges[-1].split('-')[0]}-{n}"
        else:
            ranges.append(str(n))
    return ",".join(ranges)


# -- 2.6.24 ---------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """select_bad_process's answer: a task and its points, nothing, or the
    dying task to wait for (ERR_PTR(-1UL))."""

    chosen: Task | None
    points: int
    wait_for: Task | None = None
    why: str = ""


def select_bad_process(
    table: TaskTable,
    current: Task | None,
    uptime: int,
    memcg: str | None = None,
    *,
    hz: int = HZ,
) -> Selection:
    """2.6.24 select_bad_process (with 2.6.25's cgroup filter). Ties keep
    the earlier task; the first candidate is taken even at 0 points."""
    chosen: Task | None = None
    chosen_points = 0
    caller_nodes = current.nodes if current is not None else None
    children = table.children
    no_children: list[Task] = []
    for p in table.tasks:
        # Kernel threads and tasks that have released their mm; init.
        if not p.has_mm or p.pid == INIT_PID:
            continue
        if memcg is not None and p.memcg != memcg:
            continue
        # An earlier victim has the reserves: let it die first.
        if p.memdie:
            return Selection(None, 0, p, "an earlier victim is still dying")
        if p.exiting:
            # Releasing memory already: wait for it, unless it is current,
            # which may take the reserves to finish exiting.
            if p is not current:
                return Selection(None, 0, p, "a task is exiting")
            chosen = p
            chosen_points = ULONG_MAX
        if p.oom_adj == OOM_DISABLE:
            continue
        points = badness(p, children.get(p.pid, no_children), uptime, caller_nodes, hz=hz)
        if points > chosen_points or chosen is None:
            chosen = p
            chosen_points = points
    return Selection(chosen, chosen_points)


@dataclass
class _Killed:
    """What oom_kill_task did (ret 0 is success, as in the kernel)."""

    ret: int
    victim: Task | None = None
    also: tuple[int, ...] = ()


def _oom_kill_task(table: TaskTable, q: Task, log: list[str]) -> _Killed:
    """2.6.24 oom_kill_task and __oom_kill_task(q, verbose=1)."""
    mm = q.mm
    if mm is None:
        return _Killed(1)
    sharers = table.sharing(mm)
    # Don't kill the process if any threads are set to OOM_DISABLE.
    if any(t.oom_adj == OOM_DISABLE for t in sharers):
        return _Killed(1)
    if q.pid == INIT_PID:
        log.append("tried to kill init!")
        return _Killed(0)
    log.append(_printk("Killed process %d (%s)", q.pid, q.comm))
    group = q.pid if q.tgid is None else q.tgid
    also = tuple(t.pid for t in sharers if t.pid != q.pid and (t.tgid or t.pid) != group)
    return _Killed(0, q, also)


def _header_2_6_24(
    table: TaskTable,
    current: Task | None,
    req: OomRequest,
    settings: OomSettings,
    memcg: str | None,
) -> list[str]:
    """oom_kill_process's banner (dump_stack and show_mem left out) and,
    with oom_dump_tasks, 2.6.25's task dump."""
    comm = current.comm if current is not None else KERNEL_COMM
    adj = current.oom_adj if current is not None else 0
    log = [
        _printk(
            "%s invoked oom-killer: gfp_mask=0x%x, order=%d, oomkilladj=%d",
            comm,
            req.gfp_mask,
            req.order,
            adj,
        )
    ]
    if settings.oom_dump_tasks:
        log += dump_tasks_2_6_25(table.tasks, memcg)
    return log


def _oom_kill_process_2_6_24(
    table: TaskTable,
    p: Task,
    points: int,
    message: str,
    current: Task | None,
    req: OomRequest,
    settings: OomSettings,
    memcg: str | None,
    log: list[str],
) -> Kill | None:
    """2.6.24 oom_kill_process: a child with its own mm first, else p. None
    when nothing was killed."""
    log += _header_2_6_24(table, current, req, settings, memcg)
    if p.exiting:
        # Already exiting: no alarm, no children; __oom_kill_task(p, 0).
        if p.pid == INIT_PID:
            log.append("tried to kill init!")
            return None
        if p.mm is None:
            log.append("tried to kill an mm-less task!")
            return None
        return Kill(p.pid, as_long(points), p.pid, (), True, message, tuple(log))
    log.append(
        _printk(
            "%s: kill process %d (%s) score %li or a child", message, p.pid, p.comm, as_long(points)
        )
    )
    killed = _Killed(1)
    for c in table.children_of(p):
        if c.mm == p.mm:
            continue
        killed = _oom_kill_task(table, c, log)
        if killed.ret == 0:
            break
    else:
        killed = _oom_kill_task(table, p, log)
    if killed.ret != 0 or killed.victim is None:
        return None
    v = killed.victim
    return Kill(p.pid, as_long(points), v.pid, killed.also, True, message, tuple(log))


def _kill_current_2_6_24(
    table: TaskTable,
    current: Task | None,
    message: str,
    req: OomRequest,
    settings: OomSettings,
) -> Decision:
    """The MPOL_BIND and oom_kill_allocating_task paths: points are 0."""
    if current is None:
        return GiveUp("no allocating process to kill")
    log: list[str] = []
    kill = _oom_kill_process_2_6_24(table, current, 0, message, current, req, settings, None, log)
    if kill is None:
        # The kernel returns and the allocation retries into the same wall.
        return GiveUp(
            f"the allocating task {current.pid} ({current.comm}) cannot be killed", tuple(log)
        )
    return kill


def out_of_memory_2_6_24(table: TaskTable, req: OomRequest, settings: OomSettings) -> Decision:
    """2.6.24 out_of_memory, and mem_cgroup_out_of_memory for a cgroup."""
    current = table.get(req.current)
    if req.constraint is CONSTRAINT_MEMCG:
        return _mem_cgroup_out_of_memory(table, current, req, settings)
    if settings.panic_on_oom == 2:
        return _panic("out of memory. Compulsory panic_on_oom is selected.\n", [])
    if req.constraint is CONSTRAINT_MEMORY_POLICY:
        return _kill_current_2_6_24(
            table, current, "No available memory (MPOL_BIND)", req, settings
        )
    if req.constraint is CONSTRAINT_NONE and settings.panic_on_oom:
        return _panic("out of memory. panic_on_oom is selected\n", [])
    # CONSTRAINT_NONE falls through to here, as CONSTRAINT_CPUSET does.
    if settings.oom_kill_allocating_task:
        return _kill_current_2_6_24(
            table, current, "Out of memory (oom_kill_allocating_task)", req, settings
        )
    sel = select_bad_process(table, current, req.uptime, hz=settings.hz)
    if sel.wait_for is not None:
        return Wait(sel.wait_for.pid, sel.why)
    if sel.chosen is None:
        return _panic("Out of memory and no killable processes...\n", [])
    log: list[str] = []
    kill = _oom_kill_process_2_6_24(
        table, sel.chosen, sel.points, "Out of memory", current, req, settings, None, log
    )
    if kill is None:
        # `goto retry` would choose the same task again, for ever.
        return GiveUp(f"pid {sel.chosen.pid} shares its mm with an OOM_DISABLE task", tuple(log))
    return kill


def _mem_cgroup_out_of_memory(
    table: TaskTable, current: Task | None, req: OomRequest, settings: OomSettings
) -> Decision:
    """2.6.25 mem_cgroup_out_of_memory: the worst task of the group, else
    current; panic_on_oom = 2 panics first (added after 2.6.25)."""
    if req.memcg is None:
        raise BadValue("a memory cgroup OOM needs the group's name")
    if settings.panic_on_oom == 2:
        return _panic("out of memory(memcg). panic_on_oom is selected.\n", [])
    sel = select_bad_process(table, current, req.uptime, req.memcg, hz=settings.hz)
    if sel.wait_for is not None:
        return Wait(sel.wait_for.pid, sel.why)
    p = sel.chosen if sel.chosen is not None else current
    if p is None:
        return GiveUp(f"no task to kill in memory cgroup {req.memcg}")
    log: list[str] = []
    kill = _oom_kill_process_2_6_24(
        table, p, sel.points, "Memory cgroup out of memory", current, req, settings, req.memcg, log
    )
    if kill is None:
        return GiveUp(f"no task of memory cgroup {req.memcg} can be killed", tuple(log))
    return kill


# -- 4.19 ----------------------------------------------------------------------


def _in_memcg(task: Task, memcg: str) -> bool:
    """task_in_mem_cgroup with the hierarchy of later kernels."""
    return task.memcg == memcg or task.memcg.startswith(memcg.rstrip("/") + "/")


class _Modern:
    """One 4.19 out_of_memory call: its oom_control."""

    def __init__(self, table: TaskTable, req: OomRequest, settings: OomSettings) -> None:
        if req.totalpages <= 0:
            raise BadValue("the modern OOM policy needs totalpages > 0")
        if req.constraint is CONSTRAINT_MEMCG and req.memcg is None:
            raise BadValue("a memory cgroup OOM needs the group's name")
        self.table = table
        self.req = req
        self.settings = settings
        self.current = table.get(req.current)
        self.caller_nodes = self.current.nodes if self.current is not None else None
        self.memcg = req.memcg if req.constraint is CONSTRAINT_MEMCG else None
        # Only a mempolicy OOM keeps the nodemask.
        self.nodemask = req.nodemask if req.constraint is CONSTRAINT_MEMORY_POLICY else None
        self.totalpages = req.totalpages
        self.log: list[str] = []

    def unkillable(self, p: Task, memcg: str | None) -> bool:
        """oom_unkillable_task: init, kernel threads, another cgroup, and
        tasks whose memory is not where the allocation wanted it."""
        if p.pid == INIT_PID or not p.has_mm:
            return True
        if memcg is not None and not _in_memcg(p, memcg):
            return True
        if self.nodemask is not None:
            return not nodes_intersect(p.mempolicy_nodes, self.nodemask)
        return not nodes_intersect(self.caller_nodes, p.nodes)

    def will_free_mem(self, p: Task) -> bool:
        """task_will_free_mem: exiting, as is every task sharing its mm."""
        mm = p.mm
        return mm is not None and all(t.exiting for t in self.table.sharing(mm))

    def header(self) -> None:
        """dump_header (dump_stack, show_mem left out) and dump_tasks."""
        cur = self.current
        self.log.append(
            _printk(
                "%s invoked oom-killer: gfp_mask=%s, nodemask=%s, order=%d, oom_score_adj=%hd",
                cur.comm if cur is not None else KERNEL_COMM,
                _alt_hex(self.req.gfp_mask),
                nodelist(self.nodemask),
                self.req.order,
                cur.oom_score_adj if cur is not None else 0,
            )
        )
        if self.settings.oom_dump_tasks:
            eligible = (p for p in self.table.tasks if not self.unkillable(p, self.memcg))
            self.log += dump_tasks_modern(eligible, self.settings.page_size)

    def select(self) -> Selection:
        """select_bad_process over oom_evaluate_task."""
        chosen: Task | None = None
        chosen_points = 0
        for p in self.table.tasks:
            if self.memcg is not None and not _in_memcg(p, self.memcg):
                continue
            if self.unkillable(p, None):
                continue
            if p.memdie:
                return Selection(None, 0, p, "an earlier victim is still dying")
            if p.swapoff:
                points = ULONG_MAX
            else:
                points = oom_badness(p, self.totalpages)
                # Equal points keep the earlier: every task leads its group.
                if not points or points <= chosen_points:
                    continue
            chosen, chosen_points = p, points
        scaled = (chosen_points * 1000 & ULONG_MAX) // self.totalpages
        return Selection(chosen, scaled)

    def kill_process(self, p: Task, points: int, message: str) -> Kill:
        """oom_kill_process: the child with the highest oom_badness first."""
        if self.will_free_mem(p):
            return Kill(p.pid, points, p.pid, (), False, message, tuple(self.log))
        self.header()
        self.log.append(
            _printk(
                "%s: Kill process %d (%s) score %u or sacrifice child",
                message,
                p.pid,
                p.comm,
                points & 0xFFFFFFFF,
            )
        )
        victim, victim_points = p, 0
        for child in self.table.children_of(p):
            if child.mm == p.mm:
                continue
            if self.unkillable(child, self.memcg):
                continue
            child_points = oom_badness(child, self.totalpages) & 0xFFFFFFFF
            if child_points > victim_points:
                victim, victim_points = child, child_points
        return self._kill(p, points, victim, message)

    def _kill(self, p: Task, points: int, victim: Task, message: str) -> Kill:
        """__oom_kill_process: SIGKILL the victim and its mm's other users."""
        kb = self.settings.page_size // 1024
        self.log.append(
            _printk(
                "Killed process %d (%s) total-vm:%lukB, anon-rss:%lukB, "
                "file-rss:%lukB, shmem-rss:%lukB",
                victim.pid,
                victim.comm,
                victim.total_vm * kb,
                victim.rss * kb,
                0,
                0,
            )
        )
        also: list[int] = []
        mm = victim.mm
        group = victim.tgid or victim.pid
        for t in self.table.sharing(mm) if mm is not None else []:
            if t.pid == victim.pid or (t.tgid or t.pid) == group:
                continue
            if t.pid == INIT_PID:
                self.log.append(
                    _printk(
                        "oom killer %d (%s) has mm pinned by %d (%s)",
                        victim.pid,
                        victim.comm,
                        t.pid,
                        t.comm,
                    )
                )
                continue
            also.append(t.pid)
        return Kill(p.pid, points, victim.pid, tuple(also), True, message, tuple(self.log))

    def run(self) -> Decision:
        cur = self.current
        if cur is not None and self.will_free_mem(cur):
            return Kill(cur.pid, 0, cur.pid, (), False, "current is exiting", ())
        panic = self.settings.panic_on_oom
        if panic == 2 or (panic == 1 and self.req.constraint is CONSTRAINT_NONE):
            self.header()
            kind = "compulsory" if panic == 2 else "system-wide"
            return _panic(f"Out of memory: {kind} panic_on_oom is enabled\n", self.log)
        if (
            self.memcg is None
            and self.settings.oom_kill_allocating_task
            and cur is not None
            and not self.unkillable(cur, None)
            and cur.oom_score_adj != OOM_SCORE_ADJ_MIN
        ):
            return self.kill_process(cur, 0, "Out of memory (oom_kill_allocating_task)")
        sel = self.select()
        if sel.wait_for is not None:
            return Wait(sel.wait_for.pid, sel.why, tuple(self.log))
        if sel.chosen is None:
            self.header()
            self.log.append("Out of memory and no killable processes...")
            if self.memcg is None:
                return _panic("System is deadlocked on memory\n", self.log)
            return GiveUp(f"no killable task in memory cgroup {self.memcg}", tuple(self.log))
        message = "Memory cgroup out of memory" if self.memcg is not None else "Out of memory"
        return self.kill_process(sel.chosen, sel.points, message)


def out_of_memory_modern(table: TaskTable, req: OomRequest, settings: OomSettings) -> Decision:
    """4.19 out_of_memory (mem_cgroup_out_of_memory calls it too)."""
    return _Modern(table, req, settings).run()


def out_of_memory(
    tasks: Iterable[Task] | TaskTable, req: OomRequest, settings: OomSettings
) -> Decision:
    """What the kernel vm.oom_policy names does about one failed allocation."""
    table = tasks if isinstance(tasks, TaskTable) else TaskTable(tasks)
    if settings.policy == POLICY_MODERN:
        return out_of_memory_modern(table, req, settings)
    return out_of_memory_2_6_24(table, req, settings)


# -- /proc/PID/oom_score, oom_adj, oom_score_adj ----------------------------------------


def oom_score(
    table: TaskTable,
    pid: int,
    *,
    policy: str = POLICY_2_6_24,
    uptime: int = 0,
    reader_nodes: frozenset[int] | None = None,
    totalpages: int = 0,
    hz: int = HZ,
) -> int:
    """/proc/PID/oom_score: 2.6.24's badness(task, uptime), with the reader
    as "current"; 4.19's oom_badness * 1000 / totalpages, where totalpages is
    RAM + swap."""
    task = table.get(pid)
    assert task is not None
    if policy == POLICY_MODERN:
        if totalpages <= 0:
            raise BadValue("oom_score needs totalpages > 0")
        if not nodes_intersect(reader_nodes, task.nodes):
            return 0
        return oom_badness(task, totalpages) * 1000 // totalpages
    return badness(task, table.children_of(task), uptime, reader_nodes, hz=hz)


@dataclass(frozen=True)
class Writer:
    """Who writes a /proc file: root (euid 0) holds every capability."""

    euid: int
    capabilities: frozenset[str] = frozenset()

    def capable(self, cap: str) -> bool:
        return self.euid == 0 or cap in self.capabilities


@dataclass(frozen=True)
class OomAdjustment:
    """A task's oom_adj and oom_score_adj after a write: each mirrors the
    other as 2.6.36 scales them."""

    oom_adj: int
    oom_score_adj: int


def _cdiv(a: int, b: int) -> int:
    """C integer division: truncates toward zero."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def score_adj_from_adj(oom_adj: int) -> int:
    """2.6.36 oom_adjust_write: OOM_ADJUST_MAX maps to OOM_SCORE_ADJ_MAX."""
    if oom_adj == OOM_ADJUST_MAX:
        return OOM_SCORE_ADJ_MAX
    return _cdiv(oom_adj * OOM_SCORE_ADJ_MAX, -OOM_DISABLE)


def adj_from_score_adj(oom_score_adj: int) -> int:
    """2.6.36 oom_score_adj_write: OOM_SCORE_ADJ_MIN maps to OOM_DISABLE."""
    if oom_score_adj == OOM_SCORE_ADJ_MIN:
        return OOM_DISABLE
    return _cdiv(oom_score_adj * OOM_ADJUST_MAX, OOM_SCORE_ADJ_MAX)


def _check_owner(task: Task, writer: Writer) -> None:
    """The file is 0644 and owned by the task's euid."""
    if writer.euid != 0 and writer.euid != task.effective_uid:
        raise NotPermitted(f"/proc/{task.pid}/oom_adj: Permission denied")


def oom_adjust_read(task: Task) -> str:
    return f"{task.oom_adj}\n"


def oom_score_adj_read(task: Task) -> str:
    return f"{task.oom_score_adj}\n"


def oom_adjust_write(task: Task, text: str, writer: Writer) -> OomAdjustment:
    """2.6.24 oom_adjust_write: simple_strtol(buf, 0) of at most 12
    characters; -17 or -16..15; lowering needs CAP_SYS_RESOURCE. memsim
    refuses what the kernel half-accepts (no number: the kernel stores 0
    and says EIO; trailing junk: it stores the number)."""
    _check_owner(task, writer)
    buf = text[: PROC_NUMBUF - 1]
    pos = 1 if buf.startswith("-") else 0
    if pos >= len(buf) or not (buf[pos].isascii() and buf[pos].isdigit()):
        raise BadValue(f"/proc/{task.pid}/oom_adj: Invalid argument")
    value, end = strtoul(buf, pos)
    if buf[end:] not in ("", "\n"):
        raise BadValue(f"/proc/{task.pid}/oom_adj: Invalid argument")
    adj = -value if pos else value
    if (adj < OOM_ADJUST_MIN or adj > OOM_ADJUST_MAX) and adj != OOM_DISABLE:
        raise BadValue(f"/proc/{task.pid}/oom_adj: Invalid argument")
    if adj < task.oom_adj and not writer.capable("CAP_SYS_RESOURCE"):
        raise NotPermitted(f"/proc/{task.pid}/oom_adj: Permission denied")
    return OomAdjustment(adj, score_adj_from_adj(adj))


def oom_score_adj_write(task: Task, text: str, writer: Writer) -> OomAdjustment:
    """2.6.36 oom_score_adj_write: kstrtoint of the stripped text, base 0;
    -1000..1000; lowering needs CAP_SYS_RESOURCE."""
    _check_owner(task, writer)
    word = text.strip()
    sign = -1 if word.startswith("-") else 1
    digits = word[1:] if word[:1] in "+-" else word
    if not digits or not (digits[0].isascii() and digits[0].isdigit()):
        raise BadValue(f"/proc/{task.pid}/oom_score_adj: Invalid argument")
    value, end = strtoul(digits, 0)
    if end != len(digits):
        raise BadValue(f"/proc/{task.pid}/oom_score_adj: Invalid argument")
    adj = sign * value
    if not OOM_SCORE_ADJ_MIN <= adj <= OOM_SCORE_ADJ_MAX:
        raise BadValue(f"/proc/{task.pid}/oom_score_adj: Invalid argument")
    if adj < task.oom_score_adj and not writer.capable("CAP_SYS_RESOURCE"):
        raise NotPermitted(f"/proc/{task.pid}/oom_score_adj: Permission denied")
    return OomAdjustment(adj_from_score_adj(adj), adj)
