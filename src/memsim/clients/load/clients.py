"""Several client processes: `memsim load --clients K`.

The parent forks K client processes (multiprocessing, spawn start method).
Client k runs the simulated processes k*N//K .. (k+1)*N//K - 1 of the N, each
with the workload and the Random it has in a one-client run (both depend only
on the seed and the process's index), so the same seed gives every simulated
process the same stream of choices whatever K is. --ops is split across the
clients in proportion to their processes (largest remainder), and so is a
non-zero --in-flight; --duration is the whole run's: the clients connect,
report ready, and start together when the parent says go.

Each client sends its statistics (a Stats, whose latency histograms merge
bucket by bucket) over its pipe every interval and once more when it is done;
the parent merges them for the live display and the summary, and polls the
machine (free memory, OOM kills) itself.

Stopping: on Ctrl-C (or SIGTERM) the parent sends SIGTERM to each client by
its pid; a client stops its run as at the end of its --duration (the clean-up
included) and reports; whoever has not exited STOP_GRACE_S later gets SIGKILL.
If a client fails, or stops because every call failed, the others are told to
stop over their pipes. A client whose parent is gone (its pipe at EOF) stops
too, so none outlives the run. Clients ignore SIGINT: a terminal's Ctrl-C
reaches the whole process group, and the parent decides.

--record FILE with K clients writes one trace per client, FILE.0, FILE.1...,
each the calls of that client's processes in its completion order; each can be
replayed alone (`--replay FILE.k`, in one client).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import grpc

from memsim.clients.load.machine import MachineBackend, MachineInfo
from memsim.clients.load.runner import LoadConfig, Probe, Recorder, Session, _probe, run_load
from memsim.clients.load.schema import Mix
from memsim.clients.load.stats import Stats
from memsim.mmu.v1 import mmu_pb2_grpc
from memsim.runtime.channel import open_channel
from memsim.services.slab.client import SlabClient

START_TIMEOUT_S = 60.0  # a client connects and says ready within this
STOP_GRACE_S = 15.0  # a stopped client's clean-up; then SIGKILL
POLL_S = 0.05
# Why a multi-client run stopped, from its clients' reasons: the first present.
STOP_PRIORITY = ("failed", "failing", "interrupted", "parent gone", "stopped", "duration", "ops")


class ClientError(RuntimeError):
    """A client process that could not start or run."""


class Interrupted(Exception):
    """The parent was told to stop (SIGTERM); the clients have been stopped."""


# -- the plan -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientPlan:
    client: int
    indices: tuple[int, ...]  # the simulated processes it runs (global indices)
    ops: int | None  # its share of --ops
    in_flight: int  # its share of --in-flight (0: one per process)


def split_processes(processes: int, clients: int) -> list[tuple[int, ...]]:
    """Contiguous blocks of process indices, sizes differing by one at most."""
    if clients < 1:
        raise ValueError("--clients must be at least 1")
    if clients > processes:
        raise ValueError(
            f"--clients {clients} is more than --processes {processes}: each client needs a process"
        )
    return [
        tuple(range(k * processes // clients, (k + 1) * processes // clients))
        for k in range(clients)
    ]


def split_budget(total: int, weights: Sequence[int]) -> list[int]:
    """`total` split in proportion to `weights` (largest remainder, ties to the
    lower index); when total allows, every share is at least 1."""
    if not weights or any(w < 1 for w in weights):
        raise ValueError("weights must be at least 1")
    whole = sum(weights)
    shares = [total * w // whole for w in weights]
    left = total - sum(shares)
    order = sorted(range(len(weights)), key=lambda k: (-(total * weights[k] % whole), k))
    for k in order[:left]:
        shares[k] += 1
    if total >= len(weights):
        for k, share in enumerate(shares):
            if share == 0:
                donor = max(range(len(shares)), key=lambda j: (shares[j], -j))
                shares[donor] -= 1
                shares[k] += 1
    return shares


def plan_clients(config: LoadConfig, clients: int) -> list[ClientPlan]:
    blocks = split_processes(config.processes, clients)
    sizes = [len(b) for b in blocks]
    ops: list[int | None] = [None] * clients
    if config.ops is not None:
        if config.ops < clients:
            raise ValueError(f"--ops {config.ops} is less than --clients {clients}")
        ops = list(split_budget(config.ops, sizes))
    in_flight = [0] * clients
    if config.in_flight:
        if config.in_flight < clients:
            raise ValueError(
                f"--in-flight {config.in_flight} is less than --clients {clients} "
                "(each client needs a call in flight)"
            )
        in_flight = split_budget(config.in_flight, sizes)
    return [ClientPlan(k, blocks[k], ops[k], in_flight[k]) for k in range(clients)]


def trace_path(record: Path, client: int) -> Path:
    """FILE.k: the trace of client k."""
    return record.with_name(f"{record.name}.{client}")


# -- merging ------------------------------------------------------------------------------


def merge_stats(parts: Iterable[Stats], into: Stats) -> Stats:
    """`into` holds the calls of `parts` (its clock and machine counters stay)."""
    into.clear_calls()
    for part in parts:
        into.merge(part)
    return into


def combine_stops(reasons: Iterable[str]) -> str:
    present = [r for r in reasons if r]
    for reason in STOP_PRIORITY:
        if reason in present:
            return reason
    return present[0] if present else "done"


# -- a client process ---------------------------------------------------------------------


@dataclass(frozen=True)
class ClientSpec:
    """What one client process runs (pickled to it)."""

    plan: ClientPlan
    clients: int
    mix: Mix
    config: LoadConfig  # processes: all N; ops and in_flight: this client's share
    addresses: dict[str, str]
    info: MachineInfo
    header: dict[str, Any]
    record: Path | None
    interval_s: float
    deadline_s: float


@dataclass
class ClientReport:
    stats: Stats
    issued: int
    stopped_by: str
    failure: str


def describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc) or type(exc).__name__


def client_main(conn: Connection, spec: ClientSpec) -> None:
    """The client process: runs its share, reports over conn."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    try:
        asyncio.run(_client(conn, spec))
    except Exception as exc:
        with contextlib.suppress(OSError):
            conn.send(("error", describe(exc)))
        raise SystemExit(1) from None


