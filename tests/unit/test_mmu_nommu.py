"""The no-MMU profile (uClinux): one address space, physically contiguous
mappings taken at once, no protection, no fork, and fragmentation that shows."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from memsim.profiles.loader import load_profile
from memsim.services.buddy.local import LocalBuddy
from memsim.services.mmu import vma as v
from memsim.services.mmu.core import Mmu
from memsim.services.mmu.errors import InvalidRequest, NoMemory
from memsim.services.mmu.process import Process
from memsim.services.mmu.service import MmuService
from memsim.services.mmu.zone_port import LocalZone
from memsim.services.zone.allocator import ZoneAllocator
from memsim.services.zone.machine import Machine

RW = v.PROT_READ | v.PROT_WRITE
ANON = v.MAP_PRIVATE | v.MAP_ANONYMOUS


@pytest_asyncio.fixture
async def nommu() -> AsyncIterator[tuple[MmuService, ZoneAllocator, LocalBuddy]]:
    # 8 MiB, one Normal zone of 1776 managed pages.
    profile = load_profile("nommu")
    buddy = LocalBuddy()
    zone = ZoneAllocator(Machine(profile), buddy)
    await zone.boot()
    service = MmuService(Mmu(profile), LocalZone(zone))
    await service.boot()
    try:
        yield service, zone, buddy
    finally:
        await zone.stop()


async def spawn(service: MmuService, name: str) -> Process:
    return await service.create_process(name, 0, 1, 0, set(), [])


async def test_a_mapping_is_one_block_at_its_physical_address(
    nommu: tuple[MmuService, ZoneAllocator, LocalBuddy],
) -> None:
    service, zone, buddy = nommu
    app = await spawn(service, "app")
    before = buddy.allocator.arena(0, "Normal").nr_free()
    address = await service.mmap(app.pid, app.token, 0, 40 << 10, RW, ANON)
    # 10 pages round up to a block of 16 (order 4), taken at once: no faults.
    pfn = address >> 12
    assert app.mm.blocks == {pfn: (pfn, 4)}
    assert app.mm.rss == 16
    assert zone.machine.zones[(0, "Normal")].handed_out == {pfn: 4}
    await service.write(app.pid, app.token, address + 100, b"no mmu")
    assert (await service.read(app.pid, app.token, address + 100, 6)).data == b"no mmu"
    # No protection between processes: another one reads it too.
    other = await spawn(service, "other")
    assert (await service.read(other.pid, other.token, address + 100, 6)).data == b"no mmu"
    with pytest.raises(InvalidRequest, match="only whole mappings"):
        await service.munmap(app.pid, app.token, address, 4096)
    assert await service.munmap(app.pid, app.token, address, 40 << 10) == 16
    assert buddy.allocator.arena(0, "Normal").nr_free() == before


async def test_what_needs_an_mmu_is_refused(
    nommu: tuple[MmuService, ZoneAllocator, LocalBuddy],
) -> None:
    service, _, _ = nommu
    app = await spawn(service, "app")
    address = await service.mmap(app.pid, app.token, 0, 4096, RW, ANON)
    with pytest.raises(InvalidRequest, match="fork needs an MMU"):
        await service.fork(app.pid, app.token, "")
    with pytest.raises(InvalidRequest, match="mprotect needs an MMU"):
        await service.mprotect(app.pid, app.token, address, 4096, v.PROT_READ)
    with pytest.raises(InvalidRequest, match="MAP_FIXED needs an MMU"):
        await service.mmap(app.pid, app.token, address, 4096, RW, ANON | v.MAP_FIXED)
    with pytest.raises(InvalidRequest, match="in no process's mapping"):
        await service.read(app.pid, app.token, address + 8192, 1)
    assert await service.brk(app.pid, app.token, 1 << 20) == 0  # the heap does not grow


async def test_a_big_mapping_fails_from_fragmentation_with_memory_free(
    nommu: tuple[MmuService, ZoneAllocator, LocalBuddy],
) -> None:
    service, zone, _ = nommu
    app = await spawn(service, "frag")
    pages = []
    while True:  # every page the zone will give, one mapping each
        try:
            pages.append(await service.mmap(app.pid, app.token, 0, 4096, RW, ANON))
        except NoMemory:
            break
    for address in pages[::2]:  # free every other page
        await service.munmap(app.pid, app.token, address, 4096)
    free = zone.machine.zones[(0, "Normal")].free_pages
    assert free > 600  # plenty of memory ...
    with pytest.raises(NoMemory) as refused:  # ... but no 128 contiguous pages
        await service.mmap(app.pid, app.token, 0, 512 << 10, RW, ANON)
    message = str(refused.value)
    assert "needs 128 contiguous pages (order 7) without an MMU" in message
    assert f"{free} pages are free but no block of 128 is: the free memory is fragmented" in message
