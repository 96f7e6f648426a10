"""Commit accounting over gRPC: Committed_AS and CommitLimit in GetStats and
ProcessInfo, and a mode 2 refusal as RESOURCE_EXHAUSTED that says why and
changes nothing."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
import pytest_asyncio

from memsim.mmu.v1 import mmu_pb2 as pb
from memsim.mmu.v1 import mmu_pb2_grpc
from memsim.profiles.loader import load_profile
from memsim.runtime.channel import open_channel
from memsim.runtime.server import start_server
from memsim.services.mmu.config import MmuConfig
from memsim.services.mmu.server import build_mmu_server
from memsim.services.mmu.service import MmuService
from memsim.services.zone.config import ZoneConfig
from memsim.services.zone.server import zone_service
from tests.integration.conftest import BuddyHarness

if TYPE_CHECKING:
    from memsim.mmu.v1.mmu_pb2_grpc import MmuAsyncStub

PAGE = 4096
RW = 0x3
PRIVATE_ANON = 0x02 | 0x20
SWAP_BYTES = 8 << 20


@dataclass
class Machine:
    mmu: MmuAsyncStub
    service: MmuService


@pytest_asyncio.fixture
async def machine(buddy: BuddyHarness, tmp_path: Path) -> AsyncIterator[Machine]:
    """x86_32 with 64 MiB of RAM and 8 MiB of swap; counters refreshed every 50 ms."""
    profile = load_profile("x86_32", mem="64M")
    zone = await start_server(
        zone_service(ZoneConfig(profile, buddy.running.address)), "127.0.0.1:0", None
    )
    config = MmuConfig(
        profile, zone.address, swap_bytes=SWAP_BYTES, data_dir=tmp_path, counters_refresh_ms=50
    )
    built = build_mmu_server(config)
    mmu = await start_server(built.service, "127.0.0.1:0", None)
    channel = open_channel(mmu.address)
    try:
        yield Machine(mmu_pb2_grpc.MmuStub(channel), built.mmu)
    finally:
        await channel.close(None)
        await mmu.stop(0)
        await zone.stop(0)


def set_sysctls(m: Machine, **values: int) -> None:
    sysctls = copy.deepcopy(m.service.mmu.sysctls)
    sysctls.set_many([(f"vm.{k}", str(v)) for k, v in values.items()], admin=True)
    m.service.set_sysctls(sysctls)


async def test_mode_2_refusal_is_resource_exhausted_and_changes_nothing(machine: Machine) -> None:
    m = machine
    created = await m.mmu.CreateProcess(pb.CreateProcessRequest(name="root", uid=0))
    caller = pb.Caller(pid=created.pid, token=created.token)
    stats = await m.mmu.GetStats(pb.GetStatsRequest())
    assert stats.overcommit_memory == 0
    # init and root: each its data segment and stack.
    assert stats.committed_as_pages == 2 * (2 + 32)
    info = await m.mmu.GetProcess(pb.GetProcessRequest(pid=caller.pid))
    assert info.committed_pages == 34
    mapped = await m.mmu.Mmap(
        pb.MmapRequest(caller=caller, length_bytes=100 * PAGE, prot=RW, flags=PRIVATE_ANON)
    )
    assert (await m.mmu.GetStats(pb.GetStatsRequest())).committed_as_pages == 168
    set_sysctls(m, overcommit_memory=2, overcommit_ratio=50)
    stats = await m.mmu.GetStats(pb.GetStatsRequest())
    assert stats.overcommit_memory == 2
    totalram = m.service.mmu.mem.totalram_pages
    assert stats.commit_limit_pages == totalram // 2 + SWAP_BYTES // PAGE
    # root, total_vm 142: the bound is CommitLimit less 142 / 32.
    bound = stats.commit_limit_pages - 142 // 32
    room = bound - stats.committed_as_pages
    before = await m.mmu.GetProcess(pb.GetProcessRequest(pid=caller.pid))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await m.mmu.Mmap(
            pb.MmapRequest(caller=caller, length_bytes=room * PAGE, prot=RW, flags=PRIVATE_ANON)
        )
    assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refused.value.details() == (
        f"mmap: {room} pages not allowed: Committed_AS 168 + {room} >= limit {bound} "
        "(vm.overcommit_memory=2)"
    )
    assert await m.mmu.GetProcess(pb.GetProcessRequest(pid=caller.pid)) == before
    after = await m.mmu.GetStats(pb.GetStatsRequest())
    assert (after.committed_as_pages, after.commit_refusals) == (168, 1)
    await m.mmu.Mmap(
        pb.MmapRequest(caller=caller, length_bytes=(room - 1) * PAGE, prot=RW, flags=PRIVATE_ANON)
    )
    assert (await m.mmu.GetStats(pb.GetStatsRequest())).committed_as_pages == bound - 1
    with pytest.raises(grpc.aio.AioRpcError) as fork:
        await m.mmu.Fork(pb.ForkRequest(caller=caller))
    assert fork.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "fork: " in (fork.value.details() or "")
    listed = await m.mmu.ListProcesses(pb.ListProcessesRequest(all=True))
    assert len(listed.processes) == 2  # no child
    await m.mmu.Munmap(
        pb.MunmapRequest(caller=caller, address=mapped.address, length_bytes=100 * PAGE)
    )
    await m.mmu.Exit(pb.ExitRequest(caller=caller))
    assert (await m.mmu.GetStats(pb.GetStatsRequest())).committed_as_pages == 34


async def test_the_counters_are_refreshed_in_the_background(machine: Machine) -> None:
    m = machine
    mem = m.service.mmu.mem
    for _ in range(100):
        if mem.refreshes >= 2:
            break
        await asyncio.sleep(0.02)
    assert mem.refreshes >= 2
    assert 0 < mem.nr_free_pages <= mem.totalram_pages
    assert mem.totalreserve_pages > 0
