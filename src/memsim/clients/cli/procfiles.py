"""`memsim cat PATH`, `memsim free`, `memsim ps`, `memsim slabtop` and `memsim
dmesg`: the files of /proc and debugfs that the machine serves, each produced
from the services that own the facts (zone and buddy for physical memory, mmu
for processes and swap, slab for kernel objects and vmalloc)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from memsim.clients.cli.nodes import BuddyNodes
from memsim.mmu.v1 import mmu_pb2
from memsim.procfs.buddyinfo import format_buddyinfo
from memsim.procfs.extfrag import format_index_file
from memsim.procfs.free import format_free
from memsim.procfs.maps import MapsEntry, format_maps
from memsim.procfs.meminfo import MemInfo, format_meminfo
from memsim.procfs.slabinfo import SlabinfoRow, format_slabinfo, format_slabtop
from memsim.procfs.status import ProcessStatus, format_status
from memsim.procfs.vmallocinfo import VmallocEntry, format_vmallocinfo
from memsim.procfs.vmstat import format_vmstat
from memsim.procfs.zoneinfo import format_zoneinfo
from memsim.services.buddy.client import BuddyClient
from memsim.services.mmu.client import MmuClient
from memsim.services.policy.client import PolicyClient
from memsim.services.slab.client import SlabClient
from memsim.services.zone.client import ZoneClient
from memsim.services.zone.router import ZoneRouter
from memsim.services.zone.vmstat import NUMA_STAT_ITEMS, ZONE_STAT_ITEMS
from memsim.slab.v1 import slab_pb2
from memsim.zone.v1 import zone_pb2


@dataclass
class Clients:
    # One service each, or (a machine with a zone and a buddy per node)
    # every node's, their answers merged.
    buddy: BuddyClient | BuddyNodes
    zone: ZoneClient | ZoneRouter
    mmu: MmuClient
    slab: SlabClient
    policy: PolicyClient


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
    fill_zone_stats(info, await c.mmu.stats(), await c.slab.slabinfo())
    names = list(ZONE_STAT_ITEMS) + (list(NUMA_STAT_ITEMS) if len(info.nodes) > 1 else [])
    return format_zoneinfo(info, names)


def fill_zone_stats(
    info: zone_pb2.GetZoneInfoResponse,
    mmu: mmu_pb2.MmuStats,
    slab: slab_pb2.GetSlabInfoResponse,
) -> None:
    """The zoned counters the zone service cannot know, from their owners:
    nr_anon_pages and nr_page_table_pages from the MMU's frames by zone,
    nr_slab_reclaimable and nr_slab_unreclaimable from the slab's pages by
    zone. A zone a service does not list keeps what the zone said."""
    from_mmu = {(z.node, z.zone): z for z in mmu.zones}
    from_slab = {(z.node, z.zone): z for z in slab.zones}
    for node in info.nodes:
        for zone in node.zones:
            key = (zone.ref.node, zone.ref.zone)
            held = from_mmu.get(key)
            if held is not None:
                zone.stats["nr_anon_pages"] = held.anon_pages
                zone.stats["nr_page_table_pages"] = held.page_table_pages
            slabs = from_slab.get(key)
            if slabs is not None:
                zone.stats["nr_slab_reclaimable"] = slabs.slab_reclaimable_pages
                zone.stats["nr_slab_unreclaimable"] = slabs.slab_unreclaimable_pages


async def vmstat(c: Clients) -> str:
    return format_vmstat(await c.zone.vmstat())


def slabinfo_rows(info: slab_pb2.GetSlabInfoResponse) -> list[SlabinfoRow]:
    return [
        SlabinfoRow(
            name=cache.name,
            active_objs=cache.active_objects,
            num_objs=cache.total_objects,
            objsize=cache.buffer_size_bytes,
            objperslab=cache.objects_per_slab,
            pagesperslab=1 << cache.gfporder,
            limit=cache.limit,
            batchcount=cache.batchcount,
            sharedfactor=cache.shared,
            active_slabs=cache.active_slabs,
            num_slabs=cache.total_slabs,
        )
        for cache in info.caches
    ]


async def slabinfo(c: Clients) -> str:
    return format_slabinfo(slabinfo_rows(await c.slab.slabinfo()))


async def slabtop(c: Clients, sort: str = "o", limit: int | None = None) -> str:
    info = await c.slab.slabinfo()
    return format_slabtop(slabinfo_rows(info), info.page_size_bytes, sort, limit)


async def vmallocinfo(c: Clients) -> str:
    info = await c.slab.vmallocinfo()
    entries = [
        VmallocEntry(
            addr=area.address,
            size=area.size_bytes,
            pages=area.pages,
            caller=area.caller,
            nodes=tuple(sorted(area.node_pages.items())),
        )
        for area in info.areas
    ]
    return format_vmallocinfo(entries, info.word_bytes)


async def dmesg(c: Clients) -> str:
    """The kernel log: what the slab allocator reported, then the OOM
    killer's and the sysctls' lines (each service keeps its own ring)."""
    lines = list((await c.slab.kernel_log()).lines)
    lines += [line.text for line in (await c.policy.kernel_log()).lines]
    return "".join(f"{line}\n" for line in lines)


# Profiles whose kernel is 32-bit (sizeof(void *) == 4): /proc/PID/maps pads
# names to column 49 there, to column 73 on the 64-bit ones. uClinux boards
# (nommu) are 32-bit too.
WORD_32_PROFILES = frozenset({"x86_32", "nommu"})
# CONFIG_NODES_SHIFT of x86_64 NUMA kernels: MAX_NUMNODES for Mems_allowed.
NUMA_MAX_NUMNODES = 64
# NR_CPUS, Kconfig's default on x86 in 2.6.24: the width of Cpus_allowed.
NR_CPUS = 8
# Capability numbers (include/linux/capability.h) of those memsim knows.
CAPABILITY_BITS = {
    "CAP_IPC_LOCK": 14,
    "CAP_SYS_RAWIO": 17,
    "CAP_SYS_ADMIN": 21,
    "CAP_SYS_RESOURCE": 24,
}
# HPAGE_SIZE / 1024 of each profile's kernel: x86 without PAE 4 MiB, x86_64
# 2 MiB, ppc64 16 MiB; uClinux has no hugetlbfs.
HUGEPAGE_KB = {"x86_32": 4096, "x86_64": 2048, "numa": 2048, "ppc": 16384}


@dataclass(frozen=True)
class Physical:
    """What zone knows of physical memory, in kB."""

    profile: str
    page_kb: int
    total_kb: int
    free_kb: int
    high_total_kb: int
    high_free_kb: int
    highmem: bool
    node_cpus: dict[int, list[int]]

    @classmethod
    def of(cls, info: zone_pb2.GetZoneInfoResponse) -> Physical:
        kb = info.page_size_bytes // 1024
        zones = [z for node in info.nodes for z in node.zones]
        high = [z for z in zones if z.ref.zone == "HighMem"]
        return cls(
            profile=info.profile,
            page_kb=kb,
            total_kb=sum(z.managed_pages for z in zones) * kb,
            free_kb=sum(z.free_pages for z in zones) * kb,
            high_total_kb=sum(z.managed_pages for z in high) * kb,
            high_free_kb=sum(z.free_pages for z in high) * kb,
            highmem=bool(high),
            node_cpus={node.node: list(node.cpus) for node in info.nodes},
        )


async def physical(c: Clients) -> Physical:
    return Physical.of(await c.zone.zoneinfo())


async def free(c: Clients, unit: str = "k") -> str:
    """free(1): Mem from the zones, Swap from the MMU's swap area."""
    mem = await physical(c)
    stats = await c.mmu.stats()
    swap_kb = stats.page_size_bytes // 1024
    return format_free(
        mem.total_kb,
        mem.free_kb,
        stats.swap_total_pages * swap_kb,
        stats.swap_free_pages * swap_kb,
        unit=unit,
    )


