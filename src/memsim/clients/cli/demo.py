"""The demo of `make run`: allocate through the zone allocator, look, free,
drain the per-CPU lists, look again; then processes on the MMU: a database
that forks a worker sharing memory with it, a memory hog that pushes the
machine into swap, the database reading its pages back from swap, and every
process exiting until the buddy lists are as they were at boot.

The processes use the MMU's raw stub: the Process client library is a
separate piece of work.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc

from memsim.clients.cli.procfiles import Clients, buddyinfo, free, ps
from memsim.mmu.v1 import mmu_pb2 as pb
from memsim.services.zone.gfp import GFP_HIGHUSER, GFP_KERNEL

PROT_RW = 0x1 | 0x2  # PROT_READ | PROT_WRITE
MAP_SHARED_ANON = 0x01 | 0x20
MAP_PRIVATE_ANON = 0x02 | 0x20
MIB = 1 << 20
DB_BYTES = 8 * MIB
IO_CHUNK = MIB  # under gRPC's 4 MiB message limit
HOG_STEP = 4 * MIB
# What the demo leaves free before the hog starts, and how far past free
# memory the hog goes: enough to swap a few MiB out, little enough to be quick.
HEADROOM = 48 * MIB
HOG_PAST_FREE = 12 * MIB
HOG_TIME_LIMIT_S = 8.0

Say = Callable[[str], None]


async def run_demo(c: Clients, say: Say) -> None:
    await c.zone.drain()
    boot = await buddyinfo(c)
    say(
        "cat /proc/buddyinfo  # at boot (init running, per-CPU lists drained): "
        "each zone carved into the largest aligned blocks"
    )
    say(boot)
    await _zone_demo(c, say, boot)
    try:
        await _process_demo(c, say)
    except grpc.aio.AioRpcError as exc:
        say(f"the process demo stopped: {exc.code().name}: {exc.details()}")
    drained = await c.zone.drain()
    say(f"drain_all_pages: {drained} pages from the per-CPU lists back to buddy")
    final = await buddyinfo(c)
    if final == boot:
        say("cat /proc/buddyinfo  # every process gone, every buddy merged: the same as at boot")
    else:
        say("cat /proc/buddyinfo  # not the same as at boot: something still holds pages")
    say(final)
    report = await c.buddy.audit()
    say(
        f"audit: {'every invariant holds' if report.ok else report.problems} "
        f"({report.blocks_checked} blocks in {report.arenas_checked} arenas)"
    )


async def _zone_demo(c: Clients, say: Say, boot: str) -> None:
    say("allocating with GFP_KERNEL: one order-3 block (8 pages) and 100 single pages ...")
    (block,) = await c.zone.alloc(GFP_KERNEL, order=3)
    pages = await c.zone.alloc(GFP_KERNEL, order=0, count=100)
    say(
        f"  order-3 block at pfn {block[0]}; 100 pages from pfn {min(p for p, _ in pages)} "
        f"to {max(p for p, _ in pages)}, through CPU 0's per-CPU list"
    )
    say(
        "cat /proc/buddyinfo  # expand() split a top-order block: "
        "its spare halves went to lower orders"
    )
    say(await buddyinfo(c))
    freed = await c.zone.free([block, *pages])
    say(f"freed {freed} pages; the single pages went back to the per-CPU list first")
    drained = await c.zone.drain()
    say(f"drain_all_pages: {drained} pages from the per-CPU lists back to buddy")
    after = await buddyinfo(c)
    same = "the same as at boot" if after == boot else "NOT the same as at boot"
    say(f"cat /proc/buddyinfo  # every buddy merged back: {same}")
    say(after)


def _pattern(size: int) -> bytes:
    return (bytes(range(251)) * (size // 251 + 1))[:size]


async def _free_bytes(c: Clients) -> tuple[int, int, int]:
    """Free bytes, page size and MAX_ORDER of the machine."""
    info = await c.zone.zoneinfo()
    pages = sum(z.free_pages for node in info.nodes for z in node.zones)
    return pages * info.page_size_bytes, info.page_size_bytes, info.max_order


async def _process_demo(c: Clients, say: Say) -> None:
    mmu = c.mmu.stub
    _, page_size, _ = await _free_bytes(c)
    say("ps  # init, pid 1, booted by the MMU")
    say(await ps(c))

    # A kernel driver's pages, so that the hog reaches swap in seconds.
    free_now, _, max_order = await _free_bytes(c)
    order = min(max_order - 1, (HOG_STEP // page_size).bit_length() - 1)
    block_bytes = page_size << order
    ballast: list[tuple[int, int]] = []
    if free_now > HEADROOM + block_bytes:
        count = (free_now - HEADROOM) // block_bytes
        ballast = await c.zone.alloc(GFP_HIGHUSER, order=order, count=count)
        say(
            f"a driver takes {len(ballast) * block_bytes // MIB} MiB in order-{order} "
            "blocks (kernel pages: nothing can reclaim them), so that about "
            f"{HEADROOM // MIB} MiB stay free. Swapping costs about half a second per "
            "4 MiB here: filling the whole machine and then swapping would take minutes; "
            "with the driver the hog gets there in seconds"
        )

    # The database: its data, written with a pattern, and a region shared with a worker.
    made = await mmu.CreateProcess(pb.CreateProcessRequest(name="db", uid=1000))
    db = pb.Caller(pid=made.pid, token=made.token)
    data = (
        await mmu.Mmap(
            pb.MmapRequest(caller=db, length_bytes=DB_BYTES, prot=PROT_RW, flags=MAP_PRIVATE_ANON)
        )
    ).address
    pattern = _pattern(DB_BYTES)
    for offset in range(0, DB_BYTES, IO_CHUNK):
        await mmu.Write(
            pb.WriteRequest(
                caller=db, address=data + offset, data=pattern[offset : offset + IO_CHUNK]
            )
        )
    shared = (
        await mmu.Mmap(
            pb.MmapRequest(caller=db, length_bytes=page_size, prot=PROT_RW, flags=MAP_SHARED_ANON)
        )
    ).address
    await mmu.Write(pb.WriteRequest(caller=db, address=shared, data=b"(nothing yet)"))
    say(
        f"db (pid {db.pid}) mmaps {DB_BYTES // MIB} MiB at {data:#x} and writes a pattern, "
        f"mmaps a MAP_SHARED page at {shared:#x}, then forks"
    )
    forked = await mmu.Fork(pb.ForkRequest(caller=db, name="db-worker"))
    worker = pb.Caller(pid=forked.pid, token=forked.token)
    message = f"hello from db-worker, pid {worker.pid}".encode()
    await mmu.Write(pb.WriteRequest(caller=worker, address=shared, data=message))
    seen = await mmu.Read(pb.ReadRequest(caller=db, address=shared, length_bytes=len(message)))
    say(
        f"  db-worker (pid {worker.pid}) writes into the shared page; db reads "
        f"{seen.data.decode(errors='replace')!r} there (its private pages stay "
        "copy-on-write shared)"
    )
    say("ps")
    say(await ps(c))
    exited = await mmu.Exit(pb.ExitRequest(caller=worker))
    say(f"  db-worker exits: {exited.freed_pages} pages of its own back to the zone allocator")
    say("free -m")
    say(await free(c, "m"))

    free_now, _, _ = await _free_bytes(c)
    # The hog: touches past free memory, 4 MiB at a time; kswapd and direct reclaim swap.
    bound = (free_now + HOG_PAST_FREE + HOG_STEP - 1) // HOG_STEP * HOG_STEP
    made = await mmu.CreateProcess(pb.CreateProcessRequest(name="hog", uid=1001))
    hog = pb.Caller(pid=made.pid, token=made.token)
    area = (
        await mmu.Mmap(
            pb.MmapRequest(caller=hog, length_bytes=bound, prot=PROT_RW, flags=MAP_PRIVATE_ANON)
        )
    ).address
    say(
        f"hog (pid {hog.pid}) touches {bound // MIB} MiB, {HOG_STEP // MIB} MiB at a time, "
        f"with {free_now // MIB} MiB free: past that, reclaim swaps pages out"
    )
    started = time.monotonic()
    touched = 0
    while touched < bound:
        if time.monotonic() - started > HOG_TIME_LIMIT_S:
            say(f"  the hog stops after {HOG_TIME_LIMIT_S:.0f} s (the demo's time limit)")
            break
        try:
            await mmu.Touch(
                pb.TouchRequest(caller=hog, address=area + touched, length_bytes=HOG_STEP)
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
            say(f"  the touch at {touched // MIB} MiB fails: RESOURCE_EXHAUSTED: {exc.details()}")
            break
        touched += HOG_STEP
        stats = await mmu.GetStats(pb.GetStatsRequest())
        if stats.pswpout:
            used = (stats.swap_total_pages - stats.swap_free_pages) * stats.page_size_bytes
            say(
                f"  {touched // MIB:4d} MiB touched: {stats.pswpout} pages swapped out so far, "
                f"{used // MIB} MiB of swap in use"
            )
    info = await mmu.GetProcess(pb.GetProcessRequest(pid=db.pid))
    kb = page_size // 1024
    say(
        f"db: VmRSS {info.rss_pages * kb} kB, VmSwap {info.swap_pages * kb} kB "
        "(its pages were the oldest on the LRU: reclaim swapped them out first)"
    )
    say("free -m")
    say(await free(c, "m"))
    say("ps")
    say(await ps(c))
    say("cat /proc/buddyinfo")
    say(await buddyinfo(c))

    # The database reads its data back: the swapped pages fault in from swap.
    major = minor = 0
    back = bytearray()
    for offset in range(0, DB_BYTES, IO_CHUNK):
        read = await mmu.Read(
            pb.ReadRequest(caller=db, address=data + offset, length_bytes=IO_CHUNK)
        )
        back += read.data
        major += read.access.major_faults
        minor += read.access.minor_faults
    intact = "intact" if back == pattern else "CORRUPTED"
    say(
        f"db reads its {DB_BYTES // MIB} MiB back: {major} major faults (pages read back "
        f"from swap), {minor} minor; the pattern is {intact}"
    )

    for who, name in ((hog, "hog"), (db, "db")):
        exited = await mmu.Exit(pb.ExitRequest(caller=who))
        say(f"{name} (pid {who.pid}) exits: {exited.freed_pages} pages back to the zone allocator")
    if ballast:
        await c.zone.free(ballast)
        say(f"the driver frees its {len(ballast)} blocks")
    say("free -m")
    say(await free(c, "m"))
    say("ps")
    say(await ps(c))
