"""The load generator (memsim load) end to end, and its own ceiling, against echo.

Echo, buddy, policy, zone, mmu and slab run as their own processes, started by
this benchmark: the whole machine. The load generator runs in this process as
`memsim load` drives it (run_load over MachineBackend, one channel per service,
the same call deadline), with a new seed and a fresh set of simulated
processes each round; a round ends at its duration and its processes then
exit. A round's rate is taken over its measured window, read at the
generator's own display ticks (every 0.1 s): from the first tick past a
warm-up (the processes' spawns and first mappings) to the last tick before
the stop, so the clean-up's exits, which a longer run would spread over more
calls, are outside it. The whole runs' rate (start-up and clean-up included)
is in the detail of the errors row.

The mixed workload: the shipped `default` mix (every workload; its calls go
through mmu, zone and buddy, its kernel churn through slab and zone) at 1, 4,
16 and 64 simulated processes. The mix gives process i its workload by
weighted round-robin, so 1 process runs `steady` alone and 4 run steady,
kernel_churn, fork_server and shm_db (a row's detail lists them).

"N in flight" is the generator's --in-flight: at most N calls outstanding at
any time. A simulated process has one call outstanding at most, so 1, 4 and 16
processes have 1, 4 and 16 in flight, and 64 processes run with --in-flight 32
(the goal's level). Each level is paired rounds of the echo ceiling (a bare
loop of Echo calls, that many in flight) then the mix: calls per second in
the measured window as a fraction of the same round's echo ceiling, goal
>= 0.5 at 32 in flight. A call is what the generator counts, an op of a
simulated process: a malloc that the process's heap has room for is served in
the client, a Touch of 1 MiB is one RPC; the detail gives the RPCs the mmu and
slab served per call (whole runs) and so, roughly, their rate against echo's.
The latencies are per call, the measured windows' calls of every round merged
(the generator's histograms, within 1 %), not counting the wait for an
in-flight slot.

The generator's ceiling: the `steady` workload (malloc, write and free; no
bursts) through the generator's whole machinery - run_load's scheduler and
watcher, the workload's choices, Ops (handles, the in-flight limit, the
budget), the Session and its Stats for every call - over a backend whose every
op is one Echo call, against a bare loop of Echo calls at the same
concurrency. It must not be the bottleneck of the figures above: goal >= 0.9.
A figure for context adds the trace (--record) to a temporary file.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from prometheus_client.parser import text_string_to_metric_families

from bench.report import Report, Result
from bench.rounds import ROUNDS, add_paired, calls_per_second, echo_call, paired_rates, warm_up
from bench.services import running
from memsim.clients.cli.state import ServiceRecord
from memsim.clients.load.machine import MachineBackend, MachineInfo, machine_info
from memsim.clients.load.ops import EXPECTED, HANDLE_ARGS, Backend
from memsim.clients.load.runner import LoadConfig, Recorder, run_load
from memsim.clients.load.schema import Mix, load_mix
from memsim.clients.load.stats import Histogram, Stats
from memsim.echo.v1 import echo_pb2, echo_pb2_grpc
from memsim.mmu.v1 import mmu_pb2_grpc
from memsim.profiles.loader import load_profile
from memsim.runtime.channel import open_channel
from memsim.services.slab.client import SlabClient

PROFILE = "x86_32"  # the default machine (1 GiB); swap off, as every benchmark runs it
MIX = "default"
CEILING_WORKLOAD = "steady"  # no bursts: every process always has a call to make
# (simulated processes, --in-flight): calls outstanding at most = the smaller.
LEVELS = ((1, 1), (4, 4), (16, 16), (64, 32))
GOAL_IN_FLIGHT = 32
MIX_GOAL = 0.5
CEILING_GOAL = 0.9
CEILING_IN_FLIGHT = (1, 32)
# Per round (warm-up, duration) in seconds: calls are counted from the warm-up
# (the processes' start) to the stop, not in the clean-up after it.
MIX_WINDOW = (0.5, 2.5)
CEILING_WINDOW = (0.25, 0.75)
TICK_S = 0.1  # the generator's display tick: the window's ends
MIX_ROUNDS = 5
CEILING_ROUNDS = ROUNDS  # short rounds: as many as the other gRPC benchmarks
CALL_DEADLINE_S = 60.0  # as memsim load
MAX_OPS = 200_000  # a bound on any one round besides its duration


def level_name(processes: int, in_flight: int) -> str:
    if processes == in_flight:
        return f"{processes} process{'es' if processes > 1 else ''}, {in_flight} in flight"
    return f"{processes} processes, --in-flight {in_flight}"


class EchoBackend:
    """Every op is one Echo call (16 bytes, as the bare loop's); handles are
    looked up as the machine's backend does, and bound to the op's name."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.stub = echo_pb2_grpc.EchoStub(channel)
        self.request = echo_pb2.EchoRequest(payload=b"x" * 16)

    async def execute(self, op: str, args: dict[str, Any], resolve: Callable[[int], Any]) -> Any:
        for key in HANDLE_ARGS.intersection(args):
            resolve(args[key])
        await self.stub.Echo(self.request)
        return op


def served(services: list[ServiceRecord]) -> float:
    """The RPCs `services` have served (grpc_server_started_total, from their /metrics)."""
    total = 0.0
    for service in services:
        assert service.metrics_address is not None, f"{service.name} serves no metrics"
        url = f"http://{service.metrics_address}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        total += sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "grpc_server_started_total"
        )
    return total


