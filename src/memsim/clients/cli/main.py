"""The memsim command."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Annotated

import grpc
import typer
from rich.console import Console
from rich.table import Table

from memsim.clients.cli.demo import run_demo
from memsim.clients.cli.machine import bring_up, running_machine, tear_down
from memsim.clients.cli.processes import LaunchError, check_serving, is_alive
from memsim.clients.cli.procfiles import PROC_FILES, Clients, free
from memsim.clients.cli.state import MachineState
from memsim.profiles.loader import ProfileError, available_profiles, load_profile
from memsim.runtime.channel import open_channel
from memsim.runtime.config import peer_address
from memsim.services.buddy.client import BuddyClient
from memsim.services.zone.client import ZoneClient

app = typer.Typer(
    help="memsim: the Linux 2.6 memory manager as gRPC services.",
    no_args_is_help=True,
    add_completion=False,
)


def fail(message: str) -> typer.Exit:
    typer.echo(f"memsim: {message}", err=True)
    return typer.Exit(1)


def _address(state: MachineState | None, name: str) -> str:
    """MEMSIM_<NAME>_ADDR if set, else the running machine's record."""
    if f"MEMSIM_{name.upper()}_ADDR" in os.environ:
        return peer_address(name)
    if state is None or name not in state.services:
        raise fail("no machine is running (start one with `memsim up -d`)")
    return state.services[name].address


def _read(produce: Callable[[Clients], Awaitable[str]], what: str) -> None:
    state = running_machine()
    _address(state, "buddy")  # fail early, and plainly, with no machine
    try:
        sys.stdout.write(asyncio.run(_with_clients(state, produce)))
    except grpc.aio.AioRpcError as exc:
        raise fail(f"{what}: {exc.code().name}: {exc.details()}") from None


@app.command()
def up(
    profile: Annotated[
        str, typer.Option(help="Machine profile: " + ", ".join(available_profiles()))
    ] = "x86_32",
    mem: Annotated[str | None, typer.Option(help="Memory size, e.g. 64M, 1G, 1T.")] = None,
    page_size: Annotated[str | None, typer.Option(help="Page size: 4K, 8K, 16K or 64K.")] = None,
    max_order: Annotated[int | None, typer.Option(help="MAX_ORDER of every zone.")] = None,
    detach: Annotated[
        bool,
        typer.Option(
            "--detach",
            "-d",
            help="Start in the background and return once every service is SERVING.",
        ),
    ] = False,
    demo: Annotated[bool, typer.Option(help="Run a short allocate/free demo once up.")] = False,
    ephemeral_ports: Annotated[
        bool,
        typer.Option(help="Let the OS choose every port (tests, several machines on one host)."),
    ] = False,
) -> None:
    """Start the machine's services on loopback (foreground until Ctrl-C, or -d)."""
    try:
        machine = load_profile(profile, mem=mem, page_size=page_size, max_order=max_order)
    except ProfileError as exc:
        raise fail(str(exc)) from None
    try:
        state = bring_up(machine, ephemeral_ports=ephemeral_ports, detached=detach)
    except LaunchError as exc:
        raise fail(str(exc)) from None
    print(f"memsim: machine {state.summary} is up")
    for record in state.services.values():
        print(
            f"  {record.name:8} {record.address:22} pid {record.pid:<8} "
            f"metrics http://{record.metrics_address}/metrics"
        )
    stop = None if detach else _StopRequest()
    if demo:
        asyncio.run(_with_clients(state, _demo))
    if stop is None:
        print("memsim: running in the background; stop it with `memsim down`")
        return
    print(
        "memsim: running in the foreground. Press Ctrl-C to stop "
        "(or run `memsim down` in another terminal).",
        flush=True,
    )
    _wait_foreground(state, stop)


async def _demo(clients: Clients) -> str:
    await run_demo(clients, print)
    return ""


async def _with_clients(
    state: MachineState | None, use: Callable[[Clients], Awaitable[str]]
) -> str:
    """Runs `use` with clients of the running machine's services."""
    async with (
        open_channel(_address(state, "buddy")) as buddy,
        open_channel(_address(state, "zone")) as zone,
    ):
        return await use(Clients(BuddyClient(buddy), ZoneClient(zone)))


class _StopRequest:
    """Ctrl-C or SIGTERM to a foreground `memsim up`: noted, acted on between steps."""

    def __init__(self) -> None:
        self.requested = False
        signal.signal(signal.SIGTERM, self._note)
        signal.signal(signal.SIGINT, self._note)

    def _note(self, signum: int, frame: object) -> None:
        self.requested = True


def _wait_foreground(state: MachineState, stop: _StopRequest) -> None:
    while not stop.requested:
        current = MachineState.load()
        if current is None or current.stopping:
            print("memsim: stopped by `memsim down`")
            return
        dead = [s for s in state.services.values() if not is_alive(s.pid)]
        if dead:
            names = ", ".join(f"{s.name} (log {s.log_file})" for s in dead)
            for line in tear_down(state):
                print(f"memsim: {line}")
            raise fail(f"service exited unexpectedly: {names}")
        time.sleep(0.2)
    print("\nmemsim: stopping")
    for line in tear_down(state):
        print(f"memsim: {line}")


@app.command()
def down() -> None:
    """Stop the machine that `memsim up` started, by the pids it recorded."""
    state = MachineState.load()
    if state is None:
        print("memsim: no machine is running")
        return
    try:
        state.stopping = True
        state.save()
        for line in tear_down(state):
            print(f"memsim: {line}")
    except LaunchError as exc:
        raise fail(str(exc)) from None


@app.command()
def status() -> None:
    """Show each service of the running machine, its address and its health."""
    state = running_machine()
    if state is None:
        raise fail("no machine is running")
    table = Table(title=f"machine {state.summary}")
    for column in ("service", "pid", "address", "metrics", "health"):
        table.add_column(column)
    healthy = True
    for record in state.services.values():
        health = asyncio.run(check_serving(record.address)) if is_alive(record.pid) else "exited"
        healthy &= health == "SERVING"
        table.add_row(
            record.name,
            str(record.pid),
            record.address,
            f"http://{record.metrics_address}/metrics",
            health,
        )
    Console(highlight=False).print(table)
    if not healthy:
        raise typer.Exit(1)


@app.command("cat")
def cat(path: Annotated[str, typer.Argument(help="One of: " + ", ".join(PROC_FILES))]) -> None:
    """Print a /proc or debugfs file of the machine in the kernel's own format."""
    produce = PROC_FILES.get(path)
    if produce is None:
        raise fail(f"cat: {path}: No such file (memsim serves {', '.join(PROC_FILES)})")
    _read(produce, f"cat: {path}")


@app.command("free")
def free_command() -> None:
    """Memory in KiB as free(1) shows it: total, used and free so far."""
    _read(free, "free")
