"""`memsim plot`: pictures of the running machine, as PNG files.

memory-map asks every service which frames it holds (buddy's free lists, the
zone's pcp lists and spans, the MMU's frames, the slab's pages) and draws one
square per frame coloured by what holds it (memsim.plots.memory_map).
buddyinfo samples /proc/buddyinfo's numbers over a while and draws free
blocks per order per zone over time (memsim.plots.buddyinfo).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import grpc
import typer

from memsim.clients.cli.durations import duration_seconds
from memsim.clients.cli.machine import running_machine
from memsim.clients.cli.nodes import BuddyNodes, boot_profile, buddy_over, node_services, zone_over
from memsim.runtime.channel import DefaultDeadline
from memsim.runtime.config import peer_address
from memsim.services.buddy.client import BuddyClient
from memsim.services.mmu.client import MmuClient
from memsim.services.slab.client import SlabClient
from memsim.services.zone.client import ZoneClient
from memsim.services.zone.router import ZoneRouter

if TYPE_CHECKING:  # numpy and matplotlib are imported when a picture is drawn
    from memsim.plots.frames import FrameMap

T = TypeVar("T")
plot_app = typer.Typer(help="Pictures of the running machine, as PNG files.", no_args_is_help=True)
# Reads of a machine that keeps changing under them (a page moving from a pcp
# list to a process between two answers) are tried again this many times.
ATTEMPTS = 5
RETRY_PAUSE_S = 0.2
DEADLINE_S = 30.0
# A frame map of a large, fragmented machine is a big answer.
MAX_MESSAGE_BYTES = 256 << 20
MAX_DURATION_S = 3600.0
MAX_SAMPLES = 10_000


def fail(message: str) -> typer.Exit:
    typer.echo(f"memsim: {message}", err=True)
    return typer.Exit(1)


def parse_duration(text: str) -> float:
    """ "10s", "500ms", "2m", "1h" or plain seconds ("0.5"); at least 10 ms."""
    seconds = duration_seconds(text.strip(), "10s, 500ms or 2m")
    if not seconds >= 0.01:  # also refuses nan
        raise ValueError(f"{text!r} is shorter than 10ms")
    if seconds == float("inf"):
        raise ValueError(f"{text!r} is not a finite duration")
    return seconds


def check_output(out: Path) -> None:
    """ValueError unless a PNG can be written at out."""
    if out.is_dir():
        raise ValueError(f"{out} is a directory")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise ValueError(f"{parent} is not a directory")
    if not os.access(parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise ValueError(f"{out} is not writable")


def _address(name: str) -> str:
    """MEMSIM_<NAME>_ADDR if set, else the running machine's record."""
    if f"MEMSIM_{name.upper()}_ADDR" in os.environ:
        return peer_address(name)
    state = running_machine()
    if state is None or name not in state.services:
        raise fail("no machine is running (start one with `memsim up -d`)")
    return state.services[name].address


def _channel(address: str) -> grpc.aio.Channel:
    options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
    interceptors: list[Any] = [DefaultDeadline(DEADLINE_S)]
    return grpc.aio.insecure_channel(address, options=options, interceptors=interceptors)


# A service's channel, or (zone and buddy of a machine with one of each per
# node) every node's by node.
Dialled = grpc.aio.Channel | dict[int, grpc.aio.Channel]


def _addresses(name: str) -> str | dict[int, str]:
    """_address, or every node's address of a per-node service (zone-0, zone-1)."""
    if f"MEMSIM_{name.upper()}_ADDR" not in os.environ:
        state = running_machine()
        if state is not None and name not in state.services:
            per_node = node_services(state, name)
            if per_node:
                return per_node
    return _address(name)


def _buddy(dialled: Dialled) -> BuddyClient | BuddyNodes:
    if isinstance(dialled, dict):
        return buddy_over(list(dialled.values()))
    return BuddyClient(dialled)


def _zone(dialled: Dialled) -> ZoneClient | ZoneRouter:
    if isinstance(dialled, dict):
        state = running_machine()
        assert state is not None
        return zone_over(boot_profile(state), dialled)
    return ZoneClient(dialled)


def _run(what: str, names: tuple[str, ...], use: Callable[..., Awaitable[T]]) -> T:
    """use(*channels) on channels to the named services, with errors as messages."""
    from memsim.plots.frames import FrameMapError

    addresses = [_addresses(name) for name in names]

    async def main() -> T:
        channels: list[Dialled] = [
            {n: _channel(x) for n, x in a.items()} if isinstance(a, dict) else _channel(a)
            for a in addresses
        ]
        try:
            return await use(*channels)
        finally:
            for dialled in channels:
                for channel in dialled.values() if isinstance(dialled, dict) else [dialled]:
                    await channel.close(None)

    try:
        return asyncio.run(main())
    except grpc.aio.AioRpcError as exc:
        raise fail(f"plot {what}: {exc.code().name}: {exc.details()}") from None
    except FrameMapError as exc:
        raise fail(f"plot {what}: {exc}") from None
    except OSError as exc:
        raise fail(f"plot {what}: {exc}") from None