def _copy(histogram: Histogram) -> Histogram:
    copy = Histogram()
    copy.merge(histogram)
    return copy


def _since(end: Histogram, start: Histogram) -> Histogram:
    """The latencies added to `end` after `start` was copied from it (the
    extremes are the whole run's: a percentile is clamped to them only)."""
    out = Histogram()
    out.buckets = end.buckets - start.buckets
    out.count = end.count - start.count
    out.total_s = end.total_s - start.total_s
    out.max_s, out.min_s = end.max_s, end.min_s
    return out


@dataclass
class Mark:
    """The generator's counts at one tick of its watcher."""

    at: float
    calls: int
    latency: Histogram
    by_op: dict[str, Histogram]


def mark(stats: Stats) -> Mark:
    return Mark(
        time.perf_counter(),
        stats.calls,
        _copy(stats.latency),
        {op: _copy(per.latency) for op, per in stats.ops.items()},
    )


class Tally:
    """What the rounds of one level add up to: the measured windows' calls,
    seconds and latencies (overall and by op); the whole runs' outcomes, calls,
    seconds, and the RPCs the front doors (mmu, slab) served."""

    def __init__(self) -> None:
        self.latency = Histogram()
        self.by_op: dict[str, Histogram] = {}
        self.window_calls = 0
        self.window_s = 0.0
        self.outcomes: Counter[str] = Counter()
        self.calls = 0
        self.seconds = 0.0
        self.rpcs = 0.0
        self.last_error = ""

    def add(self, first: Mark, last: Mark, stats: Stats, rpcs: float) -> None:
        self.latency.merge(_since(last.latency, first.latency))
        for op, histogram in last.by_op.items():
            before = first.by_op.get(op, Histogram())
            self.by_op.setdefault(op, Histogram()).merge(_since(histogram, before))
        self.window_calls += last.calls - first.calls
        self.window_s += last.at - first.at
        self.outcomes.update(stats.outcomes)
        self.calls += stats.calls
        self.seconds += stats.elapsed_s()
        self.rpcs += rpcs
        self.last_error = stats.last_error or self.last_error

    def slowest(self, p: float) -> str:
        """The ops of the highest p-th percentile latency: the tail's makers."""
        ranked = sorted(
            ((op, h) for op, h in self.by_op.items() if h.count),
            key=lambda item: -item[1].percentile(p),
        )[:3]
        return ", ".join(
            f"{op} {h.percentile(p) * 1e3:.1f} ms ({h.count} calls)" for op, h in ranked
        )

    @property
    def rpcs_per_call(self) -> float:
        return self.rpcs / self.calls if self.calls else 0.0

    @property
    def unexpected(self) -> int:
        return sum(n for outcome, n in self.outcomes.items() if outcome not in EXPECTED)

    def detail(self) -> str:
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items()))
        text = (
            f"whole runs: {self.calls} calls ({outcomes}) in {self.seconds:.1f} s, "
            f"{self.calls / max(self.seconds, 1e-9):.0f}/s with start-up and clean-up; "
            f"{self.rpcs:.0f} RPCs at mmu and slab ({self.rpcs_per_call:.2f} per call)"
        )
        if self.last_error:
            text += f"; last error: {self.last_error}"
        return text


