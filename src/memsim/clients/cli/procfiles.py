"""`memsim cat PATH`: the files of /proc and debugfs that the machine serves."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from memsim.procfs.buddyinfo import format_buddyinfo
from memsim.procfs.extfrag import format_index_file
from memsim.services.buddy.client import BuddyClient


async def buddyinfo(buddy: BuddyClient) -> str:
    rows = await buddy.buddyinfo()
    return format_buddyinfo((r.arena.node, r.arena.zone, r.nr_free) for r in rows)


async def unusable_index(buddy: BuddyClient) -> str:
    rows = await buddy.fragmentation()
    return format_index_file(
        (r.arena.node, r.arena.zone, r.unusable_free_index_milli) for r in rows
    )


async def extfrag_index(buddy: BuddyClient) -> str:
    rows = await buddy.fragmentation()
    return format_index_file(
        (r.arena.node, r.arena.zone, r.fragmentation_index_milli) for r in rows
    )


PROC_FILES: dict[str, Callable[[BuddyClient], Awaitable[str]]] = {
    "/proc/buddyinfo": buddyinfo,
    "/sys/kernel/debug/extfrag/unusable_index": unusable_index,
    "/sys/kernel/debug/extfrag/extfrag_index": extfrag_index,
}
