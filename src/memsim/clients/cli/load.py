"""`memsim load`: simulated processes following seeded workloads against the
running machine (see memsim.clients.load)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path
from typing import IO, Annotated, Any

import grpc
import typer

from memsim.clients.cli.durations import duration_seconds
from memsim.clients.cli.machine import running_machine
from memsim.clients.load.clients import (
    ClientError,
    ClientsRun,
    Interrupted,
    plan_clients,
    run_clients,
)
from memsim.clients.load.display import Display, render_summary
from memsim.clients.load.machine import MachineBackend, MachineInfo, machine_info
from memsim.clients.load.output import OutputError, output_format, write_output
from memsim.clients.load.runner import (
    LoadConfig,
    Recorder,
    Session,
    TraceError,
    read_trace,
    replay,
    run_load,
)
from memsim.clients.load.schema import LoadFileError, Mix, load_mix
from memsim.clients.load.stats import Stats
from memsim.mmu.v1 import mmu_pb2_grpc
from memsim.runtime.channel import open_channel
from memsim.runtime.config import peer_address
from memsim.services.policy.client import PolicyClient
from memsim.services.slab.client import SlabClient
from memsim.services.zone.client import ZoneClient

CALL_DEADLINE_S = 60.0  # an OOM round or a swap storm can take a while


def fail(message: str) -> typer.Exit:
    typer.echo(f"memsim: load: {message}", err=True)
    return typer.Exit(1)


def parse_duration(text: str) -> float:
    """ "30s", "500ms", "2m", "1h" or plain seconds."""
    seconds = duration_seconds(text.strip(), "30s, 2m or 500ms")
    if not seconds > 0:
        raise ValueError(f"{text!r}: the duration must be more than 0")
    return seconds


def _addresses() -> tuple[dict[str, str], str | None]:
    names = ("zone", "mmu", "slab", "policy")
    if all(f"MEMSIM_{n.upper()}_ADDR" in os.environ for n in names):
        return {n: peer_address(n) for n in names}, os.environ.get("MEMSIM_PROFILE")
    state = running_machine()
    if state is None:
        raise fail("no machine is running (start one with `memsim up -d`)")
    # A machine with a zone per node (memsim up --split-nodes): zone-0, so
    # the free memory the load reports is node 0's only.
    addresses = {n: state.services[n if n in state.services else f"{n}-0"].address for n in names}
    return addresses, state.profile


def load_command(
    mix: Annotated[
        str,
        typer.Option(
            "--mix",
            "-m",
            help="A shipped mix (default, pressure, kernel), a shipped workload "
            "(steady, leak, fork_server, hog, kernel_churn, fragmenter, shm_db, bursty) "
            "or the path of a mix or workload TOML file.",
        ),
    ] = "default",
    processes: Annotated[
        int, typer.Option("--processes", "-n", help="Simulated processes running at once.")
    ] = 4,
    seed: Annotated[int, typer.Option(help="Seed of every process's choices.")] = 0,
    ops: Annotated[int | None, typer.Option("--ops", help="Stop after this many calls.")] = None,
    duration: Annotated[
        str | None, typer.Option(help="Stop after this long (30s, 2m); with --ops, first wins.")
    ] = None,
    in_flight: Annotated[
        int,
        typer.Option(
            "--in-flight",
            help="Calls in flight at most (0: one per process). 1 runs the calls one at a "
            "time, so that a --record trace replays to the very same machine state.",
        ),
    ] = 0,
    record: Annotated[
        Path | None, typer.Option(help="Write every call and its outcome to FILE (JSON lines).")
    ] = None,
    replay_file: Annotated[
        Path | None,
        typer.Option("--replay", help="Play back a --record trace, call for call, in order."),
    ] = None,
    output: Annotated[
        Path | None, typer.Option(help="Write the summary to FILE (.json or .csv).")
    ] = None,
    interval: Annotated[
        str, typer.Option(help="How often the display and the machine's counters update.")
    ] = "1s",
    cleanup: Annotated[
        bool,
        typer.Option(help="At the end, exit the processes and free the kernel objects left."),
    ] = True,
    clients: Annotated[
        int,
        typer.Option(
            "--clients",
            "-k",
            help="Client processes to run the simulated processes in (each its share; "
            "--ops and --in-flight are split in proportion). With --record FILE, "
            "one trace per client: FILE.0, FILE.1...",
        ),
    ] = 1,
) -> None:
    """Run simulated processes following workloads (seeded, replayable) against
    the running machine; a live display, then a summary."""
    try:
        duration_s = parse_duration(duration) if duration is not None else None
        interval_s = parse_duration(interval)
        if output is not None:
            output_format(output)
    except (ValueError, OutputError) as exc:
        raise fail(str(exc)) from None
    chosen: Mix | None = None
    trace = None
    config: LoadConfig | None = None
    if clients < 1:
        raise fail("--clients must be at least 1")
    if replay_file is not None:
        if clients > 1:
            raise fail("--replay plays a trace in one client: leave out --clients")
        try:
            trace = read_trace(replay_file)
        except TraceError as exc:
            raise fail(str(exc)) from None
    else:
        if ops is None and duration_s is None:
            raise fail("give --ops N or --duration TIME (or both)")
        try:
            chosen = load_mix(mix)
            config = LoadConfig(
                processes=processes,
                seed=seed,
                ops=ops,
                duration_s=duration_s,
                in_flight=in_flight,
                cleanup=cleanup,
            )
            if clients > 1:
                plan_clients(config, clients)
        except LoadFileError as exc:
            raise fail(str(exc)) from None
        except ValueError as exc:
            raise fail(str(exc)) from None
    addresses, profile = _addresses()
    stats = Stats()
    try:
        summary, session = asyncio.run(
            _run(
                addresses,
                profile,
                stats,
                chosen,
                config,
                trace,
                record=record,
                ops=ops,
                duration_s=duration_s,
                interval_s=interval_s,
                clients=clients,
            )
        )
    except grpc.aio.AioRpcError as exc:
        raise fail(f"{exc.code().name}: {exc.details()}") from None
    except (OSError, ClientError) as exc:
        raise fail(str(exc)) from None
    except (KeyboardInterrupt, Interrupted):
        if clients == 1:
            raise
        typer.echo("memsim: load: interrupted; the client processes were stopped", err=True)
        raise typer.Exit(130) from None
    sys.stdout.write(render_summary(summary))
    if output is not None:
        try:
            write_output(output, summary)
        except OSError as exc:
            raise fail(f"--output {output}: {exc.strerror or exc}") from None
    if session.stopped_by in ("failing", "failed"):
        raise fail(session.failure)


async def _run(
    addresses: dict[str, str],
    profile: str | None,
    stats: Stats,
    mix: Mix | None,
    config: LoadConfig | None,
    trace: Any,
    *,
    record: Path | None,
    ops: int | None,
    duration_s: float | None,
    interval_s: float,
    clients: int = 1,
) -> tuple[dict[str, Any], Session | ClientsRun]:
    async with contextlib.AsyncExitStack() as stack:
        channels = {
            name: await stack.enter_async_context(open_channel(address, deadline_s=CALL_DEADLINE_S))
            for name, address in addresses.items()
        }
        mmu = mmu_pb2_grpc.MmuStub(channels["mmu"])
        zone = ZoneClient(channels["zone"])
        policy = PolicyClient(channels["policy"])
        info = await machine_info(mmu, profile)
        if trace is not None:
            recorded = trace.header.get("page_size")
            if recorded is not None and recorded != info.page_size:
                raise OSError(
                    f"the trace was recorded on a machine with {recorded}-byte pages, "
                    f"this one has {info.page_size}"
                )
        backend = MachineBackend(mmu, SlabClient(channels["slab"]), info.page_size)
        kills_at_start = (await policy.stats()).processes_killed

        async def probe() -> tuple[int | None, int | None]:
            zones = await zone.zoneinfo()
            free = sum(z.free_pages for n in zones.nodes for z in n.zones) * info.page_size
            killed = (await policy.stats()).processes_killed - kills_at_start
            return free, killed

        title = (
            f"memsim load --replay ({len(trace.records)} calls)"
            if trace is not None
            else f"memsim load --mix {mix.name if mix else '?'}"
        )
        if clients > 1:
            title += f" ({clients} clients)"
        display = Display(stats, title, live=sys.stdout.isatty())
        if clients > 1:
            assert mix is not None
            assert config is not None
            header = _header(mix, config, info, None)
            try:
                run = await run_clients(
                    mix,
                    config,
                    clients,
                    addresses,
                    info,
                    stats,
                    header=header,
                    record=record,
                    probe=probe,
                    tick=display.tick,
                    interval_s=interval_s,
                    deadline_s=CALL_DEADLINE_S,
                )
            finally:
                display.close()
            summary = stats.summary(
                **header,
                clients=clients,
                stopped_by=run.stopped_by,
                workload_calls=run.issued,
                failure=run.failure,
                replay=False,
                per_client=run.clients,
            )
            return summary, run
        record_stream: IO[str] | None = None
        try:
            recorder = None
            if record is not None:
                record_stream = stack.enter_context(record.open("w", encoding="utf-8"))
                recorder = Recorder(record_stream, _header(mix, config, info, trace))
            if trace is not None:
                session = await replay(
                    trace,
                    backend,
                    stats,
                    ops=ops,
                    duration_s=duration_s,
                    recorder=recorder,
                    probe=probe,
                    tick=display.tick,
                    interval_s=interval_s,
                )
            else:
                assert mix is not None
                assert config is not None
                session = await run_load(
                    mix,
                    config,
                    backend,
                    info,
                    stats,
                    recorder=recorder,
                    probe=probe,
                    tick=display.tick,
                    interval_s=interval_s,
                )
        finally:
            display.close()
        summary = stats.summary(
            **_header(mix, config, info, trace),
            clients=1,
            stopped_by=session.stopped_by,
            # Calls the workloads chose (what --ops counts); "calls" adds the
            # clean-up's and those that exit what a dead process left.
            workload_calls=session.issued,
            failure=session.failure,
            replay=trace is not None,
        )
        return summary, session
    raise AssertionError("unreachable")


def _header(
    mix: Mix | None, config: LoadConfig | None, info: MachineInfo, trace: Any
) -> dict[str, Any]:
    if trace is not None:
        header = {k: v for k, v in trace.header.items() if k not in ("format", "version")}
        return {**header, "replayed": True}
    assert mix is not None
    assert config is not None
    return {
        "mix": mix.name,
        "mix_source": mix.source,
        "seed": config.seed,
        "processes": config.processes,
        "ops_limit": config.ops,
        "duration_limit_s": config.duration_s,
        "in_flight": config.in_flight,
        "page_size": info.page_size,
        "nommu": info.nommu,
    }