async def _client(conn: Connection, spec: ClientSpec) -> None:
    loop = asyncio.get_running_loop()
    go = asyncio.Event()
    stop_why: list[str] = []
    sessions: list[Session] = []

    def stop(why: str) -> None:
        if not stop_why:
            stop_why.append(why)
        go.set()
        for session in sessions:
            session.stop(why)

    def readable() -> None:
        try:
            while conn.poll():
                message = conn.recv()
                if message == "go":
                    go.set()
                elif isinstance(message, tuple) and message[0] == "stop":
                    stop(str(message[1]))
        except (EOFError, OSError):
            loop.remove_reader(conn.fileno())
            stop("parent gone")

    def send(message: tuple[Any, ...]) -> None:
        try:
            conn.send(message)
        except OSError:
            stop("parent gone")

    def started(session: Session) -> None:
        sessions.append(session)
        if stop_why:
            session.stop(stop_why[0])

    loop.add_signal_handler(signal.SIGTERM, stop, "interrupted")
    loop.add_reader(conn.fileno(), readable)
    stats = Stats()
    async with contextlib.AsyncExitStack() as stack:
        channels = {
            name: await stack.enter_async_context(
                open_channel(spec.addresses[name], deadline_s=spec.deadline_s)
            )
            for name in ("mmu", "slab")
        }
        backend = MachineBackend(
            mmu_pb2_grpc.MmuStub(channels["mmu"]),
            SlabClient(channels["slab"]),
            spec.info.page_size,
        )
        recorder = None
        if spec.record is not None:
            stream = stack.enter_context(spec.record.open("w", encoding="utf-8"))
            header = {
                **spec.header,
                "client": spec.plan.client,
                "clients": spec.clients,
                "client_processes": list(spec.plan.indices),
                "client_ops_limit": spec.plan.ops,
            }
            recorder = Recorder(stream, header)
        send(("ready",))
        await go.wait()
        if stop_why:  # stopped before it began
            send(("done", ClientReport(stats, 0, stop_why[0], "")))
            return
        session = await run_load(
            spec.mix,
            spec.config,
            backend,
            spec.info,
            stats,
            recorder=recorder,
            tick=lambda: send(("stats", stats)),
            interval_s=spec.interval_s,
            indices=spec.plan.indices,
            on_start=started,
        )
    send(("done", ClientReport(stats, session.issued, session.stopped_by, session.failure)))


