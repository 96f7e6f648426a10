"""The memsim command."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated

import grpc
import typer
from rich.console import Console
from rich.table import Table

from memsim.clients.cli import procfs_export, procwrite, sysctl
from memsim.clients.cli.credentials import admin_token
from memsim.clients.cli.demo import run_demo
from memsim.clients.cli.durations import UNITS, duration_seconds
from memsim.clients.cli.load import load_command
from memsim.clients.cli.machine import (
    bring_up,
    default_swap_bytes,
    reboot,
    running_machine,
    tear_down,
)
from memsim.clients.cli.nodes import boot_profile, buddy_over, is_split, node_services, zone_over
from memsim.clients.cli.plot import plot_app
from memsim.clients.cli.processes import LaunchError, check_serving, is_alive
from memsim.clients.cli.procfiles import (
    FILE_NAMES,
    Clients,
    dmesg,
    free,
    proc_file,
    ps,
    slabtop,
)
from memsim.clients.cli.state import MachineState, run_dir
from memsim.profiles.loader import ProfileError, available_profiles, load_profile
from memsim.profiles.sizes import format_size, parse_size
from memsim.runtime.channel import open_channel
from memsim.runtime.config import peer_address
from memsim.services.buddy.client import BuddyClient
from memsim.services.mmu.client import MmuClient
from memsim.services.mmu.process import SIGNALS
from memsim.services.policy.client import PolicyClient
from memsim.services.slab.client import SlabClient
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
    if state is not None and name not in state.services and f"{name}-0" in state.services:
        name = f"{name}-0"  # a machine with a zone and buddy per node
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
    swap: Annotated[
        str | None,
        typer.Option(help="Size of the MMU's swap area, e.g. 512M or 0 [default: half of --mem]."),
    ] = None,
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
    split_nodes: Annotated[
        bool,
        typer.Option(
            help="A zone and a buddy service per node (zone-0, buddy-0, ...) instead of one each."
        ),
    ] = False,
) -> None:
    """Start the machine's services on loopback (foreground until Ctrl-C, or -d)."""
    try:
        machine = load_profile(profile, mem=mem, page_size=page_size, max_order=max_order)
    except ProfileError as exc:
        raise fail(str(exc)) from None
    try:
        swap_bytes = default_swap_bytes(machine) if swap is None else parse_size(swap)
    except ValueError as exc:
        raise fail(f"--swap: {exc}") from None
    try:
        state = bring_up(
            machine,
            ephemeral_ports=ephemeral_ports,
            detached=detach,
            swap_bytes=swap_bytes,
            split_nodes=split_nodes,
        )
    except LaunchError as exc:
        raise fail(str(exc)) from None
    print(f"memsim: machine {state.summary} is up")
    for record in state.services.values():
        print(
            f"  {record.name:8} {record.address:22} pid {record.pid:<8} "
            f"metrics http://{record.metrics_address}/metrics"
        )
    print(
        f"  swap     {format_size(swap_bytes) if swap_bytes else 'none'}, file in {run_dir()}/data"
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
    if state is not None and is_split(state):
        return await _with_split_clients(state, use)
    async with (
        open_channel(_address(state, "buddy")) as buddy,
        open_channel(_address(state, "zone")) as zone,
        open_channel(_address(state, "mmu")) as mmu,
        open_channel(_address(state, "slab")) as slab,
        open_channel(_address(state, "policy")) as policy,
    ):
        return await use(
            Clients(
                BuddyClient(buddy),
                ZoneClient(zone),
                MmuClient(mmu),
                SlabClient(slab),
                PolicyClient(policy),
            )
        )


async def _with_split_clients(state: MachineState, use: Callable[[Clients], Awaitable[str]]) -> str:
    """`use` on a machine with a zone and a buddy per node: their answers merged."""
    async with contextlib.AsyncExitStack() as stack:

        async def dial(address: str) -> grpc.aio.Channel:
            return await stack.enter_async_context(open_channel(address))

        zones = {n: await dial(a) for n, a in node_services(state, "zone").items()}
        buddies = [await dial(a) for a in node_services(state, "buddy").values()]
        return await use(
            Clients(
                buddy_over(buddies),
                zone_over(boot_profile(state), zones),
                MmuClient(await dial(_address(state, "mmu"))),
                SlabClient(await dial(_address(state, "slab"))),
                PolicyClient(await dial(_address(state, "policy"))),
            )
        )


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
        if current.rebooting:  # `memsim reboot` stops and starts them: wanted
            time.sleep(0.2)
            continue
        state = current  # after a reboot: the new pids
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
def cat(
    path: Annotated[
        str, typer.Argument(help="One of: " + ", ".join(FILE_NAMES) + " (PID: a process id)")
    ],
) -> None:
    """Print a /proc or debugfs file of the machine in the kernel's own format."""
    produce = proc_file(path)
    if produce is None:
        raise fail(f"cat: {path}: No such file (memsim serves {', '.join(FILE_NAMES)})")
    _read(produce, f"cat: {path}")


@app.command("free")
def free_command(
    bytes_: Annotated[bool, typer.Option("-b", "--bytes", help="Show bytes.")] = False,
    kilo: Annotated[bool, typer.Option("-k", "--kilo", help="Show KiB (the default).")] = False,
    mega: Annotated[bool, typer.Option("-m", "--mega", help="Show MiB.")] = False,
    giga: Annotated[bool, typer.Option("-g", "--giga", help="Show GiB.")] = False,
    human: Annotated[
        bool, typer.Option("-h", "--human", help="Show B, K, M, G or T, whichever fits.")
    ] = False,
) -> None:
    """Used and free memory and swap as free(1) of procps shows them."""
    chosen = [u for u, on in zip("bkmgh", (bytes_, kilo, mega, giga, human), strict=True) if on]
    if len(chosen) > 1:
        raise fail("free: give at most one of -b, -k, -m, -g and -h")
    unit = chosen[0] if chosen else "k"

    async def produce(c: Clients) -> str:
        return await free(c, unit)

    _read(produce, "free")


@app.command("slabtop")
def slabtop_command(
    sort: Annotated[
        str,
        typer.Option(
            "--sort",
            "-s",
            help="Sort by: a active objects, b objects per slab, c cache size, l slabs, "
            "v active slabs, n name, o objects (default), p pages per slab, s object size, "
            "u use.",
        ),
    ] = "o",
    limit: Annotated[int | None, typer.Option("--lines", "-n", help="Caches to show.")] = None,
) -> None:
    """slabtop --once: the slab caches with totals, largest first."""
    if sort not in "abclvnopsu" or len(sort) != 1:
        raise fail(f"slabtop: unknown sort key {sort!r} (keys: abclvnopsu)")
    if limit is not None and limit < 1:
        raise fail(f"slabtop: --lines must be at least 1, not {limit}")

    async def produce(c: Clients) -> str:
        return await slabtop(c, sort, limit)

    _read(produce, "slabtop")


@app.command("dmesg")
def dmesg_command() -> None:
    """The kernel log: slab corruption reports and the like."""
    _read(dmesg, "dmesg")


@app.command("ps")
def ps_command() -> None:
    """Every live process as `ps aux` shows it: PID, USER, VSZ and RSS in KiB, %MEM, COMMAND."""
    _read(ps, "ps")


def _signal_number(spec: str) -> int:
    """A name of SIGNALS, or a number that goes to the MMU as it is."""
    if spec.isdigit():
        return int(spec)
    number = SIGNALS.get(spec.upper())
    if number is None:
        raise fail(
            f"kill: {spec}: invalid signal specification (memsim delivers KILL (9) and SEGV (11))"
        )
    return number


@app.command(
    "kill",
    context_settings={"ignore_unknown_options": True},
)
def kill_command(
    args: Annotated[
        list[str],
        typer.Argument(
            help="[-SIGNAL | -s SIGNAL] PID...: SIGNAL is 9, KILL, SIGKILL, 11, SEGV or SIGSEGV.",
            show_default=False,
        ),
    ],
) -> None:
    """Send a signal to processes of the machine, as kill(1).

    memsim delivers only SIGKILL and SIGSEGV, so the default is KILL (kill(1)'s
    is TERM). init (pid 1) cannot be killed. On an error the MMU's message is
    printed and the exit status is 1.
    """
    words = list(args)
    signal_number = 9
    if words and words[0] == "-s":
        if len(words) < 2:
            raise fail("kill: -s needs a signal name or number")
        signal_number = _signal_number(words[1])
        words = words[2:]
    elif words and words[0].startswith("-") and words[0] != "--":
        signal_number = _signal_number(words[0][1:])
        words = words[1:]
    if words and words[0] == "--":
        words = words[1:]
    if not words:
        raise fail("kill: usage: memsim kill [-SIGNAL | -s SIGNAL] PID...")
    pids = []
    for word in words:
        if not word.isdigit() or int(word) >= 1 << 31:
            raise fail(f"kill: {word}: arguments must be process ids")
        pids.append(int(word))

    async def send(c: Clients) -> str:
        errors = []
        for pid in pids:
            try:
                await c.mmu.kill(pid, signal_number)
            except grpc.aio.AioRpcError as exc:
                errors.append(f"memsim: kill: ({pid}) - {exc.details()}")
        return "\n".join(errors)

    state = running_machine()
    _address(state, "mmu")
    errors = asyncio.run(_with_clients(state, send))
    if errors:
        typer.echo(errors, err=True)
        raise typer.Exit(1)


@app.command("sysctl")
def sysctl_command(
    names: Annotated[
        list[str] | None, typer.Argument(help="vm.NAME to show, or vm.NAME=VALUE to write.")
    ] = None,
    show_all: Annotated[bool, typer.Option("--all", "-a", help="Every sysctl.")] = False,
    values_only: Annotated[bool, typer.Option("--values", "-n", help="Values only.")] = False,
    write: Annotated[
        bool, typer.Option("--write", "-w", help="Every argument is NAME=VALUE.")
    ] = False,
    load: Annotated[
        str | None, typer.Option("--load", "-p", help="Apply a sysctl.conf file.")
    ] = None,
) -> None:
    """sysctl(8) for the machine's vm.* sysctls; writing needs the admin
    credential (`memsim up` keeps it in the run directory)."""
    args = names or []
    if load is not None:
        try:
            with open(load, encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            raise fail(f'sysctl: cannot open "{load}": {exc.strerror}') from None

        async def produce(c: Clients) -> str:
            return await sysctl.load(c.policy, text, load, admin_token())

    elif show_all:

        async def produce(c: Clients) -> str:
            return await sysctl.show_all(c.policy, values_only)

    elif not args:
        raise fail("sysctl: give -a, -p FILE, NAME or -w NAME=VALUE")
    elif write or any("=" in arg for arg in args):
        if not all("=" in arg for arg in args):
            bad = next(arg for arg in args if "=" not in arg)
            raise fail(f'sysctl: "{bad}" must be of the form name=value')

        async def produce(c: Clients) -> str:
            return await sysctl.write(c.policy, args, admin_token(), values_only)

    else:

        async def produce(c: Clients) -> str:
            return await sysctl.show(c.policy, args, values_only)

    state = running_machine()
    _address(state, "policy")
    try:
        sys.stdout.write(asyncio.run(_with_clients(state, produce)))
    except grpc.aio.AioRpcError as exc:
        # The policy service words its refusals as sysctl(8) does.
        typer.echo(exc.details(), err=True)
        raise typer.Exit(1) from None


@app.command("reboot")
def reboot_command() -> None:
    """Boot the running machine again: every service restarted in its boot
    state (after a kernel panic, the only way on)."""
    state = running_machine()
    if state is None:
        raise fail("no machine is running (start one with `memsim up -d`)")
    if not admin_token():
        raise fail("reboot: permission denied (the admin credential is not readable)")
    try:
        for line in reboot(state):
            print(f"memsim: {line}")
    except LaunchError as exc:
        raise fail(f"reboot: {exc}") from None
    print(f"memsim: machine {state.summary} is up again")


procfs_app = typer.Typer(
    help="The simulated machine's /proc for other tools.", no_args_is_help=True
)
app.add_typer(procfs_app, name="procfs")
app.add_typer(plot_app, name="plot")

# An export's period: ms, s or m (an hour between exports is no export).
INTERVAL_UNITS = {unit: UNITS[unit] for unit in ("ms", "s", "m")}


def parse_interval(text: str) -> float:
    """ "1s", "500ms", "2m" or plain seconds ("0.5"); at least 10 ms."""
    seconds = duration_seconds(text, "1s or 500ms", INTERVAL_UNITS)
    if not seconds >= 0.01:
        raise ValueError(f"{text!r} is shorter than 10ms")
    return seconds


@procfs_app.command("export")
def procfs_export_command(
    directory: Annotated[
        Path, typer.Argument(help="Where the files go (node_exporter's --path.procfs).")
    ],
    interval: Annotated[
        str | None,
        typer.Option(help="Export again every INTERVAL (1s, 500ms) until stopped; once without."),
    ] = None,
) -> None:
    """Write meminfo, buddyinfo, zoneinfo, vmstat, slabinfo and vmallocinfo of
    the running machine into DIRECTORY, each file replaced atomically."""
    try:
        every = None if interval is None else parse_interval(interval)
    except ValueError as exc:
        raise fail(f"procfs export: --interval: {exc}") from None
    state = running_machine()
    _address(state, "buddy")
    stop = _StopRequest()

    async def produce(c: Clients) -> str:
        written = await procfs_export.export(c, directory)
        while every is not None and not stop.requested:
            await asyncio.sleep(every)
            if not stop.requested:
                await procfs_export.export(c, directory)
        return f"memsim: wrote {', '.join(written)} into {directory}\n"

    try:
        sys.stdout.write(asyncio.run(_with_clients(state, produce)))
    except grpc.aio.AioRpcError as exc:
        raise fail(f"procfs export: {exc.code().name}: {exc.details()}") from None
    except OSError as exc:
        raise fail(f"procfs export: {exc}") from None


app.command("load")(load_command)


@app.command("write", context_settings={"ignore_unknown_options": True})
def write_command(
    path: Annotated[
        str, typer.Argument(help="/proc/PID/oom_adj, oom_score_adj or /proc/sys/vm/NAME")
    ],
    value: Annotated[str, typer.Argument(help="What is written, as with echo VALUE > PATH.")],
) -> None:
    """echo VALUE > PATH, as root (the machine's admin credential)."""
    write = procwrite.writer(path)
    if write is None:
        raise fail(f"write: {path}: not a file memsim can write (oom_adj, oom_score_adj, sys/vm)")

    async def produce(c: Clients) -> str:
        await write(c, value)
        return ""

    state = running_machine()
    _address(state, "policy")
    try:
        asyncio.run(_with_clients(state, produce))
    except grpc.aio.AioRpcError as exc:
        raise fail(f"write: {exc.details()}") from None
