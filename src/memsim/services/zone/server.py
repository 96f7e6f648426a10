"""The zone service's gRPC edge."""

from __future__ import annotations

from typing import Any

import grpc

from memsim.common.v1 import common_pb2
from memsim.policy.v1 import policy_pb2 as policy_pb
from memsim.runtime.channel import open_channel
from memsim.runtime.config import parse_address
from memsim.runtime.errors import translate_errors
from memsim.runtime.logs import get_logger
from memsim.runtime.server import Service
from memsim.services.buddy.client import BuddyClient
from memsim.services.frames import ranges_message
from memsim.services.policy.client import PolicyClient
from memsim.services.policy.watch import SysctlFollower, sysctl_values
from memsim.services.zone.allocator import Allocation, ZoneAllocator
from memsim.services.zone.client import ZoneClient
from memsim.services.zone.config import ZoneConfig
from memsim.services.zone.errors import (
    BadFree,
    Halted,
    InvalidRequest,
    KillerUnavailable,
    NotFound,
    OutOfMemory,
)
from memsim.services.zone.frames import pcp_ranges
from memsim.services.zone.machine import Machine, Zone
from memsim.services.zone.metrics import ZoneCollector
from memsim.services.zone.oom_client import PolicyOom
from memsim.services.zone.peers import RemoteZonePort
from memsim.services.zone.ports import BuddyPort, NotConnected
from memsim.services.zone.reclaimer_client import ReclaimerClient
from memsim.services.zone.vmstat import NUMA_STAT_ITEMS, ZONE_STAT_ITEMS
from memsim.zone.v1 import zone_pb2 as pb
from memsim.zone.v1 import zone_pb2_grpc

STATUS: dict[type[Exception], grpc.StatusCode] = {
    InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    OutOfMemory: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Halted: grpc.StatusCode.FAILED_PRECONDITION,
    BadFree: grpc.StatusCode.FAILED_PRECONDITION,
    NotFound: grpc.StatusCode.NOT_FOUND,
    KillerUnavailable: grpc.StatusCode.UNAVAILABLE,
}
translate = translate_errors(STATUS)
Context = grpc.aio.ServicerContext[Any, Any]
log = get_logger("memsim.zone")


def zone_stats(zone: Zone, numa: bool) -> dict[str, int]:
    """The zoned counters of one zone (zone_page_state), as zoneinfo lists them."""
    stats = dict.fromkeys(ZONE_STAT_ITEMS, 0)
    stats["nr_free_pages"] = zone.free_pages
    if numa:
        stats.update(zone.numa_stats)
    return stats


