"""The short demo of `make run`: allocate through the zone allocator, look,
free, drain the per-CPU lists, look again."""

from __future__ import annotations

from collections.abc import Callable

from memsim.clients.cli.procfiles import Clients, buddyinfo
from memsim.services.zone.gfp import GFP_KERNEL


async def run_demo(c: Clients, say: Callable[[str], None]) -> None:
    say("cat /proc/buddyinfo  # at boot: each zone carved into the largest aligned blocks")
    say(await buddyinfo(c))
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
    say("cat /proc/buddyinfo  # every buddy merged back: the same as at boot")
    say(await buddyinfo(c))
    report = await c.buddy.audit()
    say(
        f"audit: {'every invariant holds' if report.ok else report.problems} "
        f"({report.blocks_checked} blocks in {report.arenas_checked} arenas)"
    )