async def meminfo(c: Clients) -> str:
    """/proc/meminfo: zone's counts, the MMU's (with the commit accounting)
    and the slab's."""
    mem = await physical(c)
    stats = await c.mmu.stats()
    slab = await c.slab.slabinfo()
    vmalloc = await c.slab.vmallocinfo()
    kb = stats.page_size_bytes // 1024
    return format_meminfo(
        MemInfo(
            mem_total_kb=mem.total_kb,
            mem_free_kb=mem.free_kb,
            swap_cached_kb=stats.swap_cached_pages * kb,
            active_kb=stats.active_pages * kb,
            inactive_kb=stats.inactive_pages * kb,
            high_total_kb=mem.high_total_kb,
            high_free_kb=mem.high_free_kb,
            swap_total_kb=stats.swap_total_pages * kb,
            swap_free_kb=stats.swap_free_pages * kb,
            anon_pages_kb=stats.anon_pages * kb,
            page_tables_kb=stats.page_table_pages * kb,
            commit_limit_kb=stats.commit_limit_pages * kb,
            committed_as_kb=stats.committed_as_pages * kb,
            s_reclaimable_kb=slab.reclaimable_pages * kb,
            s_unreclaim_kb=slab.unreclaimable_pages * kb,
            vmalloc_total_kb=vmalloc.total_bytes >> 10,
            vmalloc_used_kb=vmalloc.used_bytes >> 10,
            vmalloc_chunk_kb=vmalloc.largest_chunk_bytes >> 10,
            highmem=mem.highmem,
            hugetlb=mem.profile in HUGEPAGE_KB,
            hugepagesize_kb=HUGEPAGE_KB.get(mem.profile, 0),
        )
    )


