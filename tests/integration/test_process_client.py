"""The process client library over a real buddy, zone and MMU: memory as a
program sees it, errno-style errors, SIGSEGV, and malloc on brk and mmap."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from memsim.clients.process.process import (
    PROT_READ,
    InvalidArgument,
    NoSuchProcess,
    NotYourProcess,
    OutOfMemory,
    Process,
    ProcessGone,
    SegmentationFault,
)
from memsim.mmu.v1 import mmu_pb2_grpc
from memsim.services.zone.client import ZoneClient
from tests.integration.conftest import BuddyHarness, MmuStack, mmu_stack

PAGE = 4096
MIB = 1 << 20


@dataclass
class Machine:
    channel: grpc.aio.Channel
    zone: ZoneClient
    buddy: BuddyHarness
    stack: MmuStack


@pytest_asyncio.fixture
async def machine(buddy: BuddyHarness, tmp_path: Path) -> AsyncIterator[Machine]:
    """x86_32 with 64 MiB of RAM and 16 MiB of swap."""
    async with mmu_stack(buddy, tmp_path, swap_bytes=16 << 20) as stack:
        yield Machine(stack.mmu_channel, stack.zone, buddy, stack)


async def buddy_state(m: Machine) -> list[list[int]]:
    return await m.stack.buddy_state()


async def test_write_read_round_trip_across_pages(machine: Machine) -> None:
    proc = await Process.spawn(machine.channel, "app", uid=1000)
    address = await proc.mmap(3 * PAGE)
    assert await proc.read(address, 16) == bytes(16)  # the zero page
    faults = await proc.write(address + PAGE - 3, b"across pages")
    assert (faults.minor, faults.major) == (2, 0)
    assert await proc.read(address + PAGE - 3, 12) == b"across pages"
    assert (await proc.touch(address, 3 * PAGE)).minor == 1  # only the third page was new


async def test_fork_is_copy_on_write(machine: Machine) -> None:
    stub = mmu_pb2_grpc.MmuStub(machine.channel)  # a stub works as well as a channel
    parent = await Process.spawn(stub, "parent")
    address = await parent.mmap(PAGE)
    await parent.write(address, b"parent's bytes")
    child = await parent.fork("child")
    assert (child.name, (await child.info()).ppid) == ("child", parent.pid)
    assert await child.read(address, 14) == b"parent's bytes"
    await child.write(address, b"CHILD")
    assert await child.read(address, 14) == b"CHILDt's bytes"
    assert await parent.read(address, 14) == b"parent's bytes"


async def test_a_protection_fault_raises_sigsegv_and_the_process_is_gone(
    machine: Machine,
) -> None:
    proc = await Process.spawn(machine.channel, "victim")
    address = await proc.mmap(2 * PAGE, prot=PROT_READ)
    assert await proc.read(address, 4) == bytes(4)  # reading is allowed
    with pytest.raises(SegmentationFault) as fault:
        await proc.touch(address + 100, 10)
    assert fault.value.address == address + 100
    assert "write to a r--p mapping" in fault.value.reason
    assert fault.value.signal == 11
    assert not proc.alive
    info = await proc.info()
    assert (info.state, info.exit_signal) == ("X", 11)
    with pytest.raises(ProcessGone) as gone:
        await proc.read(address, 1)
    assert "killed by signal 11" in gone.value.message
    assert gone.value.code is grpc.StatusCode.FAILED_PRECONDITION


async def test_write_into_an_unmapped_page_stores_what_precedes_it(machine: Machine) -> None:
    proc = await Process.spawn(machine.channel, "memcpy")
    address = await proc.mmap(2 * PAGE)
    await proc.munmap(address + PAGE, PAGE)
    with pytest.raises(SegmentationFault) as fault:
        await proc.write(address + PAGE - 2, b"abcd")
    assert fault.value.address == address + PAGE
    assert "no mapping" in fault.value.reason
    assert not proc.alive


async def test_refusals_are_errno_exceptions_with_the_servers_message(machine: Machine) -> None:
    stub = mmu_pb2_grpc.MmuStub(machine.channel)
    proc = await Process.spawn(stub, "app")
    address = await proc.mmap(PAGE)
    with pytest.raises(InvalidArgument) as bad:
        await proc.munmap(address + 1, PAGE)
    assert bad.value.errno == 22
    assert "not page aligned" in bad.value.message
    with pytest.raises(InvalidArgument):
        await proc.mprotect(address + 64 * PAGE, PAGE, PROT_READ)
    with pytest.raises(OutOfMemory) as enomem:
        await proc.mmap(4 << 30)  # more than the 3 GiB of user space
    assert enomem.value.errno == 12
    impostor = Process(stub, proc.pid, "not-it", "impostor")
    with pytest.raises(NotYourProcess) as eperm:
        await impostor.brk()
    assert isinstance(eperm.value, PermissionError)
    assert "wrong token" in str(eperm.value)
    ghost = Process(stub, 999, proc.token, "ghost")
    with pytest.raises(NoSuchProcess) as esrch:
        await ghost.info()
    assert isinstance(esrch.value, ProcessLookupError)
    with pytest.raises(InvalidArgument):
        await Process.spawn(machine.channel, "x", capabilities=["CAP_NOPE"])
    await proc.exit()
    with pytest.raises(ProcessGone):
        await proc.mmap(PAGE)


async def test_malloc_uses_brk_for_small_blocks_and_mmap_for_large(machine: Machine) -> None:
    proc = await Process.spawn(machine.channel, "malloc")
    before = await proc.info()
    small = [await proc.malloc(100) for _ in range(10)]
    assert 0 not in small
    assert len(set(small)) == 10
    grown = await proc.info()
    assert grown.brk > before.brk  # the heap grew with brk
    assert [v.name for v in grown.vmas].count("[heap]") == 1
    await proc.write(small[3], b"small block")
    assert await proc.read(small[3], 11) == b"small block"
    big = await proc.malloc(MIB)
    assert big != 0
    mapped = await proc.info()
    assert len(mapped.vmas) == len(grown.vmas) + 1  # its own mapping
    assert mapped.brk == grown.brk
    await proc.write(big + MIB - 4, b"tail")
    await proc.free(big)
    assert len((await proc.info()).vmas) == len(grown.vmas)  # unmapped again
    stats = await proc.malloc_stats()
    assert stats.startswith("Arena 0:")
    for address in small:
        await proc.free(address)


async def test_malloc_reports_enomem_as_zero(machine: Machine) -> None:
    proc = await Process.spawn(machine.channel, "greedy")
    # Neither an mmap nor the heap can hold 3.5 GiB: malloc gives NULL, errno ENOMEM.
    assert await proc.malloc(3584 * MIB) == 0
    assert proc.malloc_errno == 12
    assert proc.alive
    assert await proc.malloc(64) != 0


async def test_realloc_that_moves_keeps_the_bytes(machine: Machine) -> None:
    proc = await Process.spawn(machine.channel, "realloc")
    first = await proc.malloc(40)
    blocker = await proc.malloc(40)  # so that first cannot grow in place
    await proc.write(first, b"0123456789" * 4)
    moved = await proc.realloc(first, 4000)
    assert moved not in (0, first)
    assert await proc.read(moved, 40) == b"0123456789" * 4
    # An mmapped block that has to move keeps its bytes too.
    big = await proc.malloc(200 * 1024)
    pattern = bytes(range(256)) * 800
    await proc.write(big, pattern)
    bigger = await proc.realloc(big, 600 * 1024)
    assert bigger not in (0, big)
    assert await proc.read(bigger, len(pattern)) == pattern
    for address in (moved, blocker, bigger):
        await proc.free(address)


async def test_calloc_gives_zeros_even_over_reused_memory(machine: Machine) -> None:
    proc = await Process.spawn(machine.channel, "calloc")
    dirty = await proc.malloc(256)
    await proc.write(dirty, b"\xff" * 256)
    await proc.free(dirty)
    cleared = await proc.calloc(16, 16)
    assert cleared == dirty  # the same chunk, reused
    assert await proc.read(cleared, 256) == bytes(256)


async def test_forked_child_inherits_the_heap(machine: Machine) -> None:
    parent = await Process.spawn(machine.channel, "parent")
    block = await parent.malloc(32)
    await parent.write(block, b"inherited")
    child = await parent.fork()
    assert await child.read(block, 9) == b"inherited"
    await child.free(block)  # the child's copy of the allocator knows the block
    again = await child.malloc(32)
    assert again == block
    await child.write(again, b"child's  ")
    assert await parent.read(block, 9) == b"inherited"


async def test_exit_gives_every_page_back(machine: Machine) -> None:
    boot = await buddy_state(machine)
    async with await Process.spawn(machine.channel, "scoped") as scoped:
        await scoped.write(await scoped.mmap(4 * PAGE), b"x" * (4 * PAGE))
    assert not scoped.alive
    parent = await Process.spawn(machine.channel, "parent")
    heap = [await parent.malloc(size) for size in (24, 1000, 5000, 300 * 1024)]
    for address in heap:
        await parent.write(address, b"data")
    child = await parent.fork()
    await child.write(heap[0], b"cow!")
    region = await parent.mmap(8 * PAGE)
    await parent.touch(region, 8 * PAGE)
    assert await child.exit() > 0
    assert await parent.exit() > 0
    assert not parent.alive
    assert await buddy_state(machine) == boot
