"""The scheduler of a load run: simulated processes as asyncio tasks, the
bounds (--ops, --duration), seeding, the trace, and replay.

Seeding: simulated process i has its own random.Random seeded from
(seed, i) and a workload given by the mix's weights (smooth weighted
round-robin over i), so its calls depend on the seed, its index and the
outcomes of its own calls, not on timing. The global interleaving of the
processes does depend on timing when several calls are in flight; with
`in_flight` 1 the calls run one at a time, in the order the trace records.

Replay plays a trace's calls one after another in the recorded global order
(`seq`, the order in which they completed), each process slot binding the
recorded handles to what the machine gives now; a call whose outcome differs
from the recorded one counts as a divergence.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from memsim.clients.load.machine import MachineInfo
from memsim.clients.load.ops import OK, OPS, Backend, Ops, ProcessDied, Result, Stop
from memsim.clients.load.schema import Mix
from memsim.clients.load.stats import Stats
from memsim.clients.load.workloads import WORKLOADS, Context

TRACE_FORMAT = "memsim-load-trace"
TRACE_VERSION = 1
FAILING_S = 5.0  # every call failing this long ends the run
Probe = Callable[[], Awaitable[tuple[int | None, int | None]]]


class TraceError(ValueError):
    """A trace file that cannot be replayed; the message names file and line."""


@dataclass(frozen=True)
class LoadConfig:
    processes: int
    seed: int = 0
    ops: int | None = None
    duration_s: float | None = None
    in_flight: int = 0  # calls in flight at most; 0: no limit but the processes
    cleanup: bool = True  # give back what the processes hold at the end

    def __post_init__(self) -> None:
        if self.ops is None and self.duration_s is None:
            raise ValueError("give --ops or --duration (or both)")
        if self.processes < 1:
            raise ValueError("--processes must be at least 1")
        if self.ops is not None and self.ops < 1:
            raise ValueError("--ops must be at least 1")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ValueError("--duration must be more than 0")
        if self.in_flight < 0:
            raise ValueError("--in-flight must not be negative")


def slot_rng(seed: int, index: int) -> random.Random:
    """The Random of simulated process `index` (string seeding is stable
    across Python runs, unlike hash())."""
    return random.Random(f"memsim-load:{seed}:{index}")


class Recorder:
    """The trace: a header line, then one JSON line per call in completion order."""

    def __init__(self, stream: IO[str], header: dict[str, Any]) -> None:
        self.stream = stream
        stream.write(json.dumps({"format": TRACE_FORMAT, "version": TRACE_VERSION, **header}))
        stream.write("\n")

    def write(
        self,
        seq: int,
        slot: int,
        op: str,
        args: dict[str, Any],
        ret: int | None,
        result: Result,
        latency_s: float,
    ) -> None:
        line = {
            "seq": seq,
            "p": slot,
            "op": op,
            "args": args,
            "ret": ret,
            "outcome": result.outcome,
            "code": result.code,
            "ms": round(latency_s * 1e3, 3),
        }
        self.stream.write(json.dumps(line, separators=(",", ":")))
        self.stream.write("\n")


class Session:
    """One run's shared state: budget, stop, in-flight limit, stats, trace."""

    def __init__(
        self,
        stats: Stats,
        *,
        ops: int | None = None,
        in_flight: int = 0,
        recorder: Recorder | None = None,
        expected: dict[int, str] | None = None,
    ) -> None:
        self.stats = stats
        self.limit = ops
        self.issued = 0
        self.seq = 0
        self.stop_event = asyncio.Event()
        self.stopped_by = ""
        self.failure = ""
        self._semaphore = asyncio.Semaphore(in_flight) if in_flight > 0 else None
        self.recorder = recorder
        self._fails_since_ok = 0
        # Replay: the recorded outcome of each seq, to count divergences.
        self.expected = expected
        self._replay_seq: int | None = None

    @property
    def in_flight(self) -> asyncio.Semaphore | None:
        return self._semaphore

    def stop(self, why: str) -> None:
        if not self.stop_event.is_set():
            self.stopped_by = why
            self.stop_event.set()

    def ticket(self) -> None:
        if self.stop_event.is_set():
            raise Stop
        if self.limit is not None and self.issued >= self.limit:
            self.stop("ops")
            raise Stop
        self.issued += 1
        if self.limit is not None and self.issued >= self.limit:
            self.stop("ops")  # this call is the last: wake the idle ones now

    def complete(
        self,
        slot: int,
        op: str,
        args: dict[str, Any],
        ret: int | None,
        result: Result,
        latency_s: float,
        message: str,
    ) -> None:
        self.seq += 1
        self.stats.add(op, result.outcome, result.code, latency_s, message)
        if result.outcome == OK:
            self._fails_since_ok = 0
        else:
            self._fails_since_ok += 1
        if self.recorder is not None:
            self.recorder.write(self.seq, slot, op, args, ret, result, latency_s)
        expected = self.expected
        if expected is not None and expected.get(self._replay_seq or 0) != result.outcome:
            self.stats.divergences += 1

    def failing_for(self) -> float:
        """Seconds since the last call that succeeded, while every call since failed."""
        if self._fails_since_ok == 0:
            return 0.0
        return time.monotonic() - self.stats.last_ok


