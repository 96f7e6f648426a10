"""The zone allocator: __alloc_pages, free_hot_cold_page, kswapd and direct
reclaim of 2.6.24, over the buddy service and the registered reclaimers.

This is the service layer: the decisions are the kernel's, the state lives in
Machine, and every call out goes through a port. Every await leaves the state
consistent: pages are accounted to a zone or a pcp list before the next call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field

from memsim.services.zone import gfp as g
from memsim.services.zone import watermarks as wm
from memsim.services.zone.cpuset import (
    EVERY_NODE,
    MemsAllowed,
    bind_zonelist,
    check_bind_nodes,
    constrained_alloc,
    memory_nodes,
    policy_zone,
)
from memsim.services.zone.errors import BadFree, Halted, InvalidRequest, NotFound, OutOfMemory
from memsim.services.zone.machine import DEF_PRIORITY, Machine, Zone
from memsim.services.zone.ports import (
    BuddyPort,
    Constraint,
    OomPort,
    PeerZonePort,
    ReclaimerPort,
)

MAX_ALLOC_COUNT = 1 << 16
# The kernel loops for ever on small allocations that may not fail; memsim
# gives up after this many rounds of direct reclaim (what later kernels call
# MAX_RECLAIM_RETRIES) so that no request outlives its caller.
MAX_RECLAIM_RETRIES = 16
# congestion_wait(WRITE, HZ/50) between rounds: lets kswapd and frees run.
CONGESTION_WAIT_S = 0.002
# __GFP_NOFAIL without a deadline of its own retries this long.
NOFAIL_LIMIT_S = 5.0
# After an OOM round: time for the victim's memory to come back.
OOM_RETRY_S = 0.005


@dataclass
class Allocation:
    zone: Zone
    order: int
    pfns: list[int] = field(default_factory=list)


class ZoneAllocator:
    def __init__(self, machine: Machine, buddy: BuddyPort, *, kswapd: bool = True) -> None:
        self.machine = machine
        self.buddy = buddy
        # False: no kswapd thread (direct reclaim only). Only for runs that
        # must not depend on when a background thread happened to run.
        self.kswapd = kswapd
        self.reclaimers: dict[str, ReclaimerPort] = {}
        # zone -> reclaimer -> the LRU pages it last said it holds there
        self._lru_reports: dict[tuple[int, str], dict[str, int]] = {}
        self.failures: list[str] = []  # "page allocation failure" lines, for dmesg
        self._kswapd_wake = [asyncio.Event() for _ in range(machine.profile.nodes)]
        self._kswapd_order = [0] * machine.profile.nodes
        self._kswapd_tasks: list[asyncio.Task[None]] = []
        self.kswapd_runs = 0
        self.kswapd_wakeups = 0
        # The OOM killer (the policy service); None: an allocation reclaim
        # cannot serve fails, as with no killer.
        self.oom: OomPort | None = None
        self.oom_rounds: dict[str, int] = {}  # OOM rounds by the killer's decision
        self.oom_killed: set[int] = set()  # pids never served again
        # Mempolicies (mm/mempolicy.c): the nodes with memory, policy_zone,
        # and each MPOL_BIND nodemask's zonelist by highest zone, built once.
        self._memory_nodes = memory_nodes(machine)
        self._policy_zone = policy_zone(machine)
        self._bind_zonelists: dict[tuple[frozenset[int], str], list[Zone]] = {}
        # A machine split by node (machine.node set): the zone instances of
        # the other nodes, asked when a zonelist reaches their zones. A node
        # with no peer here is passed over.
        self.peers: dict[int, PeerZonePort] = {}

    # -- boot and lifecycle ----------------------------------------------------

    async def boot(self) -> None:
        """Hands every zone's managed pages to buddy and starts one kswapd per
        node (only its own node's, on a machine split by node)."""
        for zone in self.machine.owned_zones():
            if zone.managed:
                await self.buddy.create_arena(
                    zone.node,
                    zone.name,
                    zone.arena_start_pfn,
                    zone.managed,
                    self.machine.profile.max_order,
                )
        if self.kswapd:
            self.start_kswapd()

    def start_kswapd(self) -> None:
        self._kswapd_tasks = [
            asyncio.create_task(self._kswapd(node), name=f"kswapd{node}")
            for node in self.machine.owned_nodes
        ]

    async def stop(self) -> None:
        for task in self._kswapd_tasks:
            task.cancel()
        await asyncio.gather(*self._kswapd_tasks, return_exceptions=True)

    # -- validation --------------------------------------------------------------

    def _check(self, gfp_mask: int, order: int, count: int, cpu: int, extra: int = 0) -> None:
        g.check_gfp(gfp_mask)
        max_order = self.machine.profile.max_order
        if not 0 <= order < max_order:
            raise InvalidRequest(f"order {order} is outside 0..{max_order - 1}")
        if not 1 <= count <= MAX_ALLOC_COUNT:
            raise InvalidRequest(f"count {count} is outside 1..{MAX_ALLOC_COUNT}")
        if not 0 <= extra <= MAX_ALLOC_COUNT - count:
            raise InvalidRequest(f"extra {extra} is outside 0..{MAX_ALLOC_COUNT - count}")
        if extra and order:
            raise InvalidRequest(f"extra pages are order 0 only, not order {order}")
        self._check_cpu(cpu)

    def _check_cpu(self, cpu: int) -> None:
        cpus = self.machine.profile.cpus
        if not 0 <= cpu < cpus:
            raise InvalidRequest(f"cpu {cpu} is outside 0..{cpus - 1}")

    # -- allocation ----------------------------------------------------------------

    async def alloc_pages(
        self,
        gfp_mask: int,
        order: int,
        count: int,
        cpu: int,
        deadline_s: float | None = None,
        extra: int = 0,
        pid: int = 0,
        nodes: Iterable[int] = (),
        mempolicy_nodes: Iterable[int] = (),
    ) -> list[Allocation]:
        """count blocks of 2^order pages; a bulk returns fewer if memory runs out
        after the first block, and OutOfMemory if not even one can be had.
        extra: up to that many more order-0 pages, only if the bulk fast path
        can serve them with the count (a caller's per-CPU list refill).
        pid: the process the pages are for (the OOM killer's allocating task).
        nodes: its cpuset's nodes (empty: every node): the zones of other
        nodes are skipped as cpuset_zone_allowed skips them.
        mempolicy_nodes: its MPOL_BIND nodes (empty: MPOL_DEFAULT): the
        zonelist is theirs (see _zonelist_policy)."""
        self._check(gfp_mask, order, count, cpu, extra)
        cpuset = MemsAllowed.of(nodes, self.machine.profile.nodes)
        bind = check_bind_nodes(mempolicy_nodes, self.machine)
        self._check_not_killed(pid)
        node = self.machine.profile.cpu_node(cpu)
        highest = g.gfp_zone(gfp_mask, self.machine.zone_types)
        zonelist = self._zonelist_policy(gfp_mask, node, highest, bind, cpuset)
        if not zonelist:
            raise OutOfMemory(
                f"no populated zone can serve {g.format_gfp(gfp_mask)} on node {node}"
            )
        loop = asyncio.get_running_loop()
        until = loop.time() + (deadline_s if deadline_s is not None else NOFAIL_LIMIT_S)
        by_zone: dict[str, Allocation] = {}
        done = 0
        if order == 0 and count + extra > 1:
            fast = None
            if extra:
                fast = await self._alloc_bulk_fast(gfp_mask, cpu, zonelist, count + extra, cpuset)
            if fast is None and count > 1:
                fast = await self._alloc_bulk_fast(gfp_mask, cpu, zonelist, count, cpuset)
            if fast is None and count > 1:
                # What a zone has above its low watermark in one call; the
                # rest page by page, the slow way (reclaim, the OOM killer).
                fast = await self._alloc_bulk_fast(
                    gfp_mask, cpu, zonelist, count, cpuset, partial=True
                )
            for allocation in fast or ():
                by_zone[allocation.zone.name + str(allocation.zone.node)] = allocation
                done += len(allocation.pfns)
        for i in range(done, count):
            try:
                # A bulk that got some blocks is not a failure: only the first warns.
                mask = gfp_mask if i == 0 else gfp_mask | g.NOWARN
                zone, pfn = await self._alloc_one(mask, order, cpu, zonelist, until, pid, cpuset)
            except OutOfMemory:
                if i == 0:
                    raise
                break
            except (Exception, asyncio.CancelledError):
                # A panic mid-bulk, a killer that could not be asked, a caller
                # gone: the blocks taken so far go back, so that the failed
                # call leaves the zones as they were.
                taken = [(pfn, a.order) for a in by_zone.values() for pfn in a.pfns]
                if taken:
                    await self.free_pages(taken, cpu)
                raise
            allocation = by_zone.setdefault(zone.name + str(zone.node), Allocation(zone, order))
            allocation.pfns.append(pfn)
        return list(by_zone.values())

    def _zonelist_policy(
        self,
        gfp_mask: int,
        node: int,
        highest: str,
        bind: frozenset[int] | None,
        cpuset: MemsAllowed,
    ) -> list[Zone]:
        """alloc_pages_current and zonelist_policy of 2.6.24: the MPOL_BIND
        zonelist, unless the request is __GFP_THISNODE (the default policy),
        its highest zone is below policy_zone ("lower zones don't get a
        policy applied"), or none of the bind nodes is in the cpuset
        (cpuset_zonelist_valid_mems_allowed); else the CPU's node's own."""
        this_node = bool(gfp_mask & g.THISNODE)
        if (
            bind is not None
            and not this_node
            and self.machine.zone_types.index(highest) >= self._policy_zone
            and (cpuset.nodes is None or bind & cpuset.nodes)
        ):
            key = (bind, highest)
            zonelist = self._bind_zonelists.get(key)
            if zonelist is None:
                zonelist = self._bind_zonelists[key] = bind_zonelist(self.machine, bind, highest)
            return zonelist
        return self.machine.zonelist(node, highest, this_node)

    async def _alloc_bulk_fast(
        self,
        gfp_mask: int,
        cpu: int,
        zonelist: list[Zone],
        count: int,
        cpuset: MemsAllowed = EVERY_NODE,
        partial: bool = False,
    ) -> list[Allocation] | None:
        """alloc_pages_bulk's fast path (of later kernels): the first zone that
        stays above its low watermark with all count pages gone serves them,
        from the CPU's list and then in one bulk call to buddy instead of a
        refill every batch pages. Anything short goes the slow way. Like the
        first pass of __alloc_pages it keeps to the cpuset's own nodes.
        partial: the first zone with room above its low watermark serves as
        many of the count as fit (alloc_pages_bulk's own partial success);
        there the zones of another node's instance are asked too, for as
        many as its zones have above their low watermark."""
        classzone_idx = zonelist[0].type_idx
        asked: set[int] = set()
        for zone in zonelist:
            if not cpuset.softwall(zone, gfp_mask | g.HARDWALL):
                continue
            if not self.machine.owns(zone):
                if not partial or zone.node in asked:
                    continue
                asked.add(zone.node)
                pfns = await self._alloc_from_peer(
                    zone.node, gfp_mask, 0, count, cpu, wm.ALLOC_WMARK_LOW, zonelist[0]
                )
                if pfns:
                    return self._group(pfns, 0)
                continue
            reserve = zone.lowmem_reserve[classzone_idx]
            wanted = count
            if partial:
                # zone_watermark_ok(low + n) holds for n below this.
                wanted = min(count, zone.free_pages - zone.marks.low - reserve - 1)
                if wanted < 2:
                    continue
            if not wm.zone_watermark_ok(
                zone.free_pages, [], 0, zone.marks.low + wanted, reserve, 0
            ):
                continue
            pcp = zone.pcp[cpu][1 if gfp_mask & g.COLD else 0]
            pfns = [pcp.pages.popleft() for _ in range(min(wanted, pcp.count))]
            zone.pcp_hits += len(pfns)  # each page off the list is one hit
            if len(pfns) < wanted:
                more = await self.buddy.alloc_bulk(zone.node, zone.name, 0, wanted - len(pfns))
                zone.free_pages -= len(more)
                pfns += more
            for pfn in pfns:
                zone.handed_out[pfn] = 0
                self._count_alloc(zone, 0, zonelist[0], cpu)
            return [Allocation(zone, 0, pfns)]
        return None

    def _group(self, pfns: list[int], order: int) -> list[Allocation]:
        """Blocks of one order (from a peer) as an Allocation per zone."""
        by_zone: dict[tuple[int, str], Allocation] = {}
        for pfn in pfns:
            zone = self.machine.zone_of_pfn(pfn)
            assert zone is not None, f"a peer handed out pfn {pfn}, in no zone"
            by_zone.setdefault(zone.key, Allocation(zone, order)).pfns.append(pfn)
        return list(by_zone.values())

    async def _alloc_from_peer(
        self,
        node: int,
        gfp_mask: int,
        order: int,
        count: int,
        cpu: int,
        alloc_flags: int,
        preferred: Zone,
    ) -> list[int]:
        """Blocks from the zone instance of node (its own zones only, no
        reclaim, no OOM killer there); none if the node has no peer. The
        peer counts numa_miss on its zone; the foreign is the preferred's."""
        peer = self.peers.get(node)
        if peer is None:
            return []
        pfns = await peer.alloc_from_node(
            gfp_mask, order, count, cpu, alloc_flags & ~wm.ALLOC_CPUSET
        )
        if self.machine.events.numa:
            preferred.numa_stats["numa_foreign"] += len(pfns)
        return pfns

    async def alloc_for_peer(
        self, gfp_mask: int, order: int, count: int, cpu: int, alloc_flags: int
    ) -> list[Allocation]:
        """What another node's instance asks when its zonelist reaches this
        node: up to count blocks from this node's zones (THISNODE), each one
        get_page_from_freelist pass with alloc_flags. No reclaim and no OOM
        killer here: they are the asking instance's. A pass that fails wakes
        this node's kswapd, as __alloc_pages wakes every zonelist zone's."""
        self._check(gfp_mask, order, count, cpu)
        node = self.machine.node
        if node is None:
            raise InvalidRequest("peer_alloc_flags is for a zone instance of one node only")
        if alloc_flags & ~(
            wm.ALLOC_WMARK_MIN
            | wm.ALLOC_WMARK_LOW
            | wm.ALLOC_WMARK_HIGH
            | wm.ALLOC_HARDER
            | wm.ALLOC_HIGH
        ):
            raise InvalidRequest(f"peer_alloc_flags {alloc_flags:#x} has flags a peer may not ask")
        highest = g.gfp_zone(gfp_mask, self.machine.zone_types)
        zonelist = self.machine.zonelist(node, highest, this_node_only=True)
        got: list[tuple[Zone, int]] = []
        for _ in range(count) if zonelist else ():
            one = await self._get_page_from_freelist(
                gfp_mask, order, cpu, zonelist, alloc_flags, for_peer=True
            )
            if one is None:
                for zone in zonelist:
                    self.wakeup_kswapd(zone, order)
                break
            got.append(one)
        by_zone: dict[tuple[int, str], Allocation] = {}
        for zone, pfn in got:
            by_zone.setdefault(zone.key, Allocation(zone, order)).pfns.append(pfn)
        return list(by_zone.values())

    async def _alloc_one(
        self,
        gfp_mask: int,
        order: int,
        cpu: int,
        zonelist: list[Zone],
        until: float,
        pid: int = 0,
        cpuset: MemsAllowed = EVERY_NODE,
    ) -> tuple[Zone, int]:
        """__alloc_pages of 2.6.24, its cpuset checks included: the first
        pass and the last one before the OOM killer are hardwall (the
        cpuset's nodes only); the others softwall, and an atomic allocation's
        second pass ignores the cpuset."""
        loop = asyncio.get_running_loop()
        wait = bool(gfp_mask & g.WAIT)
        retries = 0
        while True:  # restart:
            got = await self._get_page_from_freelist(
                gfp_mask | g.HARDWALL,
                order,
                cpu,
                zonelist,
                wm.ALLOC_WMARK_LOW | wm.ALLOC_CPUSET,
                cpuset,
            )
            if got:
                return got
            for zone in zonelist:
                if cpuset.hardwall(zone):
                    self.wakeup_kswapd(zone, order)
            alloc_flags = wm.ALLOC_WMARK_MIN
            if not wait:
                alloc_flags |= wm.ALLOC_HARDER
            if gfp_mask & g.HIGH:
                alloc_flags |= wm.ALLOC_HIGH
            if wait:
                alloc_flags |= wm.ALLOC_CPUSET
            got = await self._get_page_from_freelist(
                gfp_mask, order, cpu, zonelist, alloc_flags, cpuset
            )
            if got:
                return got
            if not wait:  # atomic allocations cannot reclaim
                break
            # rebalance: reclaim until it frees something that serves us, or
            # the OOM killer frees something (then goto restart).
            restart = False
            while True:
                self.machine.events.count("allocstall")
                progress = await self._try_to_free_pages(zonelist, order, gfp_mask, cpuset)
                if order:
                    await self.drain_all_pages()
                if progress:
                    got = await self._get_page_from_freelist(
                        gfp_mask, order, cpu, zonelist, alloc_flags, cpuset
                    )
                    if got:
                        return got
                elif gfp_mask & g.FS and not gfp_mask & g.NORETRY:
                    # Last look with a very high watermark before the OOM killer.
                    got = await self._get_page_from_freelist(
                        gfp_mask | g.HARDWALL,
                        order,
                        cpu,
                        zonelist,
                        wm.ALLOC_WMARK_HIGH | wm.ALLOC_CPUSET,
                        cpuset,
                    )
                    if got:
                        return got
                    # The OOM killer will not help higher order allocs so fail.
                    if self.oom is not None and order <= g.PAGE_ALLOC_COSTLY_ORDER:
                        constraint, oom_nodes = constrained_alloc(
                            zonelist, gfp_mask, cpuset, self._memory_nodes
                        )
                        restart = await self._out_of_memory(
                            gfp_mask, order, pid, oom_nodes, constraint
                        )
                        break
                    if not gfp_mask & g.NOFAIL:
                        break
                do_retry = (
                    not gfp_mask & g.NORETRY
                    and (order <= g.PAGE_ALLOC_COSTLY_ORDER or bool(gfp_mask & g.REPEAT))
                ) or bool(gfp_mask & g.NOFAIL)
                retries += 1
                out_of_time = loop.time() >= until
                if (
                    not do_retry
                    or out_of_time
                    or (retries >= MAX_RECLAIM_RETRIES and not gfp_mask & g.NOFAIL)
                ):
                    break
                await asyncio.sleep(CONGESTION_WAIT_S)
            if not restart or loop.time() >= until:
                break
            # goto restart: the victim's pages are on their way back.
            await asyncio.sleep(OOM_RETRY_S)
        self._warn_failure(gfp_mask, order)
        raise OutOfMemory(
            f"page allocation failure. order:{order}, mode:{gfp_mask:#x} "
            f"({g.format_gfp(gfp_mask)}): no zone in the zonelist has a free "
            "block above its watermark and reclaim freed nothing"
        )

    def _check_not_killed(self, pid: int) -> None:
        if pid and pid in self.oom_killed:
            raise OutOfMemory(f"process {pid} was killed by the OOM killer: no more pages for it")

    async def _out_of_memory(
        self,
        gfp_mask: int,
        order: int,
        pid: int,
        nodes: tuple[int, ...],
        constraint: Constraint,
    ) -> bool:
        """out_of_memory() and what __alloc_pages does after: True to try
        again (a process was killed, or an earlier victim is still dying),
        False to fail the allocation. The killed are refused from now on, so
        that a victim's own fault in flight ends."""
        assert self.oom is not None
        verdict = await self.oom.out_of_memory(gfp_mask, order, pid, nodes, constraint)
        self.oom_rounds[verdict.decision] = self.oom_rounds.get(verdict.decision, 0) + 1
        self.oom_killed.update(verdict.killed)
        if verdict.decision == "panic":
            raise Halted(verdict.message)
        self._check_not_killed(pid)
        return verdict.decision in ("killed", "wait")

    def _warn_failure(self, gfp_mask: int, order: int) -> None:
        if not gfp_mask & g.NOWARN:
            self.failures.append(
                f"memsim: page allocation failure. order:{order}, mode:{gfp_mask:#x}"
            )

    async def _get_page_from_freelist(
        self,
        gfp_mask: int,
        order: int,
        cpu: int,
        zonelist: list[Zone],
        alloc_flags: int,
        cpuset: MemsAllowed = EVERY_NODE,
        for_peer: bool = False,
    ) -> tuple[Zone, int] | None:
        """for_peer: served for another node's instance (a numa_miss here).
        On a machine split by node, the zones of another node are asked of
        its instance, once per pass, where the zonelist reaches them."""
        classzone_idx = zonelist[0].type_idx
        asked: set[int] = set()
        for zone in zonelist:
            if alloc_flags & wm.ALLOC_CPUSET and not cpuset.softwall(zone, gfp_mask):
                continue
            if not self.machine.owns(zone):
                if zone.node in asked:
                    continue
                asked.add(zone.node)
                pfns = await self._alloc_from_peer(
                    zone.node, gfp_mask, order, 1, cpu, alloc_flags, zonelist[0]
                )
                if pfns:
                    remote = self.machine.zone_of_pfn(pfns[0])
                    assert remote is not None, f"a peer handed out pfn {pfns[0]}, in no zone"
                    return remote, pfns[0]
                continue
            if not alloc_flags & wm.ALLOC_NO_WATERMARKS:
                mark = (
                    zone.marks.min
                    if alloc_flags & wm.ALLOC_WMARK_MIN
                    else zone.marks.low
                    if alloc_flags & wm.ALLOC_WMARK_LOW
                    else zone.marks.high
                )
                if not await self._watermark_ok(zone, order, mark, classzone_idx, alloc_flags):
                    continue
            pfn = await self._buffered_rmqueue(zone, order, gfp_mask, cpu)
            if pfn is not None:
                self._count_alloc(zone, order, zonelist[0], cpu, miss=for_peer)
                return zone, pfn
        return None

    async def _watermark_ok(
        self, zone: Zone, order: int, mark: int, classzone_idx: int, alloc_flags: int
    ) -> bool:
        nr_free = await self.buddy.nr_free(zone.node, zone.name) if order else []
        return wm.zone_watermark_ok(
            zone.free_pages, nr_free, order, mark, zone.lowmem_reserve[classzone_idx], alloc_flags
        )

    async def _buffered_rmqueue(
        self, zone: Zone, order: int, gfp_mask: int, cpu: int
    ) -> int | None:
        if order == 0:
            pcp = zone.pcp[cpu][1 if gfp_mask & g.COLD else 0]
            if not pcp.pages:
                pfns = await self.buddy.alloc_bulk(zone.node, zone.name, 0, pcp.batch)
                zone.free_pages -= len(pfns)
                pcp.pages.extend(pfns)  # rmqueue_bulk adds each at the tail
                if not pcp.pages:
                    return None
                zone.pcp_refills += 1
            else:
                zone.pcp_hits += 1
            pfn = pcp.pages.popleft()
        else:
            got = await self.buddy.alloc_bulk(zone.node, zone.name, order, 1)
            if not got:
                return None
            pfn = got[0]
            zone.free_pages -= 1 << order
        zone.handed_out[pfn] = order
        return pfn

    def _count_alloc(
        self, zone: Zone, order: int, preferred: Zone, cpu: int, miss: bool = False
    ) -> None:
        """PGALLOC, and zone_statistics on NUMA: a page from another node than
        the zonelist's first zone is a miss here and a foreign there (miss:
        served for another node's instance, which counts the foreign)."""
        self.machine.events.count_zone("pgalloc", zone.name, 1 << order)
        if self.machine.events.numa:
            stats = zone.numa_stats
            if miss:
                stats["numa_miss"] += 1
            elif zone.node == preferred.node:
                stats["numa_hit"] += 1
            else:
                stats["numa_miss"] += 1
                preferred.numa_stats["numa_foreign"] += 1
            local = zone.node == self.machine.profile.cpu_node(cpu)
            stats["numa_local" if local else "numa_other"] += 1

    # -- freeing ---------------------------------------------------------------

    async def free_pages(
        self, blocks: Iterable[tuple[int, int]], cpu: int, cold: bool = False
    ) -> int:
        """Frees blocks this service handed out: order 0 to the CPU's pcp list
        (free_hot_cold_page), larger ones straight to buddy (__free_pages_ok).
        On a machine split by node, blocks of another node go to its
        instance (after this node's are checked, before they are freed: a
        refusal there changes nothing here)."""
        self._check_cpu(cpu)
        batch = list(blocks)
        if not batch:
            raise InvalidRequest("the batch of blocks to free is empty")
        seen: set[int] = set()
        zones: list[Zone] = []
        elsewhere: dict[int, list[tuple[int, int]]] = {}
        local: list[tuple[int, int]] = []
        for pfn, order in batch:
            zone = self.machine.zone_of_pfn(pfn)
            if zone is None:
                raise InvalidRequest(f"pfn {pfn} is in no zone of this machine")
            if not self.machine.owns(zone):
                if zone.node not in self.peers:
                    raise BadFree(
                        f"pfn {pfn} is on node {zone.node}, whose zone instance this "
                        f"one (node {self.machine.node}) does not know"
                    )
                elsewhere.setdefault(zone.node, []).append((pfn, order))
                continue
            local.append((pfn, order))
            handed = zone.handed_out.get(pfn)
            if handed is None:
                raise BadFree(
                    f"pfn {pfn} ({zone.name}) was not handed out by the zone "
                    "allocator, or is already free"
                )
            if handed != order:
                raise BadFree(
                    f"pfn {pfn} was allocated with order {handed}, freed with order {order}"
                )
            if pfn in seen:
                raise BadFree(f"double free: pfn {pfn} appears twice in the batch")
            seen.add(pfn)
            zones.append(zone)
        freed = 0
        for node, remote in elsewhere.items():
            freed += await self.peers[node].free(remote, cpu, cold)
        to_buddy: dict[tuple[tuple[int, str], int], list[int]] = {}
        local_freed = 0
        for (pfn, order), zone in zip(local, zones, strict=True):
            del zone.handed_out[pfn]
            local_freed += 1 << order
            if order:
                to_buddy.setdefault((zone.key, order), []).append(pfn)
                continue
            pcp = zone.pcp[cpu][1 if cold else 0]
            pcp.pages.appendleft(pfn)
            if pcp.count >= pcp.high:  # drain a batch of the coldest pages
                drained = [pcp.pages.pop() for _ in range(min(pcp.batch, pcp.count))]
                to_buddy.setdefault((zone.key, 0), []).extend(drained)
        if local_freed:
            self.machine.events.count("pgfree", local_freed)
        for (key, order), pfns in to_buddy.items():
            zone = self.machine.zones[key]
            await self.buddy.free_bulk(zone.node, zone.name, order, pfns)
            zone.returned_to_buddy(len(pfns) << order)
        return freed + local_freed

    async def drain_all_pages(self) -> int:
        """Every pcp list of every CPU back to buddy, the reclaimers' own
        per-CPU lists first (their pages come back through the pcp lists)."""
        drained = 0
        # Newest first: a later reclaimer may hold objects of an earlier one
        # (the MMU holds slab objects, which the slab can free only after).
        for reclaimer in reversed(list(self.reclaimers.values())):
            await reclaimer.drain_cache()
        for zone in self.machine.owned_zones():
            pfns: list[int] = []
            for hot, cold in zone.pcp:
                for pcp in (hot, cold):
                    pfns.extend(pcp.pages)
                    pcp.pages.clear()
            if pfns:
                await self.buddy.free_bulk(zone.node, zone.name, 0, pfns)
                zone.returned_to_buddy(len(pfns))
                drained += len(pfns)
        return drained

    # -- reclaim -----------------------------------------------------------------

    def register_reclaimer(self, name: str, reclaimer: ReclaimerPort) -> int:
        if not name:
            raise InvalidRequest("a reclaimer needs a name")
        self.reclaimers[name] = reclaimer
        return len(self.reclaimers)

    def unregister_reclaimer(self, name: str) -> int:
        if self.reclaimers.pop(name, None) is None:
            raise NotFound(f"no reclaimer named {name!r}")
        return len(self.reclaimers)

    async def _shrink_zone(
        self, zone: Zone, nr_to_reclaim: int, gfp_mask: int, priority: int, kswapd: bool
    ) -> int:
        """Asks every reclaimer in turn until nr_to_reclaim pages came back."""
        reclaimed = 0
        for name, reclaimer in list(self.reclaimers.items()):
            if reclaimed >= nr_to_reclaim:
                break
            scanned, got, lru_pages = await reclaimer.shrink_zone(
                zone.node, zone.name, nr_to_reclaim - reclaimed, gfp_mask, priority, kswapd
            )
            reclaimed += got
            zone.pages_scanned += scanned
            if lru_pages is not None:  # NR_ACTIVE + NR_INACTIVE, as the owners report
                reports = self._lru_reports.setdefault(zone.key, {})
                reports[name] = lru_pages
                zone.lru_pages = sum(reports.values())
            events = self.machine.events
            events.count_zone("pgscan_kswapd" if kswapd else "pgscan_direct", zone.name, scanned)
            events.count_zone("pgsteal", zone.name, got)
            if kswapd:
                events.count("kswapd_steal", got)
        return reclaimed

    async def _try_to_free_pages(
        self,
        zonelist: list[Zone],
        order: int,
        gfp_mask: int,
        cpuset: MemsAllowed = EVERY_NODE,
    ) -> int:
        """Direct reclaim: SWAP_CLUSTER_MAX pages from each zone of the zonelist
        that the cpuset allows (shrink_zones: hardwall), trying harder (lower
        priority) until something comes back."""
        zones = [zone for zone in zonelist if cpuset.hardwall(zone)]
        for priority in range(DEF_PRIORITY, -1, -1):
            reclaimed = 0
            for zone in zones:
                if zone.all_unreclaimable and priority != DEF_PRIORITY:
                    continue  # let kswapd poll it
                reclaimed += await self._shrink_zone(
                    zone, wm.SWAP_CLUSTER_MAX, gfp_mask, priority, kswapd=False
                )
            if reclaimed:
                return reclaimed
            if not self.reclaimers:
                break
        return 0

    def wakeup_kswapd(self, zone: Zone, order: int) -> None:
        """wakeup_kswapd: only when the zone is below its low watermark (and
        only this instance's own zones: another node's instance wakes its own)."""
        if not self.machine.owns(zone):
            return
        if zone.free_pages - (1 << order) + 1 > zone.marks.low:
            return
        node = zone.node
        self._kswapd_order[node] = max(self._kswapd_order[node], order)
        if not self._kswapd_wake[node].is_set():
            self.kswapd_wakeups += 1
            self._kswapd_wake[node].set()

    def kswapd_sleeping(self, node: int) -> bool:
        """True while the node's kswapd waits for a wake-up."""
        return not self._kswapd_wake[node].is_set()

    async def _kswapd(self, node: int) -> None:
        while True:
            await self._kswapd_wake[node].wait()
            order, self._kswapd_order[node] = self._kswapd_order[node], 0
            self.kswapd_runs += 1
            await self.balance_pgdat(node, order)
            self._kswapd_wake[node].clear()

    async def balance_pgdat(self, node: int, order: int) -> int:
        """Reclaims from the node's zones until each is above its high watermark,
        or a pass at every priority brought nothing back."""
        total = 0
        zones = list(reversed(self.machine.node_zones(node)))
        for priority in range(DEF_PRIORITY, -1, -1):
            self.machine.events.count("pageoutrun")
            below = [z for z in zones if z.free_pages - (1 << order) + 1 <= z.marks.high]
            if not below:
                break
            reclaimed = 0
            for zone in below:
                if zone.all_unreclaimable and priority != DEF_PRIORITY:
                    continue
                zone.prev_priority = priority
                got = await self._shrink_zone(
                    zone, wm.SWAP_CLUSTER_MAX, g.GFP_KERNEL, priority, kswapd=True
                )
                reclaimed += got
                # Scanned six times over what the LRU holds and nothing came back.
                if not got and zone.pages_scanned >= 6 * zone.lru_pages:
                    zone.all_unreclaimable = True
            total += reclaimed
            if not self.reclaimers:
                break
        for zone in zones:
            zone.prev_priority = DEF_PRIORITY
        return total
