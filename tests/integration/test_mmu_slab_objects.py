"""The MMU takes its task_struct, mm_struct and vm_area_struct from the slab
service, so /proc/slabinfo moves as processes and mappings come and go, and
drain_all_pages brings every object back."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest_asyncio

from memsim.mmu.v1 import mmu_pb2 as pb
from memsim.profiles.loader import load_profile
from memsim.services.slab.client import SlabClient
from memsim.services.zone.client import ZoneClient
from tests.integration.conftest import BuddyHarness, running_servers

if TYPE_CHECKING:
    from memsim.mmu.v1.mmu_pb2_grpc import MmuAsyncStub

PAGE = 4096
RW = 0x3
PRIVATE_ANON = 0x02 | 0x20
OBJECTS = ("task_struct", "mm_struct", "vm_area_struct")


@dataclass
class Machine:
    mmu: MmuAsyncStub
    slab: SlabClient
    zone: ZoneClient

    async def active(self) -> dict[str, int]:
        caches = (await self.slab.slabinfo()).caches
        return {c.name: c.active_objects for c in caches if c.name in OBJECTS}


@contextlib.asynccontextmanager
async def machine_with_slab(buddy: BuddyHarness, data_dir: Path) -> AsyncIterator[Machine]:
    profile = load_profile("x86_32", mem="64M")
    async with running_servers(
        profile, data_dir, buddy_address=buddy.running.address, slab=True
    ) as servers:
        yield Machine(servers.mmu_stub, servers.slab, servers.zone)


@pytest_asyncio.fixture
async def machine(buddy: BuddyHarness, tmp_path: Path) -> AsyncIterator[Machine]:
    async with machine_with_slab(buddy, tmp_path) as m:
        yield m


async def test_processes_and_mappings_move_slabinfo_and_exit_gives_them_back(
    machine: Machine,
) -> None:
    m = machine
    await m.zone.drain()  # the MMU's arrays back to the slab: only what is in use stays
    boot = await m.active()
    assert boot["task_struct"] >= 1  # init
    assert boot["mm_struct"] >= 1

    callers = []
    for i in range(40):
        created = await m.mmu.CreateProcess(pb.CreateProcessRequest(name=f"p{i}", uid=1000))
        callers.append(pb.Caller(pid=created.pid, token=created.token))
    # Three mappings with a hole between each, so that none merge.
    caller = callers[0]
    base = (
        await m.mmu.Mmap(
            pb.MmapRequest(caller=caller, length_bytes=6 * PAGE, prot=RW, flags=PRIVATE_ANON)
        )
    ).address
    for hole in (1, 3):
        await m.mmu.Munmap(
            pb.MunmapRequest(caller=caller, address=base + hole * PAGE, length_bytes=PAGE)
        )

    grown = await m.active()
    assert grown["task_struct"] >= boot["task_struct"] + 40
    assert grown["mm_struct"] >= boot["mm_struct"] + 40
    assert grown["vm_area_struct"] >= boot["vm_area_struct"] + 3

    for c in callers:
        await m.mmu.Exit(pb.ExitRequest(caller=c))
    await m.zone.drain()
    assert await m.active() == boot