async def _watch(
    session: Session,
    duration_s: float | None,
    probe: Probe | None,
    tick: Callable[[], None] | None,
    interval_s: float,
) -> None:
    """Ends the run at its duration or when every call fails for FAILING_S;
    polls the machine (free memory, OOM kills) and ticks the display."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    next_probe = start
    while not session.stop_event.is_set():
        now = loop.time()
        if duration_s is not None and now - start >= duration_s:
            session.stop("duration")
            break
        if session.failing_for() >= FAILING_S:
            session.failure = (
                f"every call failed for {FAILING_S:.0f} s; last error: "
                f"{session.stats.last_error or 'refusals only'}"
            )
            session.stop("failing")
            break
        if now >= next_probe:
            next_probe = now + interval_s
            if probe is not None:
                await _probe(session.stats, probe)
            if tick is not None:
                tick()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(session.stop_event.wait(), 0.1)


async def _probe(stats: Stats, probe: Probe) -> None:
    try:
        free, kills = await probe()
    except Exception:  # the machine's counters are for show: never end the run for them
        return
    if free is not None:
        stats.free_bytes = free
        if stats.free_bytes_start is None:
            stats.free_bytes_start = free
    if kills is not None:
        stats.oom_kills = kills


async def run_load(
    mix: Mix,
    config: LoadConfig,
    backend: Backend,
    info: MachineInfo,
    stats: Stats,
    *,
    recorder: Recorder | None = None,
    probe: Probe | None = None,
    tick: Callable[[], None] | None = None,
    interval_s: float = 1.0,
    indices: Sequence[int] | None = None,
    on_start: Callable[[Session], None] | None = None,
) -> Session:
    """Runs the mix until a bound; the session says why it stopped.

    indices: the simulated processes (of 0..config.processes-1) this client
    runs, all by default; process i keeps its workload and its Random whatever
    the share (see clients.py). on_start: given the session before the first
    call (a way to stop it from outside)."""
    session = Session(stats, ops=config.ops, in_flight=config.in_flight, recorder=recorder)
    workloads = mix.assign(config.processes)
    chosen = range(config.processes) if indices is None else indices
    for index in chosen:
        if not 0 <= index < config.processes:
            raise ValueError(f"process index {index} is not below {config.processes}")
    if on_start is not None:
        on_start(session)
    if probe is not None:
        await _probe(stats, probe)
    stats.started = time.monotonic()
    stats.last_ok = stats.started
    watcher = asyncio.create_task(_watch(session, config.duration_s, probe, tick, interval_s))
    slots = [
        asyncio.create_task(_slot(session, i, workloads[i], backend, info, config, stats))
        for i in chosen
    ]
    try:
        await asyncio.gather(*slots)
    finally:
        session.stop(session.stopped_by or "done")
        for task in slots:
            task.cancel()
        await asyncio.gather(*slots, return_exceptions=True)
        await watcher
        stats.ended = time.monotonic()
        if probe is not None:
            await _probe(stats, probe)
    return session


async def _slot(
    session: Session,
    index: int,
    workload: Any,
    backend: Backend,
    info: MachineInfo,
    config: LoadConfig,
    stats: Stats,
) -> None:
    rng = slot_rng(config.seed, index)
    ops = Ops(index, backend, session, burst=workload.burst)
    name = f"{workload.name}{index}"
    run = WORKLOADS[workload.kind]
    # A replacement counts once the next generation's process exists: a run
    # that stops right after a death replaced nobody.
    dead = False
    try:
        while not session.stop_event.is_set():
            context = Context(ops, rng, workload.params, info.page_size, info.nommu, name)
            spawned = ops.spawns
            died = False
            try:
                await run(context)
            except ProcessDied:
                died = True
            finally:
                if dead and ops.spawns > spawned:
                    stats.replacements += 1
                    dead = False
            dead = dead or died
            await ops.reap()  # what it left behind, and a new generation
    except Stop:
        pass
    if config.cleanup and session.stopped_by != "failing":
        await ops.cleanup()


# -- replay -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trace:
    header: dict[str, Any]
    records: list[dict[str, Any]]


def read_trace(path: Path) -> Trace:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise TraceError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not lines:
        raise TraceError(f"{path}:1: empty trace")
    records: list[dict[str, Any]] = []
    header: dict[str, Any] = {}
    for number, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            item = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TraceError(f"{path}:{number}: not JSON: {exc.msg}") from None
        if not isinstance(item, dict):
            raise TraceError(f"{path}:{number}: expected a JSON object")
        if number == 1:
            if item.get("format") != TRACE_FORMAT or item.get("version") != TRACE_VERSION:
                raise TraceError(
                    f"{path}:1: not a memsim load trace (version {TRACE_VERSION} header missing)"
                )
            header = item
            continue
        problem = _check_record(item)
        if problem:
            raise TraceError(f"{path}:{number}: {problem}")
        records.append(item)
    records.sort(key=lambda r: int(r["seq"]))
    return Trace(header, records)


def _check_record(item: dict[str, Any]) -> str:
    for key in ("seq", "p", "op", "args", "outcome"):
        if key not in item:
            return f"record without {key!r}"
    op = item["op"]
    if op not in OPS:
        return f"unknown op {op!r}"
    args = item["args"]
    if not isinstance(args, dict) or set(args) != set(OPS[op][0]):
        return f"{op}: expected arguments {', '.join(OPS[op][0])}"
    if not isinstance(item["seq"], int) or not isinstance(item["p"], int):
        return "seq and p must be integers"
    if OPS[op][1] and not isinstance(item.get("ret"), int):
        return f"{op}: a handle-making call needs an integer 'ret'"
    return ""


def iter_replay(trace: Trace) -> Iterator[dict[str, Any]]:
    yield from trace.records


async def replay(
    trace: Trace,
    backend: Backend,
    stats: Stats,
    *,
    ops: int | None = None,
    duration_s: float | None = None,
    recorder: Recorder | None = None,
    probe: Probe | None = None,
    tick: Callable[[], None] | None = None,
    interval_s: float = 1.0,
) -> Session:
    """Plays the trace's calls one at a time in recorded order."""
    expected = {int(r["seq"]): str(r["outcome"]) for r in trace.records}
    session = Session(stats, ops=ops, in_flight=1, recorder=recorder, expected=expected)
    slots: dict[int, Ops] = {}
    if probe is not None:
        await _probe(stats, probe)
    stats.started = time.monotonic()
    stats.last_ok = stats.started
    watcher = asyncio.create_task(_watch(session, duration_s, probe, tick, interval_s))
    try:
        for record in iter_replay(trace):
            slot = slots.get(record["p"])
            if slot is None:
                slot = slots[record["p"]] = Ops(record["p"], backend, session)
            session._replay_seq = int(record["seq"])
            try:
                await slot.call(
                    record["op"], dict(record["args"]), ret=record.get("ret"), raise_on_death=False
                )
            except Stop:
                break
        else:
            session.stop("end of trace")
    finally:
        session.stop(session.stopped_by or "end of trace")
        await watcher
        stats.ended = time.monotonic()
        if probe is not None:
            await _probe(stats, probe)
    return session