# -- the parent ---------------------------------------------------------------------------


@dataclass
class _Child:
    plan: ClientPlan
    process: BaseProcess
    conn: Connection
    ready: bool = False
    stats: Stats = field(default_factory=Stats)
    report: ClientReport | None = None
    error: str = ""
    told_to_stop: bool = False

    @property
    def finished(self) -> bool:
        return self.report is not None or bool(self.error)

    def poll(self) -> bool:
        """Reads what the client sent; True if its statistics changed."""
        exited = self.process.exitcode is not None
        changed = False
        try:
            while not self.conn.closed and self.conn.poll():
                changed |= self._take(self.conn.recv())
        except (EOFError, OSError):
            self.conn.close()
            exited = True
        if exited and not self.finished:
            self.process.join(1.0)
            self.error = f"exited with status {self.process.exitcode} before reporting"
        return changed

    def _take(self, message: Any) -> bool:
        kind = message[0]
        if kind == "ready":
            self.ready = True
        elif kind == "stats":
            self.stats = message[1]
            return True
        elif kind == "done":
            self.report = message[1]
            self.stats = message[1].stats
            return True
        elif kind == "error":
            self.error = str(message[1])
        return False

    def tell_stop(self, why: str) -> None:
        if self.told_to_stop or self.finished:
            return
        self.told_to_stop = True
        with contextlib.suppress(OSError):
            self.conn.send(("stop", why))

    def describe(self) -> dict[str, Any]:
        report = self.report
        return {
            "client": self.plan.client,
            "pid": self.process.pid,
            "processes": list(self.plan.indices),
            "ops_limit": self.plan.ops,
            "in_flight": self.plan.in_flight,
            "workload_calls": report.issued if report else None,
            "calls": self.stats.calls,
            "stopped_by": report.stopped_by if report else "failed",
            "error": self.error,
        }