class Generator:
    """Rounds of run_load over one backend: each a new seed, bounded by duration."""

    def __init__(
        self,
        mix: Mix,
        backend: Backend,
        info: MachineInfo,
        front_doors: list[ServiceRecord] | None = None,
    ) -> None:
        self.mix = mix
        self.backend = backend
        self.info = info
        self.front_doors = front_doors or []
        self.seed = 0
        self.trace_dir: Path | None = None

    async def rate(
        self,
        processes: int,
        in_flight: int,
        window: tuple[float, float],
        tally: Tally | None = None,
    ) -> float:
        """One run_load bounded by window's duration: its calls per second
        from window's warm-up on to the generator's last tick before the
        stop (so neither the processes' start nor their clean-up)."""
        warm_s, duration_s = window
        self.seed += 1
        config = LoadConfig(
            processes=processes,
            seed=self.seed,
            ops=MAX_OPS,
            duration_s=duration_s,
            in_flight=in_flight,
        )
        stats = Stats()
        marks: list[Mark] = []
        started = time.perf_counter()

        def tick() -> None:
            """The first tick past the warm-up opens the window, the last one closes it."""
            if time.perf_counter() - started >= warm_s:
                marks[min(len(marks), 1) :] = [mark(stats)]

        rpcs_before = served(self.front_doors)
        with contextlib.ExitStack() as stack:
            recorder = None
            if self.trace_dir is not None:
                stream = stack.enter_context(
                    (self.trace_dir / f"trace-{self.seed}.jsonl").open("w", encoding="utf-8")
                )
                recorder = Recorder(stream, {"mix": self.mix.name, "seed": self.seed})
            session = await run_load(
                self.mix,
                config,
                self.backend,
                self.info,
                stats,
                recorder=recorder,
                tick=tick,
                interval_s=TICK_S,
            )
        if session.stopped_by == "failing":
            raise RuntimeError(f"{self.mix.name}: {session.failure}")
        if len(marks) < 2:
            raise RuntimeError(f"{self.mix.name}: no measured window ({session.stopped_by})")
        first, last = marks
        if tally is not None:
            tally.add(first, last, stats, served(self.front_doors) - rpcs_before)
        return (last.calls - first.calls) / (last.at - first.at)


