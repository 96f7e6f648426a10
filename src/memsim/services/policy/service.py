"""The policy service's layer between the gRPC edge and the core: it fetches
the task list from the MMU, asks the core, signals the victims, keeps the
kernel log, and tells watchers about sysctl changes, panics and kills.

A handler that awaits the MMU leaves the core consistent first and checks
again after the await what may have changed meanwhile (a panic, a reboot).
One OOM round runs at a time: a second caller meanwhile is told to wait, as
2.6.24's try_set_zone_oom tells it, and retries its allocation after the
first round's victim has freed its memory.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

from memsim.services.policy.badness import Task
from memsim.services.policy.config import MachineFacts
from memsim.services.policy.core import Policy
from memsim.services.policy.errors import BadValue, NoSuchTask, NotPermitted
from memsim.services.policy.memcg import Charge, MemCgroup
from memsim.services.policy.oom import (
    CONSTRAINT_CPUSET,
    CONSTRAINT_MEMCG,
    CONSTRAINT_MEMORY_POLICY,
    Constraint,
    Decision,
    GiveUp,
    Kill,
    OomAdjustment,
    OomRequest,
    Panic,
    TaskTable,
    Wait,
    Writer,
    modern_totalpages,
    oom_adjust_write,
    oom_score,
    oom_score_adj_write,
)
from memsim.services.policy.overcommit import CommitCheck, MemState
from memsim.services.policy.ports import SIGKILL, PeerUnavailable, TaskSource
from memsim.services.policy.sysctl import (
    _EXCLUSIVE,
    Change,
    normalize_name,
    parse_assignment,
)

LOG_LINES = 4096  # the ring keeps this many kernel log lines
EVENT_HISTORY = 256  # OOM events a new watcher can replay
EVENT_BACKLOG = 1024  # OOM events a slow watcher may fall behind by
DEFAULT_CONF = "/etc/sysctl.conf"
# Seconds a victim the MMU still lists counts as dying (TIF_MEMDIE).
DYING_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class LogLine:
    seq: int
    timestamp_us: int
    text: str


class KernelLog:
    """The printk ring: the oldest lines go first; sequence numbers never
    repeat, so a reader can ask for what it has not seen."""

    def __init__(self, size: int, now_us: Callable[[], int]) -> None:
        self._lines: deque[LogLine] = deque(maxlen=size)
        self._now_us = now_us
        self.seq = 0

    def printk(self, lines: Iterable[str]) -> None:
        now = self._now_us()
        for text in lines:
            self.seq += 1
            self._lines.append(LogLine(self.seq, now, text))

    def since(self, seq: int) -> list[LogLine]:
        # Lines are in sequence order: skip from the left.
        first = self.first_seq
        if seq < first:
            return list(self._lines)
        return list(self._lines)[seq - first + 1 :]

    @property
    def first_seq(self) -> int:
        return self._lines[0].seq if self._lines else self.seq + 1


@dataclass(frozen=True)
class SysctlState:
    """One WatchSysctls message: the whole state."""

    values: tuple[tuple[str, str], ...]
    generation: int
    panic_message: str | None
    changed: tuple[str, ...] = ()


class StateWatcher:
    """A watcher's mailbox: holds the latest state only, so a slow watcher
    costs one state, and learns every name changed meanwhile."""

    def __init__(self) -> None:
        self._pending: SysctlState | None = None
        self._ready = asyncio.Event()

    def offer(self, state: SysctlState) -> None:
        if self._pending is not None:
            changed = dict.fromkeys((*self._pending.changed, *state.changed))
            state = replace(state, changed=tuple(changed))
        self._pending = state
        self._ready.set()

    async def next(self) -> SysctlState:
        while self._pending is None:
            self._ready.clear()
            await self._ready.wait()
        state, self._pending = self._pending, None
        return state


@dataclass(frozen=True)
class OomEvent:
    """A kill or a panic, as WatchOomEvents tells it."""

    seq: int
    decision: Decision
    victim_name: str
    freed_pages: int
    message: str
    constraint: Constraint
    memcg: str
    timestamp_us: int


class EventWatcher:
    """A watcher's queue of OOM events; past the backlog the oldest go, and
    the next event delivered says how many did."""

    def __init__(self, backlog: int = EVENT_BACKLOG) -> None:
        self._queue: deque[OomEvent] = deque()
        self._ready = asyncio.Event()
        self._backlog = backlog
        self._dropped = 0

    def offer(self, event: OomEvent) -> None:
        if len(self._queue) >= self._backlog:
            self._queue.popleft()
            self._dropped += 1
        self._queue.append(event)
        self._ready.set()

    async def next(self) -> tuple[OomEvent, int]:
        while not self._queue:
            self._ready.clear()
            await self._ready.wait()
        dropped, self._dropped = self._dropped, 0
        return self._queue.popleft(), dropped


@dataclass(frozen=True)
class OomCall:
    """One OutOfMemory request, validated."""

    gfp_mask: int = 0
    order: int = 0
    pid: int = 0  # 0: a kernel allocation, no task
    constraint: Constraint = Constraint.NONE
    nodemask: frozenset[int] | None = None
    memcg: str | None = None


@dataclass(frozen=True)
class OomOutcome:
    decision: Decision
    message: str
    freed_pages: int = 0
    victim_name: str = ""


@dataclass
class Counters:
    """Events since the service started (reboots included): the metrics'
    counters."""

    decisions: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(("killed", "wait", "panic", "give_up"), 0)
    )
    processes_killed: int = 0
    freed_pages: int = 0
    reboots: int = 0
    sysctl_writes: int = 0


def decision_name(decision: Decision) -> str:
    if isinstance(decision, Kill):
        return "killed"
    if isinstance(decision, Wait):
        return "wait"
    if isinstance(decision, Panic):
        return "panic"
    return "give_up"


def printed_lines(changes: Sequence[Change]) -> list[str]:
    """What sysctl prints for the writes: one line per file named, not for
    the file a write zeroed on the side (overcommit_ratio and _kbytes)."""
    lines = []
    skip: str | None = None
    for change in changes:
        if change.name == skip:
            skip = None
            continue
        lines.append(change.line)
        skip = _EXCLUSIVE.get(change.name)
    return lines


class PolicyService:
    def __init__(
        self,
        policy: Policy,
        tasks: TaskSource,
        *,
        admin_token: str | None,
        machine: MachineFacts,
        allow_empty_admin_token: bool = False,
        max_order: int = 11,
        log_lines: int = LOG_LINES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """admin_token None: no token is root's, unless allow_empty_admin_token
        makes the empty one root's (config.py says when each applies)."""
        if admin_token == "":
            raise ValueError("the admin token must not be empty (None: no token)")
        if admin_token is not None and allow_empty_admin_token:
            raise ValueError("an admin token and the empty admin token exclude each other")
        self.policy = policy
        self.tasks = tasks
        self.machine = machine
        self.max_order = max_order
        self._admin_token = admin_token.encode() if admin_token is not None else None
        self._allow_empty_admin = allow_empty_admin_token
        self._clock = clock
        self._booted = clock()
        self.log = KernelLog(log_lines, self.now_us)
        self.counters = Counters()
        # Bumped by everything WatchSysctls shows: never goes back, not even
        # on reboot, so that a watcher can tell it missed nothing.
        self.generation = 0
        self._sysctl_watchers: set[StateWatcher] = set()
        self._event_watchers: set[EventWatcher] = set()
        self._events: deque[OomEvent] = deque(maxlen=EVENT_HISTORY)
        self._event_seq = 0
        self._oom_running = False
        # TIF_MEMDIE: pids this service killed that may still be listed, and when.
        self._dying: dict[int, float] = {}

    def now_us(self) -> int:
        return int((self._clock() - self._booted) * 1_000_000)

    # -- credentials ---------------------------------------------------------------

    def is_admin(self, token: str) -> bool:
        """Is the caller root? The token compared in constant time."""
        if self._admin_token is None:
            return self._allow_empty_admin and token == ""
        return bool(token) and hmac.compare_digest(token.encode(), self._admin_token)

    def _require_admin(self, token: str, what: str) -> None:
        if not self.is_admin(token):
            if self._admin_token is None and not self._allow_empty_admin:
                why = "no admin credential is configured (MEMSIM_ADMIN_TOKEN)"
            elif token:
                why = "wrong admin token"
            else:
                why = "needs the admin token (root)"
            raise NotPermitted(f"{what}: Operation not permitted ({why})")

    # -- sysctls ---------------------------------------------------------------------

    def get_sysctl(self, name: str) -> tuple[str, str]:
        name = normalize_name(name)
        if not name:
            raise BadValue("sysctl: empty key")
        return name, self.policy.sysctls.text(name)

    def list_sysctls(self) -> list[tuple[str, str]]:
        sysctls = self.policy.sysctls
        return [(name, sysctls.text(name)) for name in sysctls.names()]

    def set_sysctls(
        self, assignments: Iterable[str], pairs: Iterable[tuple[str, str]], admin_token: str
    ) -> list[Change]:
        """sysctl -w: every write or none."""
        self.policy.check_running()
        items = [parse_assignment(a) for a in assignments]
        items += [(normalize_name(n), v) for n, v in pairs]
        if not items:
            raise BadValue("sysctl: no variables specified")
        for name, _ in items:
            if not name:
                raise BadValue("sysctl: empty key")
        changes = self.policy.sysctls.set_many(items, self.is_admin(admin_token))
        self._sysctls_written(changes)
        return changes

    def apply_sysctl_conf(self, text: str, filename: str, admin_token: str) -> list[Change]:
        """sysctl -p FILE: every line or none."""
        changes = self.policy.apply_conf(text, self.is_admin(admin_token), filename or DEFAULT_CONF)
        self._sysctls_written(changes)
        return changes

    def _sysctls_written(self, changes: Sequence[Change]) -> None:
        if changes:
            self.counters.sysctl_writes += len(changes)
            self._broadcast(dict.fromkeys(c.name for c in changes))

    def sysctl_state(self, changed: Iterable[str] = ()) -> SysctlState:
        return SysctlState(
            tuple(self.list_sysctls()), self.generation, self.policy.panic_message, tuple(changed)
        )

    def watch_sysctls(self) -> StateWatcher:
        """A watcher whose first message is the state now."""
        watcher = StateWatcher()
        watcher.offer(self.sysctl_state())
        self._sysctl_watchers.add(watcher)
        return watcher

    def unwatch_sysctls(self, watcher: StateWatcher) -> None:
        self._sysctl_watchers.discard(watcher)

    def _broadcast(self, changed: Iterable[str]) -> None:
        self.generation += 1
        state = self.sysctl_state(changed)
        for watcher in self._sysctl_watchers:
            watcher.offer(state)

    @property
    def watchers(self) -> dict[str, int]:
        return {"sysctls": len(self._sysctl_watchers), "oom_events": len(self._event_watchers)}

    # -- commit accounting -----------------------------------------------------------------

    def vm_enough_memory(
        self, pid: int, pages: int, mem: MemState, *, cap_sys_admin: bool, total_vm: int
    ) -> CommitCheck:
        _check_pid(pid)
        return self.policy.vm_enough_memory(
            pid, pages, mem, cap_sys_admin=cap_sys_admin, total_vm=total_vm
        )

    def vm_unacct_memory(self, pid: int, pages: int) -> int:
        self.policy.check_running()
        _check_pid(pid)
        self.policy.vm_unacct_memory(pid, pages)
        return self.policy.ledger.committed

    def release_task(self, pid: int) -> int:
        self.policy.check_running()
        _check_pid(pid)
        return self.policy.exit_task(pid)

    @property
    def commit_limit_pages(self) -> int:
        return self.policy.commit_limit(self.machine.mem_state())

    def meminfo(self) -> list[str]:
        return self.policy.meminfo(self.machine.mem_state())

    # -- the OOM killer ------------------------------------------------------------------

    def _check_oom_call(self, call: OomCall) -> None:
        if call.pid < 0:
            raise BadValue(f"pid {call.pid} is negative (0: a kernel allocation)")
        if not 0 <= call.order < self.max_order:
            raise BadValue(f"order {call.order} is outside 0..{self.max_order - 1}")
        bad = sorted(n for n in call.nodemask or () if not 0 <= n < self.machine.nodes)
        if bad:
            raise BadValue(f"nodemask nodes {bad} are outside 0..{self.machine.nodes - 1}")
        if call.constraint is CONSTRAINT_MEMCG:
            if not call.memcg:
                raise BadValue("a memory cgroup OOM needs the group's name")
            self.policy.cgroups.get(call.memcg)
        elif call.memcg:
            raise BadValue("memcg names the group of a CONSTRAINT_MEMORY_CGROUP OOM only")

    def _table(self, tasks: Iterable[Task]) -> TaskTable:
        """The snapshot as a table. Each task's memory cgroup is the MMU's
        (which keeps membership, so that a forked child is in its parent's
        group); this service's list of each group's tasks follows it."""
        tasks = list(tasks)
        self.policy.cgroups.sync_members({t.pid: t.memcg for t in tasks})
        return TaskTable(tasks)

    def _mark_dying(self, tasks: list[Task]) -> list[Task]:
        """TIF_MEMDIE, which the killer sets and the MMU does not report: a
        victim still listed is dying (the MMU delivers a kill when the
        victim's call in flight ends), and the selection waits for it, as
        2.6.24's does, instead of killing again. A mark older than
        DYING_TIMEOUT_S is dropped (memsim's stand-in for the later
        kernels' OOM reaper), so that a victim that never dies does not
        stop the killer for ever."""
        if not self._dying:
            return tasks
        listed = {t.pid for t in tasks}
        now = self._clock()
        for pid, since in list(self._dying.items()):
            if pid not in listed or now - since > DYING_TIMEOUT_S:
                del self._dying[pid]
        return [replace(t, memdie=True) if t.pid in self._dying else t for t in tasks]

    def _totalpages(self, call: OomCall, table: TaskTable) -> int:
        """The memory at stake, for the modern killer."""
        nodes = call.nodemask
        if call.constraint is CONSTRAINT_CPUSET and call.pid in table.by_pid:
            nodes = table.by_pid[call.pid].nodes
        limit = 0
        if call.constraint is CONSTRAINT_MEMCG and call.memcg:
            limit = self.policy.cgroups.limit_pages(call.memcg)
        m = self.machine
        return modern_totalpages(
            call.constraint,
            totalram_pages=m.totalram_pages,
            total_swap_pages=m.total_swap_pages,
            node_spanned_pages=m.node_spanned_pages,
            nodes=nodes
            if call.constraint in (CONSTRAINT_CPUSET, CONSTRAINT_MEMORY_POLICY)
            else None,
            memcg_limit_pages=limit,
        )

    async def out_of_memory(self, call: OomCall) -> OomOutcome:
        """One round of the killer for an allocation reclaim could not serve."""
        self.policy.check_running()
        self._check_oom_call(call)
        if self._oom_running:
            wait = Wait(0, "another OOM kill is in progress")
            self.counters.decisions["wait"] += 1
            return OomOutcome(wait, wait.why)
        self._oom_running = True
        try:
            return await self._oom_round(call)
        finally:
            self._oom_running = False

    async def _oom_round(self, call: OomCall) -> OomOutcome:
        snapshot = await self.tasks.tasks()
        table = self._table(self._mark_dying(snapshot.tasks))
        request = OomRequest(
            constraint=call.constraint,
            current=call.pid or None,
            gfp_mask=call.gfp_mask,
            order=call.order,
            uptime=snapshot.uptime_s,
            memcg=call.memcg if call.constraint is CONSTRAINT_MEMCG else None,
            nodemask=call.nodemask,
            totalpages=self._totalpages(call, table),
        )
        # Checks the panic state again: the await above let other calls in.
        decision = self.policy.out_of_memory(table, request)
        self.log.printk(decision.log)
        self.counters.decisions[decision_name(decision)] += 1
        if isinstance(decision, Panic):
            self._publish(decision, "", 0, decision.message, call)
            self._broadcast(())
            return OomOutcome(decision, decision.message)
        if isinstance(decision, Wait):
            return OomOutcome(decision, decision.why)
        if isinstance(decision, GiveUp):
            return OomOutcome(decision, decision.why)
        name = table.by_pid[decision.victim].comm
        freed = 0
        if decision.signal:
            for pid in (decision.victim, *decision.also_killed):
                try:
                    freed += await self._kill(pid)
                except PeerUnavailable:
                    # The log says whom the killer chose; say too that the
                    # signal did not arrive. The caller retries the round.
                    self.counters.freed_pages += freed
                    self.log.printk(
                        [f"oom-killer: could not signal process {pid}: MMU unavailable"]
                    )
                    raise
        self.counters.freed_pages += freed
        message = f"{decision.reason}: killed process {decision.victim} ({name})"
        self._publish(decision, name, freed, message, call)
        return OomOutcome(decision, message, freed, name)

    async def _kill(self, pid: int) -> int:
        try:
            freed = await self.tasks.kill(pid, SIGKILL)
        except NoSuchTask:
            return 0  # it died meanwhile: its memory is free already
        self.counters.processes_killed += 1
        self._dying[pid] = self._clock()
        return freed

    def _publish(
        self, decision: Decision, name: str, freed: int, message: str, call: OomCall
    ) -> None:
        self._event_seq += 1
        event = OomEvent(
            self._event_seq,
            decision,
            name,
            freed,
            message,
            call.constraint,
            call.memcg or "",
            self.now_us(),
        )
        self._events.append(event)
        for watcher in self._event_watchers:
            watcher.offer(event)

    def watch_oom_events(self, since_seq: int | None = None) -> EventWatcher:
        """New events; with since_seq, first the kept ones after it."""
        if since_seq is not None and since_seq > self._event_seq:
            raise BadValue(
                f"since_seq {since_seq} is past the newest OOM event ({self._event_seq})"
            )
        watcher = EventWatcher()
        if since_seq is not None:
            for event in self._events:
                if event.seq > since_seq:
                    watcher.offer(event)
        self._event_watchers.add(watcher)
        return watcher

    def unwatch_oom_events(self, watcher: EventWatcher) -> None:
        self._event_watchers.discard(watcher)

    def kernel_log(self, since_seq: int = 0) -> list[LogLine]:
        """dmesg: the lines kept after since_seq (0: every line kept)."""
        if since_seq > self.log.seq:
            raise BadValue(f"since_seq {since_seq} is past the newest log line ({self.log.seq})")
        return self.log.since(since_seq)

    @property
    def event_seq(self) -> int:
        """The newest OOM event's sequence number (0: none yet)."""
        return self._event_seq

    # -- /proc/PID/oom_score, oom_adj, oom_score_adj --------------------------------------------

    async def oom_score(self, pid: int) -> int:
        _check_pid(pid)
        snapshot = await self.tasks.tasks()
        m = self.machine
        return oom_score(
            self._table(snapshot.tasks),
            pid,
            policy=self.policy.sysctls.oom_policy,
            uptime=snapshot.uptime_s,
            totalpages=m.totalram_pages + m.total_swap_pages,
            hz=self.policy.hz,
        )

    async def oom_adj(self, pid: int) -> tuple[int, int]:
        _check_pid(pid)
        task = await self.tasks.process(pid)
        return task.oom_adj, task.oom_score_adj

    async def _writer(self, pid: int, admin_token: str, writer_pid: int, token: str) -> Writer:
        """Who writes: root with the admin token, else the process that
        proves it is writer_pid, with its euid and capabilities. With
        neither, root if the empty token is root's."""
        if writer_pid < 0:
            raise BadValue(f"writer pid {writer_pid} is negative")
        if admin_token and writer_pid:
            raise BadValue("name one writer: the admin token or a writer pid, not both")
        if admin_token or (writer_pid == 0 and self.is_admin("")):
            self._require_admin(admin_token, f"/proc/{pid}/oom_adj")
            return Writer(0)
        if writer_pid == 0:
            raise NotPermitted(
                f"/proc/{pid}/oom_adj: Permission denied (name the writer: the admin token "
                "or a writer pid and its token)"
            )
        await self.tasks.check_caller(writer_pid, token)
        task = await self.tasks.process(writer_pid)
        return Writer(task.effective_uid, task.capabilities)

    async def write_oom_adj(
        self,
        pid: int,
        text: str,
        *,
        score_adj: bool = False,
        admin_token: str = "",
        writer_pid: int = 0,
        writer_token: str = "",
    ) -> OomAdjustment:
        """A write of /proc/PID/oom_adj (or oom_score_adj), stored by the MMU."""
        self.policy.check_running()
        _check_pid(pid)
        writer = await self._writer(pid, admin_token, writer_pid, writer_token)
        task = await self.tasks.process(pid)
        write = oom_score_adj_write if score_adj else oom_adjust_write
        adjustment = write(task, text, writer)
        self.policy.check_running()
        await self.tasks.set_oom_adj(pid, adjustment.oom_adj, adjustment.oom_score_adj)
        return adjustment

    # -- panic and reboot ----------------------------------------------------------------

    def reboot(self, admin_token: str) -> None:
        """Boot state again; the log is kept, as a serial console keeps it."""
        self._require_admin(admin_token, "reboot")
        self.policy.reboot()
        self._dying.clear()
        self.counters.reboots += 1
        self.log.printk(["Restarting system."])
        self._broadcast(self.policy.sysctls.names())

    # -- memory cgroups -------------------------------------------------------------------

    def create_cgroup(self, name: str, limit_bytes: int | None, admin_token: str) -> MemCgroup:
        self.policy.check_running()
        self._require_admin(admin_token, f"mkdir {name}")
        return self.policy.cgroups.create(name, None if limit_bytes is None else str(limit_bytes))

    async def remove_cgroup(self, name: str, admin_token: str) -> None:
        """rmdir: EBUSY while a live process is in the group (as the MMU
        says, children included) or pages are charged to it."""
        self.policy.check_running()
        self._require_admin(admin_token, f"rmdir {name}")
        self.policy.cgroups.get(name)
        await self._refresh_members()
        self.policy.check_running()
        self.policy.cgroups.remove(name)

    async def _refresh_members(self) -> None:
        """Each group's tasks from the MMU's task list; if the MMU cannot
        answer, the list as last seen (and as attach left it)."""
        try:
            snapshot = await self.tasks.tasks()
        except PeerUnavailable:
            return
        self.policy.cgroups.sync_members({t.pid: t.memcg for t in snapshot.tasks})

    def set_cgroup_limit(self, name: str, limit_bytes: int | None, admin_token: str) -> MemCgroup:
        self.policy.check_running()
        self._require_admin(admin_token, f"{name}/memory.limit_in_bytes")
        self.policy.cgroups.set_limit(name, "-1" if limit_bytes is None else str(limit_bytes))
        return self.policy.cgroups.get(name)

    async def attach_to_cgroup(self, name: str, pid: int, admin_token: str) -> MemCgroup:
        """echo PID > NAME/tasks: the MMU, which keeps each process's group,
        moves it (NoSuchTask for a pid that is not alive). As in 2.6.25 its
        pages stay charged to the group that charged them; its faults from
        now on charge this one."""
        self.policy.check_running()
        self._require_admin(admin_token, f"{name}/tasks")
        _check_pid(pid)
        self.policy.cgroups.get(name)
        await self.tasks.set_cgroup(pid, name)
        self.policy.cgroups.attach(pid, name)
        return self.policy.cgroups.get(name)

    async def cgroups(self, name: str = "") -> list[MemCgroup]:
        """Every group, or the one named, with their tasks as the MMU has
        them now (a forked child is in its parent's group, the dead in none)."""
        groups = self.policy.cgroups
        if name:
            groups.get(name)
        await self._refresh_members()
        if name:
            return [groups.get(name)]
        return [groups.groups[n] for n in sorted(groups.groups)]

    def _group(self, name: str | None, pid: int | None) -> str:
        if name:
            return name
        if pid is None:
            raise BadValue("name the cgroup, or the pid whose cgroup is charged")
        _check_pid(pid)
        return self.policy.cgroups.group_of(pid)

    def charge_cgroup(self, name: str | None, pid: int | None, pages: int) -> Charge:
        self.policy.check_running()
        return self.policy.cgroups.try_charge(self._group(name, pid), pages)

    def uncharge_cgroup(self, name: str | None, pid: int | None, pages: int) -> MemCgroup:
        self.policy.check_running()
        group = self._group(name, pid)
        self.policy.cgroups.uncharge(group, pages)
        return self.policy.cgroups.get(group)


def _check_pid(pid: int) -> None:
    if pid <= 0:
        raise BadValue(f"pid {pid} is not a process id (1 and up)")
