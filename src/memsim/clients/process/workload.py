"""python -m memsim.clients.process.workload --mmu ADDRESS --processes N --seconds S

A small, bounded load for a deployed machine (the compose load service and
the Kubernetes Job): processes spawned through the process client library,
each of which maps memory, touches half of it, writes all of it, forks a
child that writes over the parent's pages (copy-on-write) while the parent
checks that its own bytes are unchanged, and exits with its child. It stops
after N processes or S seconds, whichever comes first, and prints one line.

A refusal a program could meet on a loaded machine (ENOMEM, a process killed
by the OOM killer, SIGSEGV) is counted, not fatal. A transport failure (the
MMU unreachable) or a parent whose bytes changed under it is: exit status 1.

`memsim load` (issue 9) replaces this with seeded, replayable workloads.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from memsim.clients.process.errors import ProcessError
from memsim.clients.process.process import Faults, Process
from memsim.profiles.sizes import format_size
from memsim.runtime.channel import open_channel
from memsim.runtime.config import ConfigError, parse_address

SERVING = health_pb2.HealthCheckResponse.SERVING


@dataclass(frozen=True)
class WorkloadConfig:
    processes: int = 10
    seconds: float = 60.0
    # Pages each process maps, and processes running at once.
    pages: int = 16
    concurrency: int = 4

    def __post_init__(self) -> None:
        if self.processes < 0 or self.seconds < 0:
            raise ValueError("processes and seconds must not be negative")
        if self.pages < 1 or self.concurrency < 1:
            raise ValueError("pages and concurrency must be at least 1")


@dataclass
class Summary:
    processes: int = 0  # spawned by the workload (forked children not counted)
    forks: int = 0
    completed: int = 0  # processes that ran their whole round
    faults: Faults = field(default_factory=Faults)
    bytes_written: int = 0
    # Refusals by exception name (OutOfMemory, ProcessGone, SegmentationFault...).
    errors: Counter[str] = field(default_factory=Counter)
    # Parents that read back other bytes than they wrote: the machine is broken.
    corrupted: int = 0
    elapsed_s: float = 0.0
    stopped_by: str = "count"

    @property
    def ok(self) -> bool:
        return self.corrupted == 0

    def line(self) -> str:
        errors = ", ".join(f"{n} {name}" for name, n in sorted(self.errors.items())) or "none"
        return (
            f"workload: {self.processes} processes, {self.forks} forks, "
            f"{self.completed} completed in {self.elapsed_s:.1f} s (stopped by {self.stopped_by}); "
            f"faults {self.faults.minor} minor, {self.faults.major} major; "
            f"{format_size(self.bytes_written)} written; errors: {errors}; "
            f"corrupted: {self.corrupted}"
        )


def _pattern(index: int, length: int, salt: int) -> bytes:
    """Bytes a process writes: different for every process and for its child."""
    seed = bytes((index * 31 + salt + i) % 251 for i in range(251))
    return (seed * (length // len(seed) + 1))[:length]


async def _one_process(channel: grpc.aio.Channel, index: int, pages: int, s: Summary) -> None:
    try:
        proc = await Process.spawn(channel, f"load-{index}")
    except ProcessError as exc:  # e.g. no memory for its task_struct
        s.errors[type(exc).__name__] += 1
        return
    s.processes += 1
    try:
        length = pages * await proc.page_size()
        address = await proc.mmap(length)
        # (Each result awaited before it is added: `s.faults += await ...`
        # would read s.faults before the await and lose the other workers' counts.)
        faults = await proc.touch(address, length // 2)
        mine = _pattern(index, length, 0)
        faults += await proc.write(address, mine)
        s.faults += faults
        s.bytes_written += length
        child = await proc.fork(f"load-{index}-child")
        s.forks += 1
        async with child:
            faults = await child.write(address, _pattern(index, length, 1))
            s.faults += faults
            s.bytes_written += length
            if await proc.read(address, length) != mine:
                s.corrupted += 1
        await proc.munmap(address, length)
        s.completed += 1
    except ProcessError as exc:
        s.errors[type(exc).__name__] += 1
    finally:
        if proc.alive:
            try:
                await proc.exit()
            except ProcessError as exc:  # killed meanwhile
                s.errors[type(exc).__name__] += 1


async def run_workload(channel: grpc.aio.Channel, config: WorkloadConfig) -> Summary:
    """Runs the workload on the MMU behind channel; what it did."""
    summary = Summary()
    started = time.monotonic()
    deadline = started + config.seconds
    next_index = 0

    def claim() -> int | None:
        nonlocal next_index
        if next_index >= config.processes:
            return None
        if time.monotonic() >= deadline:
            summary.stopped_by = "time"
            return None
        next_index += 1
        return next_index

    async def worker() -> None:
        while (index := claim()) is not None:
            await _one_process(channel, index, config.pages, summary)

    await asyncio.gather(*(worker() for _ in range(config.concurrency)))
    summary.elapsed_s = time.monotonic() - started
    return summary


async def wait_for_mmu(channel: grpc.aio.Channel, wait_s: float) -> bool:
    """True once the MMU's health service says SERVING, False after wait_s."""
    deadline = time.monotonic() + wait_s
    stub = health_pb2_grpc.HealthStub(channel)
    while True:
        try:
            response = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2.0)
            if response.status == SERVING:
                return True
        except grpc.aio.AioRpcError:
            pass
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(1.0)


async def _main(address: str, config: WorkloadConfig, wait_s: float) -> int:
    async with open_channel(address) as channel:
        if not await wait_for_mmu(channel, wait_s):
            print(f"workload: the MMU at {address} is not serving", file=sys.stderr)
            return 1
        try:
            summary = await run_workload(channel, config)
        except grpc.aio.AioRpcError as exc:
            print(f"workload: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    print(summary.line())
    return 0 if summary.ok else 1


def _address(value: str) -> str:
    try:
        parse_address(value, "--mmu")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def build_parser() -> argparse.ArgumentParser:
    defaults = WorkloadConfig()
    parser = argparse.ArgumentParser(
        prog="python -m memsim.clients.process.workload",
        description="A bounded load of processes that map, touch, write, fork and exit.",
    )
    parser.add_argument("--mmu", required=True, type=_address, help="the MMU's host:port")
    parser.add_argument("--processes", type=int, default=defaults.processes, metavar="N")
    parser.add_argument("--seconds", type=float, default=defaults.seconds, metavar="S")
    parser.add_argument("--pages", type=int, default=defaults.pages, help="pages each maps")
    parser.add_argument(
        "--concurrency", type=int, default=defaults.concurrency, help="processes at once"
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long to wait for the MMU to serve before giving up (default 30)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = WorkloadConfig(args.processes, args.seconds, args.pages, args.concurrency)
    except ValueError as exc:
        parser.error(str(exc))
    return asyncio.run(_main(args.mmu, config, args.wait))


if __name__ == "__main__":
    sys.exit(main())