class ZoneServicer(zone_pb2_grpc.ZoneAllocatorServicer):
    def __init__(self, allocator: ZoneAllocator) -> None:
        self.allocator = allocator
        self.machine = allocator.machine

    @translate
    async def AllocPages(
        self, request: pb.AllocPagesRequest, context: Context
    ) -> pb.AllocPagesResponse:
        if request.peer_alloc_flags:
            return self._response(
                await self.allocator.alloc_for_peer(
                    request.gfp_mask,
                    request.order,
                    request.count,
                    request.cpu,
                    request.peer_alloc_flags,
                )
            )
        failures = len(self.allocator.failures)
        try:
            allocations = await self.allocator.alloc_pages(
                request.gfp_mask,
                request.order,
                request.count,
                request.cpu,
                deadline_s=context.time_remaining(),
                extra=request.extra,
                pid=request.pid,
                nodes=tuple(request.nodes),
                mempolicy_nodes=tuple(request.mempolicy_nodes),
            )
        finally:
            for line in self.allocator.failures[failures:]:
                log.warning(line)
        return self._response(allocations)

    @staticmethod
    def _response(allocations: list[Allocation]) -> pb.AllocPagesResponse:
        return pb.AllocPagesResponse(
            blocks=[
                pb.ZoneBlocks(
                    zone=common_pb2.ArenaRef(node=a.zone.node, zone=a.zone.name),
                    order=a.order,
                    pfns=a.pfns,
                )
                for a in allocations
            ],
            allocated=sum(len(a.pfns) for a in allocations),
        )

    @translate
    async def FreePages(
        self, request: pb.FreePagesRequest, context: Context
    ) -> pb.FreePagesResponse:
        freed = await self.allocator.free_pages(
            [(b.pfn, b.order) for b in request.blocks], request.cpu, request.cold
        )
        return pb.FreePagesResponse(freed_pages=freed)

    @translate
    async def GetZoneInfo(
        self, request: pb.GetZoneInfoRequest, context: Context
    ) -> pb.GetZoneInfoResponse:
        profile = self.machine.profile
        numa = profile.nodes > 1
        nodes = []
        for node in self.machine.owned_nodes:
            zones = [
                pb.Zone(
                    ref=common_pb2.ArenaRef(node=z.node, zone=z.name),
                    start_pfn=z.start_pfn,
                    spanned_pages=z.spanned,
                    present_pages=z.present,
                    managed_pages=z.managed,
                    free_pages=z.free_pages,
                    min_pages=z.marks.min,
                    low_pages=z.marks.low,
                    high_pages=z.marks.high,
                    lowmem_reserve_pages=z.lowmem_reserve,
                    pagesets=[
                        pb.PerCpuPages(cpu=cpu, count=pcp.count, high=pcp.high, batch=pcp.batch)
                        for cpu, lists in enumerate(z.pcp)
                        for pcp in lists
                    ],
                    pages_scanned=z.pages_scanned,
                    all_unreclaimable=z.all_unreclaimable,
                    stats=zone_stats(z, numa),
                    zone_idx=z.type_idx,
                    stat_threshold=z.stat_threshold,
                )
                for z in self.machine.node_zones(node)
            ]
            nodes.append(
                pb.Node(
                    node=node,
                    zones=zones,
                    distances=profile.distances[node],
                    cpus=profile.node_cpus(node),
                )
            )
        return pb.GetZoneInfoResponse(
            nodes=nodes,
            page_size_bytes=profile.page_size,
            max_order=profile.max_order,
            profile=profile.name,
            mmu=profile.mmu,
        )

    @translate
    async def GetVmstat(
        self, request: pb.GetVmstatRequest, context: Context
    ) -> pb.GetVmstatResponse:
        numa = self.machine.profile.nodes > 1
        totals = dict.fromkeys(ZONE_STAT_ITEMS + (NUMA_STAT_ITEMS if numa else ()), 0)
        for zone in self.machine.owned_zones():
            for name, value in zone_stats(zone, numa).items():
                totals[name] += value
        items = [pb.VmstatItem(name=n, value=v) for n, v in totals.items()]
        items += [pb.VmstatItem(name=n, value=v) for n, v in self.machine.events.counts.items()]
        return pb.GetVmstatResponse(items=items)

    def _settings(self) -> pb.WatermarkSettings:
        return pb.WatermarkSettings(
            min_free_kbytes=self.machine.min_free_kbytes,
            lowmem_reserve_ratio=self.machine.lowmem_reserve_ratio,
        )

    @translate
    async def GetWatermarkSettings(
        self, request: pb.GetWatermarkSettingsRequest, context: Context
    ) -> pb.WatermarkSettings:
        return self._settings()

    def follow_sysctls(self, state: policy_pb.WatchSysctlsResponse) -> None:
        """The policy service's vm.min_free_kbytes and vm.lowmem_reserve_ratio,
        applied at once as a write of either file does
        (setup_per_zone_pages_min, setup_per_zone_lowmem_reserve)."""
        values = sysctl_values(state)
        machine = self.machine
        min_free = values.get("vm.min_free_kbytes")
        ratio = values.get("vm.lowmem_reserve_ratio")
        ratios = [int(r) for r in ratio.split()] if ratio else machine.lowmem_reserve_ratio
        if len(ratios) != len(machine.lowmem_reserve_ratio):
            log.warning("lowmem_reserve_ratio_ignored", value=ratio)
            ratios = machine.lowmem_reserve_ratio
        new_min = int(min_free) if min_free else machine.min_free_kbytes
        ratios = [max(r, 1) for r in ratios]
        if (new_min, ratios) != (machine.min_free_kbytes, machine.lowmem_reserve_ratio):
            machine.min_free_kbytes, machine.lowmem_reserve_ratio = new_min, ratios
            machine.setup_watermarks()

    @translate
    async def SetWatermarkSettings(
        self, request: pb.SetWatermarkSettingsRequest, context: Context
    ) -> pb.WatermarkSettings:
        ratios = list(request.lowmem_reserve_ratio)
        expected = len(self.machine.lowmem_reserve_ratio)
        if ratios and len(ratios) != expected:
            raise InvalidRequest(
                f"lowmem_reserve_ratio needs {expected} values (one per zone "
                f"type below the highest), not {len(ratios)}"
            )
        if any(r < 0 for r in ratios):
            raise InvalidRequest(f"lowmem_reserve_ratio {ratios} has a negative value")
        if request.HasField("min_free_kbytes") and request.min_free_kbytes < 0:
            raise InvalidRequest(f"min_free_kbytes {request.min_free_kbytes} is negative")
        if request.HasField("min_free_kbytes"):
            self.machine.min_free_kbytes = request.min_free_kbytes
        if ratios:
            # setup_per_zone_lowmem_reserve raises a ratio below 1 to 1.
            self.machine.lowmem_reserve_ratio = [max(r, 1) for r in ratios]
        self.machine.setup_watermarks()
        return self._settings()

    @translate
    async def RegisterReclaimer(
        self, request: pb.RegisterReclaimerRequest, context: Context
    ) -> pb.RegisterReclaimerResponse:
        try:
            parse_address(request.address, "address")
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        old = self.allocator.reclaimers.get(request.name)
        count = self.allocator.register_reclaimer(
            request.name, ReclaimerClient(open_channel(request.address))
        )
        if isinstance(old, ReclaimerClient):
            await old.channel.close(None)
        return pb.RegisterReclaimerResponse(reclaimers=count)

    @translate
    async def UnregisterReclaimer(
        self, request: pb.UnregisterReclaimerRequest, context: Context
    ) -> pb.UnregisterReclaimerResponse:
        old = self.allocator.reclaimers.get(request.name)
        count = self.allocator.unregister_reclaimer(request.name)
        if isinstance(old, ReclaimerClient):
            await old.channel.close(None)
        return pb.UnregisterReclaimerResponse(reclaimers=count)

    @translate
    async def DrainPages(
        self, request: pb.DrainPagesRequest, context: Context
    ) -> pb.DrainPagesResponse:
        return pb.DrainPagesResponse(drained_pages=await self.allocator.drain_all_pages())

    @translate
    async def GetZoneFrames(
        self, request: pb.GetZoneFramesRequest, context: Context
    ) -> pb.GetZoneFramesResponse:
        profile = self.machine.profile
        return pb.GetZoneFramesResponse(
            zones=[
                pb.ZoneFrames(
                    zone=common_pb2.ArenaRef(node=z.node, zone=z.name),
                    start_pfn=z.start_pfn,
                    spanned_pages=z.spanned,
                    present_pages=z.present,
                    managed_pages=z.managed,
                    managed_start_pfn=z.arena_start_pfn,
                    pcp_pages=ranges_message(pcp_ranges(z)),
                )
                for node in self.machine.owned_nodes
                for z in self.machine.node_zones(node)
            ],
            page_size_bytes=profile.page_size,
            profile=profile.name,
        )