@dataclass
class ClientsRun:
    """How a multi-client run ended (what the CLI needs of a Session)."""

    stopped_by: str
    failure: str
    issued: int
    clients: list[dict[str, Any]]


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """A child started now inherits SIGINT ignored from its very start."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


async def run_clients(
    mix: Mix,
    config: LoadConfig,
    clients: int,
    addresses: dict[str, str],
    info: MachineInfo,
    stats: Stats,
    *,
    header: dict[str, Any],
    record: Path | None = None,
    probe: Probe | None = None,
    tick: Callable[[], None] | None = None,
    interval_s: float = 1.0,
    deadline_s: float = 60.0,
) -> ClientsRun:
    """Runs the mix in `clients` processes; `stats` gets their merged calls."""
    plans = plan_clients(config, clients)
    context = multiprocessing.get_context("spawn")
    children: list[_Child] = []
    loop = asyncio.get_running_loop()
    terminated: list[bool] = []
    loop.add_signal_handler(signal.SIGTERM, terminated.append, True)
    try:
        for plan in plans:
            spec = ClientSpec(
                plan=plan,
                clients=clients,
                mix=mix,
                config=replace(config, ops=plan.ops, in_flight=plan.in_flight),
                addresses=addresses,
                info=info,
                header=header,
                record=trace_path(record, plan.client) if record is not None else None,
                interval_s=interval_s,
                deadline_s=deadline_s,
            )
            parent_end, child_end = context.Pipe()
            process = context.Process(
                target=client_main, args=(child_end, spec), name=f"memsim-load-{plan.client}"
            )
            with _sigint_ignored():
                process.start()
            child_end.close()
            children.append(_Child(plan, process, parent_end))
        await _wait_ready(children, terminated)
        if probe is not None:
            await _probe(stats, probe)
        for child in children:
            child.conn.send("go")
        stats.started = time.monotonic()
        stats.last_ok = stats.started
        await _watch(children, stats, probe, tick, interval_s, terminated)
        stats.ended = time.monotonic()
        if probe is not None:
            await _probe(stats, probe)
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        stop_children(children)
    merge_stats((c.stats for c in children), stats)
    failed = [c for c in children if c.error]
    reports = [c.report for c in children if c.report is not None]
    failure = "; ".join(f"client {c.plan.client}: {c.error}" for c in failed)
    if not failure:
        failure = "; ".join(r.failure for r in reports if r.failure)
    stopped_by = combine_stops(["failed" if failed else "", *(r.stopped_by for r in reports)])
    return ClientsRun(
        stopped_by=stopped_by,
        failure=failure,
        issued=sum(r.issued for r in reports),
        clients=[c.describe() for c in children],
    )


async def _wait_ready(children: list[_Child], terminated: list[bool]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not all(c.ready for c in children):
        if terminated:
            raise Interrupted("terminated")
        for child in children:
            child.poll()
            if child.error:
                raise ClientError(f"client {child.plan.client}: {child.error}")
        if time.monotonic() > deadline:
            late = [str(c.plan.client) for c in children if not c.ready]
            raise ClientError(f"client {', '.join(late)} not ready after {START_TIMEOUT_S:.0f} s")
        await asyncio.sleep(POLL_S)


async def _watch(
    children: list[_Child],
    stats: Stats,
    probe: Probe | None,
    tick: Callable[[], None] | None,
    interval_s: float,
    terminated: list[bool],
) -> None:
    """Until every client is done: merges their reports, stops the others when
    one fails, polls the machine and ticks the display."""
    next_tick = time.monotonic() + interval_s
    while True:
        if terminated:
            raise Interrupted("terminated")
        changed = False
        for child in children:
            changed |= child.poll()
        if changed:
            merge_stats((c.stats for c in children), stats)
        if any(c.error or (c.report and c.report.stopped_by == "failing") for c in children):
            for child in children:
                child.tell_stop("stopped")
        if all(c.finished for c in children):
            return
        if time.monotonic() >= next_tick:
            next_tick = time.monotonic() + interval_s
            if probe is not None:
                await _probe(stats, probe)
            if tick is not None:
                tick()
        await asyncio.sleep(POLL_S)


def stop_children(children: list[_Child], grace_s: float = STOP_GRACE_S) -> None:
    """Every client ends: SIGTERM (by pid) to those still running, their reports
    read while they clean up, SIGKILL to any left after grace_s. A second
    Ctrl-C meanwhile kills them at once."""
    running = [c for c in children if c.process.pid is not None and c.process.exitcode is None]
    try:
        for child in running:
            if not child.finished:
                _signal(child.process, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while any(c.process.exitcode is None for c in running):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            waiting: list[Any] = [c.process.sentinel for c in running]
            waiting += [c.conn for c in running if not c.conn.closed]
            multiprocessing.connection.wait(waiting, min(left, 0.5))
            for child in running:
                child.poll()
    finally:
        for child in children:
            if child.process.pid is not None and child.process.exitcode is None:
                _signal(child.process, signal.SIGKILL)
                child.process.join(5.0)
            if not child.conn.closed:
                with contextlib.suppress(OSError):
                    child.poll()
                child.conn.close()


def _signal(process: BaseProcess, signum: signal.Signals) -> None:
    if process.pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signum)