def user_name(uid: int) -> str:
    """ps's USER: memsim has one user name, root; other users show as numbers."""
    return "root" if uid == 0 else str(uid)


def percent_of(part_kb: int, total_kb: int) -> str:
    """procps' %MEM: rss * 1000 / MemTotal printed as "%2u.%u" (truncated)."""
    permille = part_kb * 1000 // total_kb if total_kb else 0
    return f"{permille // 10}.{permille % 10}"


PS_HEADER = f"{'PID':>5} {'USER':<8} {'VSZ':>8} {'RSS':>7} {'%MEM':>4} COMMAND\n"


async def ps(c: Clients) -> str:
    """ps aux's memory columns of every live process: VSZ and RSS in KiB."""
    mem = await physical(c)
    listing = await c.mmu.processes()
    kb = listing.page_size_bytes // 1024
    lines = [PS_HEADER]
    for p in sorted(listing.processes, key=lambda p: p.pid):
        rss_kb = p.rss_pages * kb
        lines.append(
            f"{p.pid:>5} {user_name(p.uid):<8} {p.vm_size_pages * kb:>8} {rss_kb:>7} "
            f"{percent_of(rss_kb, mem.total_kb):>4} {p.name}\n"
        )
    return "".join(lines)


def maps_text(info: mmu_pb2.ProcessInfo, profile: str) -> str:
    """/proc/PID/maps of one process: anonymous memory, so device 00:00 and inode 0."""
    bits = 32 if profile in WORD_32_PROFILES else 64
    return format_maps(
        (MapsEntry(v.start, v.end, v.perms, 0, 0, 0, 0, v.name) for v in info.vmas), bits
    )


