"""The bounded load client (python -m memsim.clients.process.workload) over a
real buddy, zone and MMU in process: it runs to its bounds, every process it
made is gone afterwards, and the command prints its one line."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from memsim.clients.process.workload import WorkloadConfig, main, run_workload
from memsim.mmu.v1 import mmu_pb2 as pb
from memsim.mmu.v1 import mmu_pb2_grpc
from memsim.profiles.loader import load_profile
from memsim.runtime.channel import open_channel
from memsim.runtime.server import start_server
from memsim.services.mmu.config import MmuConfig
from memsim.services.mmu.server import mmu_service
from memsim.services.zone.config import ZoneConfig
from memsim.services.zone.server import zone_service
from tests.integration.conftest import BuddyHarness, MmuStack, mmu_stack

PAGE = 4096


@pytest_asyncio.fixture
async def stack(buddy: BuddyHarness, tmp_path: Path) -> AsyncIterator[MmuStack]:
    """x86_32 with 64 MiB of RAM and 16 MiB of swap."""
    async with mmu_stack(buddy, tmp_path, swap_bytes=16 << 20) as stack:
        yield stack


async def live_processes(stack: MmuStack) -> list[str]:
    stub = mmu_pb2_grpc.MmuStub(stack.mmu_channel)
    listed = await stub.ListProcesses(pb.ListProcessesRequest())
    return [p.name for p in listed.processes if p.pid != 1 and p.state not in ("X", "Z")]


async def test_runs_to_its_count_and_leaves_nothing_behind(stack: MmuStack) -> None:
    boot = await stack.buddy_state()
    summary = await run_workload(
        stack.mmu_channel, WorkloadConfig(processes=6, seconds=60, pages=8, concurrency=3)
    )
    assert (summary.processes, summary.forks, summary.completed) == (6, 6, 6)
    assert summary.stopped_by == "count"
    assert summary.errors == {}
    assert summary.corrupted == 0
    assert summary.ok
    # Each process: half its pages touched, the other half faulted by the
    # write; its child's write copies every page (copy-on-write).
    assert summary.faults.minor == 6 * (8 + 8)
    assert summary.faults.major == 0
    assert summary.bytes_written == 6 * 2 * 8 * PAGE
    assert await live_processes(stack) == []
    assert await stack.buddy_state() == boot
    await stack.buddy.assert_sound()


async def test_stops_at_its_time_bound(stack: MmuStack) -> None:
    summary = await run_workload(
        stack.mmu_channel, WorkloadConfig(processes=1_000_000, seconds=1.0, concurrency=2)
    )
    assert summary.stopped_by == "time"
    assert 0 < summary.processes < 1_000_000
    assert summary.elapsed_s < 30
    assert summary.completed == summary.processes
    assert await live_processes(stack) == []


async def test_zero_seconds_starts_nothing(stack: MmuStack) -> None:
    summary = await run_workload(stack.mmu_channel, WorkloadConfig(processes=5, seconds=0))
    assert (summary.processes, summary.stopped_by) == (0, "time")


async def test_memory_refusals_are_counted_not_fatal(buddy: BuddyHarness, tmp_path: Path) -> None:
    # 8 MiB of RAM and no swap: 512 pages a process cannot all fit at once.
    async with mmu_stack(buddy, tmp_path, swap_bytes=0, mem="8M") as stack:
        summary = await run_workload(
            stack.mmu_channel, WorkloadConfig(processes=4, seconds=60, pages=512, concurrency=4)
        )
        assert summary.errors, summary.line()
        assert set(summary.errors) <= {"OutOfMemory", "ProcessGone"}
        assert summary.corrupted == 0
        assert summary.completed + sum(summary.errors.values()) >= summary.processes
        assert await live_processes(stack) == []


@pytest_asyncio.fixture
async def mmu_address(buddy: BuddyHarness, tmp_path: Path) -> AsyncIterator[str]:
    """Zone and MMU servers in process (x86_32, 64 MiB): where the MMU listens."""
    profile = load_profile("x86_32", mem="64M")
    zone = await start_server(
        zone_service(ZoneConfig(profile, buddy.running.address)), "127.0.0.1:0", None
    )
    config = MmuConfig(profile, zone.address, swap_bytes=0, data_dir=tmp_path)
    mmu = await start_server(mmu_service(config), "127.0.0.1:0", None)
    try:
        yield mmu.address
    finally:
        await mmu.stop(0)
        await zone.stop(0)


async def test_the_command_prints_one_line(mmu_address: str) -> None:
    address = mmu_address
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "memsim.clients.process.workload",
        "--mmu",
        address,
        "--processes",
        "3",
        "--seconds",
        "30",
        "--pages",
        "4",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert len(lines) == 1
    assert re.fullmatch(
        r"workload: 3 processes, 3 forks, 3 completed in [\d.]+ s \(stopped by count\); "
        r"faults 24 minor, 0 major; 96K written; errors: none; corrupted: 0",
        lines[0],
    ), lines[0]
    async with open_channel(address) as channel:
        listed = await mmu_pb2_grpc.MmuStub(channel).ListProcesses(pb.ListProcessesRequest())
    assert [p.name for p in listed.processes if p.state not in ("X", "Z")] == ["init"]


def test_bad_arguments_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as bad:
        main(["--mmu", "mmu", "--processes", "1"])
    assert bad.value.code == 2
    assert "'mmu' is not host:port" in capsys.readouterr().err
    with pytest.raises(SystemExit) as bad:
        main(["--mmu", "127.0.0.1:1", "--pages", "0"])
    assert bad.value.code == 2
    assert "at least 1" in capsys.readouterr().err