async def _mixed(report: Report, echo: Any, generator: Generator) -> None:
    for processes, in_flight in LEVELS:
        name = level_name(processes, in_flight)
        tally = Tally()
        medians = await paired_rates(
            functools.partial(calls_per_second, in_flight, echo),
            functools.partial(generator.rate, processes, in_flight, MIX_WINDOW, tally),
            rounds=MIX_ROUNDS,
        )
        goal = MIX_GOAL if in_flight == GOAL_IN_FLIGHT else None
        report.add(
            Result(f"echo calls/s, {in_flight} in flight (load run)", medians.echo, "calls/s")
        )
        workloads = Counter(w.name for w in generator.mix.assign(processes))
        report.add(
            Result(
                f"{MIX} mix calls/s, {name}",
                medians.rate,
                "calls/s",
                detail="workloads: " + ", ".join(f"{k} {v}" for k, v in sorted(workloads.items())),
            )
        )
        report.add(
            Result(
                f"{MIX} mix / echo calls/s, {name}",
                medians.ratio,
                "ratio",
                f">= {goal:g}" if goal is not None else "",
                medians.ratio >= goal if goal is not None else None,
                detail=f"RPCs at mmu and slab per call {tally.rpcs_per_call:.2f}: "
                f"their rate / echo calls/s about {medians.ratio * tally.rpcs_per_call:.3f}",
            )
        )
        for p in (50, 99):
            report.add(
                Result(
                    f"{MIX} mix p{p} latency, {name}",
                    tally.latency.percentile(p) * 1e3,
                    "ms",
                    detail=f"{tally.latency.count} calls in {tally.window_s:.1f} s measured; "
                    f"highest p{p} by op: {tally.slowest(p)}",
                )
            )
        report.add(
            Result(
                f"{MIX} mix unexpected errors, {name}",
                tally.unexpected,
                "calls",
                "== 0",
                tally.unexpected == 0,
                detail=tally.detail(),
            )
        )


async def _ceiling(report: Report, echo: Any, generator: Generator) -> None:
    for in_flight in CEILING_IN_FLIGHT:
        add_paired(
            report,
            await paired_rates(
                functools.partial(calls_per_second, in_flight, echo),
                functools.partial(generator.rate, in_flight, in_flight, CEILING_WINDOW),
                rounds=CEILING_ROUNDS,
            ),
            echo=f"echo calls/s, bare loop, {in_flight} in flight (load generator run)",
            rate=f"load generator ({CEILING_WORKLOAD}) echo calls/s, {in_flight} in flight",
            ratio=f"load generator / bare loop echo calls/s, {in_flight} in flight",
            goal=CEILING_GOAL,
        )
    with tempfile.TemporaryDirectory(prefix="memsim-bench-trace-") as tmp:
        generator.trace_dir = Path(tmp)
        in_flight = CEILING_IN_FLIGHT[-1]
        medians = await paired_rates(
            functools.partial(calls_per_second, in_flight, echo),
            functools.partial(generator.rate, in_flight, in_flight, CEILING_WINDOW),
            rounds=CEILING_ROUNDS,
        )
        generator.trace_dir = None
    report.add(
        Result(
            f"load generator --record / bare loop echo calls/s, {in_flight} in flight",
            medians.ratio,
            "ratio",
            detail=f"{medians.rate:.0f} vs {medians.echo:.0f} calls/s",
        )
    )


async def _measure(report: Report, services: dict[str, ServiceRecord]) -> None:
    async with contextlib.AsyncExitStack() as stack:
        channels = {
            name: await stack.enter_async_context(
                open_channel(services[name].address, deadline_s=CALL_DEADLINE_S)
            )
            for name in ("echo", "mmu", "slab")
        }
        echo = echo_call(channels["echo"])
        mmu = mmu_pb2_grpc.MmuStub(channels["mmu"])
        info = await machine_info(mmu, PROFILE)
        machine = Generator(
            load_mix(MIX),
            MachineBackend(mmu, SlabClient(channels["slab"]), info.page_size),
            info,
            [services["mmu"], services["slab"]],
        )
        echoes = Generator(load_mix(CEILING_WORKLOAD), EchoBackend(channels["echo"]), info)

        # connections, caches, pcp lists; the code paths of every workload
        await warm_up(echo)
        await machine.rate(16, 16, MIX_WINDOW)
        await echoes.rate(1, 1, CEILING_WINDOW)

        await _ceiling(report, echo, echoes)
        await _mixed(report, echo, machine)


def run(report: Report) -> None:
    print(f"load generator over gRPC (own processes, {PROFILE}, {MIX} mix, against echo)")
    profile = load_profile(PROFILE)
    with running(profile, "echo", "buddy", "policy", "zone", "mmu", "slab") as services:
        asyncio.run(_measure(report, services))