async def read_frame_map(
    buddy: BuddyClient | BuddyNodes, zone: ZoneClient | ZoneRouter, mmu: MmuClient, slab: SlabClient
) -> FrameMap:
    """Every frame's holder, read again while the answers do not add up."""
    from memsim.plots.answers import snapshot_from_answers
    from memsim.plots.frames import FrameMapError, build_frame_map

    problem: FrameMapError | None = None
    for attempt in range(ATTEMPTS):
        if attempt:
            await asyncio.sleep(RETRY_PAUSE_S)
        mmu_frames = await mmu.mmu_frames()
        slab_frames = await slab.slab_frames()
        zone_frames = await zone.zone_frames()
        free_blocks = await buddy.free_blocks()
        try:
            return build_frame_map(
                snapshot_from_answers(zone_frames, free_blocks, mmu_frames, slab_frames)
            )
        except FrameMapError as exc:
            problem = exc
    raise FrameMapError(
        f"the services' answers did not add up in {ATTEMPTS} reads (the machine may be "
        f"changing too fast; try again when it is quieter): {problem}"
    )


@plot_app.command("memory-map")
def memory_map_command(
    out: Annotated[Path, typer.Argument(help="The PNG to write.")],
) -> None:
    """A map of physical memory now: every frame coloured by what holds it
    (free, user page, page table, slab, vmalloc, reserved)."""
    try:
        check_output(out)
    except ValueError as exc:
        raise fail(f"plot memory-map: {exc}") from None

    from memsim.plots.memory_map import format_size, render_memory_map

    async def draw(b: Dialled, z: Dialled, m: grpc.aio.Channel, s: grpc.aio.Channel) -> str:
        fmap = await read_frame_map(_buddy(b), _zone(z), MmuClient(m), SlabClient(s))
        layout = render_memory_map(fmap, out)
        return (
            f"memsim: wrote {out} ({layout.width}x{layout.height} px, "
            f"{fmap.total_pfns:,} frames of {format_size(fmap.page_size)})"
        )

    typer.echo(_run("memory-map", ("buddy", "zone", "mmu", "slab"), draw))


@plot_app.command("buddyinfo")
def buddyinfo_command(
    out: Annotated[Path, typer.Argument(help="The PNG to write.")],
    duration: Annotated[
        str, typer.Option(help="How long to sample: 10s, 500ms, 2m (at most 1 hour).")
    ] = "10s",
    interval: Annotated[str, typer.Option(help="Time between samples (at least 10ms).")] = "0.5s",
) -> None:
    """Free blocks per order per zone over DURATION: /proc/buddyinfo sampled
    every INTERVAL, one panel per zone, one line per order."""
    try:
        every = parse_duration(interval)
    except ValueError as exc:
        raise fail(f"plot buddyinfo: --interval: {exc}") from None
    try:
        total = parse_duration(duration)
    except ValueError as exc:
        raise fail(f"plot buddyinfo: --duration: {exc}") from None
    if total > MAX_DURATION_S:
        raise fail(f"plot buddyinfo: --duration {duration} is longer than 1 hour")
    if total < every:
        raise fail(f"plot buddyinfo: --duration {duration} is shorter than --interval {interval}")
    samples = int(total / every + 1e-9) + 1
    if samples > MAX_SAMPLES:
        raise fail(
            f"plot buddyinfo: {samples} samples is too many (at most {MAX_SAMPLES}): "
            "give a longer --interval"
        )
    try:
        check_output(out)
    except ValueError as exc:
        raise fail(f"plot buddyinfo: {exc}") from None

    from memsim.plots.buddyinfo import BuddySeries, render_buddyinfo

    async def sample(b: Dialled, z: Dialled) -> str:
        buddy, zone = _buddy(b), _zone(z)
        info = await zone.zoneinfo()
        keys = [(n.node, zz.ref.zone) for n in info.nodes for zz in n.zones if zz.managed_pages]
        series = BuddySeries(keys, info.page_size_bytes or 4096)
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(samples):
            await asyncio.sleep(max(0.0, start + i * every - loop.time()))
            now = loop.time() - start
            rows = await buddy.buddyinfo()
            series.add(now, [(r.arena.node, r.arena.zone, list(r.nr_free)) for r in rows])
        title = f"Free blocks per order of {info.profile} (/proc/buddyinfo)"
        width, height = render_buddyinfo(series, out, title)
        return f"memsim: wrote {out} ({width}x{height} px, {samples} samples)"

    typer.echo(_run("buddyinfo", ("buddy", "zone"), sample))