def status_text(info: mmu_pb2.ProcessInfo, mem: Physical) -> str:
    """/proc/PID/status of one process: page counts as kB, capabilities and
    allowed nodes as the kernel's masks. A dead process has no mm: no Vm lines."""
    kb = mem.page_kb
    all_nodes = sorted(mem.node_cpus)
    nr_cpus = max([NR_CPUS, *(cpu + 1 for cpus in mem.node_cpus.values() for cpu in cpus)])
    nodes = list(info.nodes) or all_nodes
    if sorted(nodes) == all_nodes:  # never restricted: CPU_MASK_ALL
        cpus_mask = (1 << nr_cpus) - 1
    else:
        cpus_mask = sum(1 << cpu for n in nodes for cpu in mem.node_cpus.get(n, []))
    caps = sum(1 << CAPABILITY_BITS[cap] for cap in info.capabilities if cap in CAPABILITY_BITS)
    return format_status(
        ProcessStatus(
            name=info.name,
            state=info.state,
            pid=info.pid,
            ppid=info.ppid,
            tgid=info.pid,
            uid=info.uid,
            gid=info.uid,  # memsim has no groups: each user its own, as useradd makes
            vm_peak_kb=info.vm_peak_pages * kb,
            vm_size_kb=info.vm_size_pages * kb,
            vm_lck_kb=0,
            vm_hwm_kb=info.hiwater_rss_pages * kb,
            vm_rss_kb=info.rss_pages * kb,
            vm_data_kb=info.data_pages * kb,
            vm_stk_kb=info.stack_pages * kb,
            vm_exe_kb=info.exe_pages * kb,
            vm_lib_kb=0,
            vm_pte_kb=info.pte_pages * kb,
            vm_swap_kb=info.swap_pages * kb,
            threads=1,
            cap_inh=0,
            cap_prm=caps,
            cap_eff=caps,
            cpus_allowed=cpus_mask,
            mems_allowed=sum(1 << n for n in nodes),
            nr_cpus=nr_cpus,
            max_numnodes=1 if len(all_nodes) == 1 else NUMA_MAX_NUMNODES,
            has_mm=info.state != "X",
        )
    )


async def process_maps(c: Clients, pid: int) -> str:
    mem = await physical(c)
    return maps_text(await c.mmu.process(pid), mem.profile)


async def process_status(c: Clients, pid: int) -> str:
    mem = await physical(c)
    return status_text(await c.mmu.process(pid), mem)


PROC_FILES: dict[str, Callable[[Clients], Awaitable[str]]] = {
    "/proc/buddyinfo": buddyinfo,
    "/proc/meminfo": meminfo,
    "/proc/zoneinfo": zoneinfo,
    "/proc/vmstat": vmstat,
    "/proc/slabinfo": slabinfo,
    "/proc/vmallocinfo": vmallocinfo,
    "/sys/kernel/debug/extfrag/unusable_index": unusable_index,
    "/sys/kernel/debug/extfrag/extfrag_index": extfrag_index,
}


async def process_oom_score(c: Clients, pid: int) -> str:
    """/proc/PID/oom_score: badness() as the OOM killer would score it now."""
    return f"{await c.policy.oom_score(pid)}\n"


async def process_oom_adj(c: Clients, pid: int) -> str:
    return f"{(await c.policy.oom_adj(pid))[0]}\n"


async def process_oom_score_adj(c: Clients, pid: int) -> str:
    return f"{(await c.policy.oom_adj(pid))[1]}\n"


# /proc/PID/<file>: the files of one process.
PID_FILES: dict[str, Callable[[Clients, int], Awaitable[str]]] = {
    "maps": process_maps,
    "status": process_status,
    "oom_score": process_oom_score,
    "oom_adj": process_oom_adj,
    "oom_score_adj": process_oom_score_adj,
}
_PID_PATH = re.compile(r"/proc/(\d+)/([a-z_]+)")
FILE_NAMES = [*PROC_FILES, *(f"/proc/PID/{name}" for name in PID_FILES)]


def proc_file(path: str) -> Callable[[Clients], Awaitable[str]] | None:
    """What produces path: a fixed file, or one of /proc/PID/'s."""
    fixed = PROC_FILES.get(path)
    if fixed is not None:
        return fixed
    match = _PID_PATH.fullmatch(path)
    if match is None or match.group(2) not in PID_FILES or int(match.group(1)) >= 1 << 31:
        return None
    pid, produce = int(match.group(1)), PID_FILES[match.group(2)]

    async def read(c: Clients) -> str:
        return await produce(c, pid)

    return read
