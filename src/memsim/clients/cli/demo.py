"""The short demo of `make run`: allocate, look, free, look again."""

from __future__ import annotations

from collections.abc import Callable

from memsim.clients.cli.procfiles import buddyinfo
from memsim.services.buddy.client import BuddyClient

ZONE = "Normal"


async def run_demo(buddy: BuddyClient, say: Callable[[str], None]) -> None:
    say("cat /proc/buddyinfo  # at boot: each zone carved into the largest aligned blocks")
    say(await buddyinfo(buddy))
    say(f"allocating from {ZONE}: one order-3 block (8 pages) and 100 single pages ...")
    block = await buddy.alloc(0, ZONE, 3)
    pages = await buddy.alloc_bulk(0, ZONE, 0, 100)
    say(f"  order-3 block at pfn {block}; pages at pfns {pages[0]}..{pages[-1]}")
    say(
        "cat /proc/buddyinfo  # expand() split a top-order block: "
        "its spare halves went to lower orders"
    )
    say(await buddyinfo(buddy))
    say("freeing them again ...")
    freed = await buddy.free(0, ZONE, [(block, 3), *((pfn, 0) for pfn in pages)])
    say(f"  {freed} pages freed")
    say("cat /proc/buddyinfo  # every buddy merged back: the same as at boot")
    say(await buddyinfo(buddy))
    report = await buddy.audit()
    say(
        f"audit: {'every invariant holds' if report.ok else report.problems} "
        f"({report.blocks_checked} blocks in {report.arenas_checked} arenas)"
    )
