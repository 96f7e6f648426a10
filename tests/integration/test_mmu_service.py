"""The MMU service over gRPC on a real zone and buddy: processes, memory,
copy-on-write, protection faults, and every bad input's status."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
import pytest_asyncio

from memsim.mmu.v1 import mmu_pb2 as pb
from memsim.mmu.v1 import mmu_pb2_grpc
from memsim.services.zone.client import ZoneClient
from tests.integration.conftest import BuddyHarness, MmuStack, mmu_stack

if TYPE_CHECKING:
    from memsim.mmu.v1.mmu_pb2_grpc import MmuAsyncStub

PAGE = 4096
RW = 0x3
PRIVATE_ANON = 0x02 | 0x20
SHARED_ANON = 0x01 | 0x20


@dataclass
class Machine:
    mmu: MmuAsyncStub
    zone: ZoneClient
    buddy: BuddyHarness
    stack: MmuStack


@pytest_asyncio.fixture
async def machine(buddy: BuddyHarness, tmp_path: Path) -> AsyncIterator[Machine]:
    """x86_32 with 64 MiB of RAM and 32 MiB of swap."""
    async with mmu_stack(buddy, tmp_path, swap_bytes=32 << 20) as stack:
        yield Machine(mmu_pb2_grpc.MmuStub(stack.mmu_channel), stack.zone, buddy, stack)


async def spawn(m: Machine, name: str = "app") -> pb.Caller:
    created = await m.mmu.CreateProcess(pb.CreateProcessRequest(name=name, uid=1000))
    return pb.Caller(pid=created.pid, token=created.token)


async def mmap(
    m: Machine,
    caller: pb.Caller,
    length: int,
    prot: int = RW,
    flags: int = PRIVATE_ANON,
    address: int = 0,
) -> int:
    response = await m.mmu.Mmap(
        pb.MmapRequest(caller=caller, address=address, length_bytes=length, prot=prot, flags=flags)
    )
    return response.address


async def read(m: Machine, caller: pb.Caller, address: int, length: int) -> bytes:
    response = await m.mmu.Read(pb.ReadRequest(caller=caller, address=address, length_bytes=length))
    return response.data


async def buddy_state(m: Machine) -> list[list[int]]:
    return await m.stack.buddy_state()


async def test_write_read_fork_cow_and_exit_give_every_page_back(machine: Machine) -> None:
    m = machine
    boot = await buddy_state(m)  # init exists: its pgd is allocated
    parent = await spawn(m)
    address = await mmap(m, parent, 3 * PAGE)
    # Untouched memory reads as zeros (the zero page: no frame).
    assert await read(m, parent, address, 16) == bytes(16)
    wrote = await m.mmu.Write(
        pb.WriteRequest(caller=parent, address=address + PAGE - 3, data=b"across pages")
    )
    assert wrote.signal == 0
    assert wrote.minor_faults == 2
    assert await read(m, parent, address + PAGE - 3, 12) == b"across pages"
    forked = await m.mmu.Fork(pb.ForkRequest(caller=parent))
    child = pb.Caller(pid=forked.pid, token=forked.token)
    assert await read(m, child, address + PAGE - 3, 12) == b"across pages"
    await m.mmu.Write(pb.WriteRequest(caller=child, address=address + PAGE - 3, data=b"CHILD"))
    # Copy-on-write: each sees its own bytes from now on.
    assert await read(m, child, address + PAGE - 3, 12) == b"CHILDs pages"
    assert await read(m, parent, address + PAGE - 3, 12) == b"across pages"
    info = await m.mmu.GetProcess(pb.GetProcessRequest(pid=parent.pid))
    assert info.rss_pages == 2
    assert info.pte_pages == 2  # pgd and one pte page
    for caller in (child, parent):
        assert (await m.mmu.Exit(pb.ExitRequest(caller=caller))).freed_pages > 0
    assert await buddy_state(m) == boot


async def test_shared_mappings_stay_shared_across_fork(machine: Machine) -> None:
    m = machine
    parent = await spawn(m)
    address = await mmap(m, parent, PAGE, flags=SHARED_ANON)
    await m.mmu.Touch(pb.TouchRequest(caller=parent, address=address, length_bytes=PAGE))
    forked = await m.mmu.Fork(pb.ForkRequest(caller=parent))
    child = pb.Caller(pid=forked.pid, token=forked.token)
    await m.mmu.Write(pb.WriteRequest(caller=child, address=address, data=b"from the child"))
    assert await read(m, parent, address, 14) == b"from the child"


async def test_a_protection_fault_kills_with_sigsegv(machine: Machine) -> None:
    m = machine
    caller = await spawn(m)
    address = await mmap(m, caller, 2 * PAGE, prot=0x1)
    touched = await m.mmu.Touch(
        pb.TouchRequest(caller=caller, address=address + 100, length_bytes=10)
    )
    assert touched.signal == 11
    assert touched.fault_address == address + 100
    assert "write to a r--p mapping" in touched.fault_reason
    info = await m.mmu.GetProcess(pb.GetProcessRequest(pid=caller.pid))
    assert (info.state, info.exit_signal, info.rss_pages) == ("X", 11, 0)
    with pytest.raises(grpc.aio.AioRpcError) as dead:
        await read(m, caller, address, 1)
    assert dead.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "killed by signal 11" in str(dead.value.details())


async def test_munmap_of_a_middle_splits_and_brk_grows_the_heap(machine: Machine) -> None:
    m = machine
    caller = await spawn(m)
    address = await mmap(m, caller, 3 * PAGE)
    await m.mmu.Munmap(pb.MunmapRequest(caller=caller, address=address + PAGE, length_bytes=PAGE))
    info = await m.mmu.GetProcess(pb.GetProcessRequest(pid=caller.pid))
    anon = [(v.start, v.end) for v in info.vmas if v.name == ""]
    assert anon == [(address, address + PAGE), (address + 2 * PAGE, address + 3 * PAGE)]
    touched = await m.mmu.Touch(
        pb.TouchRequest(caller=caller, address=address + PAGE, length_bytes=1)
    )
    assert touched.signal == 11  # the hole is no longer mapped
    other = await spawn(m, "heap")
    start = (await m.mmu.Brk(pb.BrkRequest(caller=other))).address
    grown = (await m.mmu.Brk(pb.BrkRequest(caller=other, address=start + 10_000))).address
    assert grown == start + 10_000
    heap = [
        v
        for v in (await m.mmu.GetProcess(pb.GetProcessRequest(pid=other.pid))).vmas
        if v.name == "[heap]"
    ]
    assert [(h.start, h.end) for h in heap] == [(start, start + 3 * PAGE)]


async def status_of(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value.code(), str(info.value.details())


async def test_bad_input_gets_a_clear_status_and_changes_nothing(machine: Machine) -> None:
    m = machine
    caller = await spawn(m)
    address = await mmap(m, caller, PAGE)
    before = await m.mmu.GetProcess(pb.GetProcessRequest(pid=caller.pid))
    wrong = pb.Caller(pid=caller.pid, token="not-it")
    nobody = pb.Caller(pid=999, token=caller.token)
    cases: list[tuple[Awaitable[Any], grpc.StatusCode, str]] = [
        (
            m.mmu.Mmap(
                pb.MmapRequest(caller=wrong, length_bytes=PAGE, prot=RW, flags=PRIVATE_ANON)
            ),
            grpc.StatusCode.PERMISSION_DENIED,
            "wrong token",
        ),
        (
            m.mmu.Read(pb.ReadRequest(caller=nobody, address=address, length_bytes=1)),
            grpc.StatusCode.NOT_FOUND,
            "no process with pid 999",
        ),
        (
            m.mmu.Munmap(pb.MunmapRequest(caller=caller, address=address + 1, length_bytes=PAGE)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "not page aligned",
        ),
        (
            m.mmu.Munmap(pb.MunmapRequest(caller=caller, address=address, length_bytes=0)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "length 0 must be positive",
        ),
        (
            m.mmu.Mmap(
                pb.MmapRequest(caller=caller, length_bytes=-PAGE, prot=RW, flags=PRIVATE_ANON)
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "length -4096",
        ),
        (
            m.mmu.Mmap(
                pb.MmapRequest(caller=caller, length_bytes=PAGE, prot=0x80, flags=PRIVATE_ANON)
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "unknown protection bits 0x80",
        ),
        (
            m.mmu.Mmap(
                pb.MmapRequest(
                    caller=caller,
                    address=0xBFFFF000,
                    length_bytes=2 * PAGE,
                    prot=RW,
                    flags=PRIVATE_ANON | 0x10,
                )
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "past TASK_SIZE",
        ),
        (
            m.mmu.Mprotect(
                pb.MprotectRequest(
                    caller=caller, address=address + 64 * PAGE, length_bytes=PAGE, prot=0x1
                )
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "not all mapped",
        ),
        (
            m.mmu.Read(pb.ReadRequest(caller=caller, address=address, length_bytes=0)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "length 0",
        ),
        (
            m.mmu.Kill(pb.KillRequest(pid=1, signal=9)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "init (pid 1) cannot be killed",
        ),
        (
            m.mmu.CreateProcess(pb.CreateProcessRequest(name="x", capabilities=["CAP_NOPE"])),
            grpc.StatusCode.INVALID_ARGUMENT,
            "unknown capabilities",
        ),
    ]
    for call, code, message in cases:
        got_code, details = await status_of(call)
        assert got_code is code, details
        assert message in details
    after = await m.mmu.GetProcess(pb.GetProcessRequest(pid=caller.pid))
    assert after == before


async def test_memory_pressure_swaps_a_pattern_out_and_it_reads_back(machine: Machine) -> None:
    m = machine
    boot = await buddy_state(m)
    owner = await spawn(m, "owner")
    address = await mmap(m, owner, 2 << 20)
    pattern = bytes(range(256)) * (8 << 10)  # 2 MiB
    await m.mmu.Write(pb.WriteRequest(caller=owner, address=address, data=pattern))
    hog = await spawn(m, "hog")
    big = await mmap(m, hog, 60 << 20)
    touched = 0
    for offset in range(0, 60 << 20, 1 << 20):  # 60 MiB on a 64 MiB machine
        await m.mmu.Touch(pb.TouchRequest(caller=hog, address=big + offset, length_bytes=1 << 20))
        touched += 1 << 20
    assert touched == 60 << 20  # more than RAM: the rest went to swap
    stats = await m.mmu.GetStats(pb.GetStatsRequest())
    assert stats.pswpout > 0
    assert stats.swap_free_pages < stats.swap_total_pages
    swapped = (await m.mmu.GetProcess(pb.GetProcessRequest(pid=owner.pid))).swap_pages
    assert swapped > 0
    got = await m.mmu.Read(pb.ReadRequest(caller=owner, address=address, length_bytes=len(pattern)))
    assert got.data == pattern
    assert got.access.major_faults == swapped
    for caller in (hog, owner):
        await m.mmu.Exit(pb.ExitRequest(caller=caller))
    stats = await m.mmu.GetStats(pb.GetStatsRequest())
    assert stats.swap_free_pages == stats.swap_total_pages
    assert await buddy_state(m) == boot


async def test_named_shared_memory_between_unrelated_processes(machine: Machine) -> None:
    m = machine
    boot = await buddy_state(m)
    writer, reader = await spawn(m, "writer"), await spawn(m, "reader")
    key = 0x1234
    shmid = (
        await m.mmu.ShmGet(
            pb.ShmGetRequest(caller=writer, key=key, size_bytes=3 * PAGE, create=True)
        )
    ).shmid
    # The reader finds it by key, without create.
    assert (await m.mmu.ShmGet(pb.ShmGetRequest(caller=reader, key=key))).shmid == shmid
    at_w = (await m.mmu.ShmAttach(pb.ShmAttachRequest(caller=writer, shmid=shmid))).address
    at_r = (
        await m.mmu.ShmAttach(pb.ShmAttachRequest(caller=reader, shmid=shmid, read_only=True))
    ).address
    await m.mmu.Write(pb.WriteRequest(caller=writer, address=at_w + PAGE + 10, data=b"shared!"))
    assert await read(m, reader, at_r + PAGE + 10, 7) == b"shared!"
    maps = (await m.mmu.GetProcess(pb.GetProcessRequest(pid=reader.pid))).vmas
    assert [(v.perms, v.name) for v in maps if v.start == at_r] == [
        ("r--s", "/SYSV00001234 (deleted)")
    ]
    # The segment outlives a detach: attach again and the bytes are there.
    await m.mmu.ShmDetach(pb.ShmDetachRequest(caller=writer, address=at_w))
    again = (await m.mmu.ShmAttach(pb.ShmAttachRequest(caller=writer, shmid=shmid))).address
    assert await read(m, writer, again + PAGE + 10, 7) == b"shared!"
    # IPC_RMID: the key goes now, the frames when the last one detaches.
    assert (await m.mmu.ShmRemove(pb.ShmRemoveRequest(caller=writer, shmid=shmid))).freed_pages == 0
    code, details = await status_of(m.mmu.ShmGet(pb.ShmGetRequest(caller=reader, key=key)))
    assert code is grpc.StatusCode.NOT_FOUND
    assert "no segment with key 0x1234" in details
    await m.mmu.ShmDetach(pb.ShmDetachRequest(caller=writer, address=again))
    # A write through the read-only attach is a protection fault.
    faulted = await m.mmu.Write(pb.WriteRequest(caller=reader, address=at_r, data=b"x"))
    assert faulted.signal == 11
    assert "write to a r--s mapping" in faulted.fault_reason
    # The reader died and the writer exits: the segment's frames went with them.
    await m.mmu.Exit(pb.ExitRequest(caller=writer))
    assert await buddy_state(m) == boot


async def test_shared_memory_bad_input(machine: Machine) -> None:
    m = machine
    caller = await spawn(m)
    cases: list[tuple[Awaitable[Any], grpc.StatusCode, str]] = [
        (
            m.mmu.ShmGet(pb.ShmGetRequest(caller=caller, key=7)),
            grpc.StatusCode.NOT_FOUND,
            "no segment with key 0x7",
        ),
        (
            m.mmu.ShmGet(pb.ShmGetRequest(caller=caller, key=7, size_bytes=0, create=True)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "outside 1..SHMMAX",
        ),
        (
            m.mmu.ShmAttach(pb.ShmAttachRequest(caller=caller, shmid=42)),
            grpc.StatusCode.NOT_FOUND,
            "no shared memory segment with id 42",
        ),
        (
            m.mmu.ShmDetach(pb.ShmDetachRequest(caller=caller, address=0x1000)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "no shared memory segment is attached at 0x1000",
        ),
        (
            m.mmu.ShmRemove(pb.ShmRemoveRequest(caller=caller, shmid=42)),
            grpc.StatusCode.NOT_FOUND,
            "no shared memory segment with id 42",
        ),
    ]
    for call, code, message in cases:
        got_code, details = await status_of(call)
        assert got_code is code, details
        assert message in details


async def test_process_times_advance_with_work_and_can_be_set(machine: Machine) -> None:
    m = machine
    first = await spawn(m, "first")
    address = await mmap(m, first, 1 << 20)
    await m.mmu.Touch(pb.TouchRequest(caller=first, address=address, length_bytes=1 << 20))
    info = await m.mmu.GetProcess(pb.GetProcessRequest(pid=first.pid))
    assert info.cpu_time_ms == 2  # a call, and 256 pages
    later = await spawn(m, "later")
    assert (
        await m.mmu.GetProcess(pb.GetProcessRequest(pid=later.pid))
    ).start_time_ms == info.start_time_ms + 2
    changed = await m.mmu.SetProcessTimes(
        pb.SetProcessTimesRequest(pid=first.pid, cpu_time_ms=5000)
    )
    assert (changed.cpu_time_ms, changed.start_time_ms) == (5000, info.start_time_ms)
    code, details = await status_of(
        m.mmu.SetProcessTimes(pb.SetProcessTimesRequest(pid=first.pid, start_time_ms=10**9))
    )
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert "is after now" in details
    code, _ = await status_of(m.mmu.SetProcessTimes(pb.SetProcessTimesRequest(pid=999)))
    assert code is grpc.StatusCode.NOT_FOUND
    assert (await m.mmu.GetProcess(pb.GetProcessRequest(pid=first.pid))).cpu_time_ms == 5000