def zone_service(config: ZoneConfig | None = None, buddy: BuddyPort | None = None) -> Service:
    """The zone service; with no buddy given it dials the buddy service at
    start. With config.node, the instance of that node only: it dials the
    zone instances of the other nodes (config.peers) for its zonelists'
    remote zones and for frees of their pfns."""
    config = config or ZoneConfig.from_env()
    allocator = ZoneAllocator(
        Machine(config.profile, config.node),
        buddy or NotConnected(),  # type: ignore[arg-type]
        kswapd=config.kswapd,
    )
    servicer = ZoneServicer(allocator)
    channels: list[grpc.aio.Channel] = []

    follower: SysctlFollower | None = None

    async def on_start(address: str) -> None:
        nonlocal follower
        if buddy is None:  # a channel belongs to the loop the server runs on
            channels.append(open_channel(config.buddy_address))
            allocator.buddy = BuddyClient(channels[-1])
        for node, peer_address in config.peers.items():
            channels.append(open_channel(peer_address))
            allocator.peers[node] = RemoteZonePort(ZoneClient(channels[-1]))
        await allocator.boot()
        if config.policy_address is not None:
            channels.append(open_channel(config.policy_address))
            allocator.oom = PolicyOom(PolicyClient(channels[-1]), config.profile.nodes)
            follower = SysctlFollower(config.policy_address, service.gate, servicer.follow_sysctls)
            follower.start()

    async def on_stop() -> None:
        if follower is not None:
            await follower.stop()
        await allocator.stop()
        for channel in channels:
            await channel.close(None)

    service = Service(
        name="zone",
        service_names=[pb.DESCRIPTOR.services_by_name["ZoneAllocator"].full_name],
        add_to_server=lambda server: zone_pb2_grpc.add_ZoneAllocatorServicer_to_server(
            servicer, server
        ),
        collectors=[ZoneCollector(allocator)],
        on_start=on_start,
        on_stop=on_stop,
    )
    return service
