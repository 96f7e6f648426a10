"""`memsim cat PATH` and `memsim free`: the files of /proc and debugfs that the
machine serves, each produced from the services that own the facts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from memsim.procfs.buddyinfo import format_buddyinfo
from memsim.procfs.extfrag import format_index_file
from memsim.procfs.free import format_free
from memsim.procfs.vmstat import format_vmstat
from memsim.procfs.zoneinfo import format_zoneinfo
from memsim.services.buddy.client import BuddyClient
from memsim.services.zone.client import ZoneClient
from memsim.services.zone.vmstat import NUMA_STAT_ITEMS, ZONE_STAT_ITEMS


@dataclass
class Clients:
    buddy: BuddyClient
    zone: ZoneClient


async def buddyinfo(c: Clients) -> str:
    rows = await c.buddy.buddyinfo()
    return format_buddyinfo((r.arena.node, r.arena.zone, r.nr_free) for r in rows)


async def unusable_index(c: Clients) -> str:
    rows = await c.buddy.fragmentation()
    return format_index_file(
        (r.arena.node, r.arena.zone, r.unusable_free_index_milli) for r in rows
    )


async def extfrag_index(c: Clients) -> str:
    rows = await c.buddy.fragmentation()
    return format_index_file(
        (r.arena.node, r.arena.zone, r.fragmentation_index_milli) for r in rows
    )


async def zoneinfo(c: Clients) -> str:
    info = await c.zone.zoneinfo()
    names = list(ZONE_STAT_ITEMS) + (list(NUMA_STAT_ITEMS) if len(info.nodes) > 1 else [])
    return format_zoneinfo(info, names)


async def vmstat(c: Clients) -> str:
    return format_vmstat(await c.zone.vmstat())


async def free(c: Clients) -> str:
    info = await c.zone.zoneinfo()
    kb = info.page_size_bytes // 1024
    zones = [z for node in info.nodes for z in node.zones]
    return format_free(
        sum(z.managed_pages for z in zones) * kb, sum(z.free_pages for z in zones) * kb
    )


PROC_FILES: dict[str, Callable[[Clients], Awaitable[str]]] = {
    "/proc/buddyinfo": buddyinfo,
    "/proc/zoneinfo": zoneinfo,
    "/proc/vmstat": vmstat,
    "/sys/kernel/debug/extfrag/unusable_index": unusable_index,
    "/sys/kernel/debug/extfrag/extfrag_index": extfrag_index,
}
