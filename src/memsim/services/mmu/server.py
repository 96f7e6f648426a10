"""The MMU service's gRPC edge."""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass
from typing import Any

import grpc

from memsim.mmu.v1 import mmu_pb2 as pb
from memsim.mmu.v1 import mmu_pb2_grpc
from memsim.runtime.channel import open_channel
from memsim.runtime.errors import translate_errors
from memsim.runtime.server import Service
from memsim.services.frames import ranges_message
from memsim.services.mmu.config import MmuConfig
from memsim.services.mmu.core import Mmu
from memsim.services.mmu.errors import (
    InvalidRequest,
    MachineHalted,
    NoMemory,
    NoSuchProcess,
    NoSuchSegment,
    PermissionDenied,
    ProcessDead,
)
from memsim.services.mmu.frame_cache import FrameCache
from memsim.services.mmu.frames import mmu_frames
from memsim.services.mmu.metrics import MmuCollector, mmu_zone_pages
from memsim.services.mmu.policy_port import GrpcPolicy
from memsim.services.mmu.process import MPOL_BIND, MPOL_DEFAULT, SIGSEGV, Process
from memsim.services.mmu.service import AccessResult, MmuService
from memsim.services.mmu.slab_port import GrpcSlab
from memsim.services.mmu.swapfile import SwapFile
from memsim.services.mmu.vma import PROT_EXEC, PROT_WRITE
from memsim.services.mmu.zone_port import GrpcZone, ZonePort
from memsim.services.policy.client import PolicyClient
from memsim.services.policy.watch import SysctlFollower
from memsim.services.slab.client import SlabClient
from memsim.services.zone.router import dial_zone
from memsim.zone.v1 import zone_pb2 as zone_pb
from memsim.zone.v1 import zone_pb2_grpc

STATUS: dict[type[Exception], grpc.StatusCode] = {
    InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    NoSuchProcess: grpc.StatusCode.NOT_FOUND,
    NoSuchSegment: grpc.StatusCode.NOT_FOUND,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    ProcessDead: grpc.StatusCode.FAILED_PRECONDITION,
    NoMemory: grpc.StatusCode.RESOURCE_EXHAUSTED,
    MachineHalted: grpc.StatusCode.FAILED_PRECONDITION,
}
translate = translate_errors(STATUS)
# The proto's mempolicy modes and the core's names for them.
MEMPOLICY_MODES: dict[pb.MempolicyMode.ValueType, str] = {
    pb.MEMPOLICY_MODE_DEFAULT: MPOL_DEFAULT,
    pb.MEMPOLICY_MODE_BIND: MPOL_BIND,
}
MEMPOLICY_ENUMS = {name: mode for mode, name in MEMPOLICY_MODES.items()}
Context = grpc.aio.ServicerContext[Any, Any]


def access_message(result: AccessResult) -> pb.AccessResponse:
    response = pb.AccessResponse(minor_faults=result.minor_faults, major_faults=result.major_faults)
    if result.segfault is not None:
        response.signal = SIGSEGV
        response.fault_address = result.segfault.address
        response.fault_reason = result.segfault.reason
    return response


def process_info(mmu: Mmu, proc: Process) -> pb.ProcessInfo:
    mm = proc.mm
    shift = mmu.page_shift
    vmas = list(mm.space)
    return pb.ProcessInfo(
        pid=proc.pid,
        ppid=proc.ppid,
        name=proc.name,
        uid=proc.uid,
        nice=proc.nice,
        state=proc.state,
        exit_signal=proc.exit_signal,
        vm_size_pages=mm.space.total_pages,
        vm_peak_pages=mm.hiwater_vm,
        rss_pages=mm.rss,
        hiwater_rss_pages=mm.hiwater_rss,
        # VmData: private writable memory other than the stack; VmExe: the image.
        data_pages=sum(
            a.pages for a in vmas if a.prot & PROT_WRITE and not a.shared and not a.growsdown
        ),
        stack_pages=sum(a.pages for a in vmas if a.growsdown),
        exe_pages=sum(a.pages for a in vmas if a.prot & PROT_EXEC and a.name == proc.name),
        pte_pages=len(mm.pt.tables),
        swap_pages=mmu.swap_pages(proc),
        minor_faults=proc.minor_faults,
        major_faults=proc.major_faults,
        start_time_ms=proc.start_time_ms,
        cpu_time_ms=proc.cpu_time_ms,
        capabilities=sorted(proc.capabilities),
        nodes=list(proc.nodes),
        brk=mm.brk,
        oom_adj=proc.oom_adj,
        oom_score_adj=proc.oom_score_adj,
        committed_pages=mmu.committed_pages(proc),
        cgroup=proc.cgroup,
        mempolicy=MEMPOLICY_ENUMS[proc.mempolicy.mode],
        mempolicy_nodes=list(proc.mempolicy.nodes),
        vmas=[
            pb.Vma(start=a.start << shift, end=a.end << shift, perms=a.perms, name=a.name)
            for a in vmas
        ],
    )


class MmuServicer(mmu_pb2_grpc.MmuServicer):
    def __init__(self, service: MmuService) -> None:
        self.service = service
        self.mmu = service.mmu

    @translate
    async def CreateProcess(
        self, request: pb.CreateProcessRequest, context: Context
    ) -> pb.CreateProcessResponse:
        proc = await self.service.create_process(
            request.name,
            request.uid,
            request.parent_pid,
            request.nice,
            set(request.capabilities),
            list(request.nodes),
        )
        return pb.CreateProcessResponse(pid=proc.pid, token=proc.token)

    @translate
    async def Fork(self, request: pb.ForkRequest, context: Context) -> pb.CreateProcessResponse:
        child = await self.service.fork(request.caller.pid, request.caller.token, request.name)
        return pb.CreateProcessResponse(pid=child.pid, token=child.token)

    @translate
    async def Exit(self, request: pb.ExitRequest, context: Context) -> pb.ExitResponse:
        freed = await self.service.exit(request.caller.pid, request.caller.token)
        return pb.ExitResponse(freed_pages=freed)

    @translate
    async def Kill(self, request: pb.KillRequest, context: Context) -> pb.ExitResponse:
        freed = await self.service.exit(request.pid, None, request.signal or 9)
        return pb.ExitResponse(freed_pages=freed)

    @translate
    async def Mmap(self, request: pb.MmapRequest, context: Context) -> pb.MmapResponse:
        address = await self.service.mmap(
            request.caller.pid,
            request.caller.token,
            request.address,
            request.length_bytes,
            request.prot,
            request.flags,
        )
        return pb.MmapResponse(address=address)

    @translate
    async def Munmap(self, request: pb.MunmapRequest, context: Context) -> pb.MunmapResponse:
        freed = await self.service.munmap(
            request.caller.pid, request.caller.token, request.address, request.length_bytes
        )
        return pb.MunmapResponse(freed_pages=freed)

    @translate
    async def Mprotect(self, request: pb.MprotectRequest, context: Context) -> pb.MprotectResponse:
        await self.service.mprotect(
            request.caller.pid,
            request.caller.token,
            request.address,
            request.length_bytes,
            request.prot,
        )
        return pb.MprotectResponse()

    @translate
    async def Brk(self, request: pb.BrkRequest, context: Context) -> pb.BrkResponse:
        brk = await self.service.brk(request.caller.pid, request.caller.token, request.address)
        return pb.BrkResponse(address=brk)

    @translate
    async def Touch(self, request: pb.TouchRequest, context: Context) -> pb.AccessResponse:
        result = await self.service.touch(
            request.caller.pid,
            request.caller.token,
            request.address,
            request.length_bytes,
            not request.read_only,
        )
        return access_message(result)

    @translate
    async def Write(self, request: pb.WriteRequest, context: Context) -> pb.AccessResponse:
        result = await self.service.write(
            request.caller.pid, request.caller.token, request.address, request.data
        )
        return access_message(result)

    @translate
    async def Read(self, request: pb.ReadRequest, context: Context) -> pb.ReadResponse:
        result = await self.service.read(
            request.caller.pid, request.caller.token, request.address, request.length_bytes
        )
        return pb.ReadResponse(data=result.data, access=access_message(result))

    @translate
    async def ListProcesses(
        self, request: pb.ListProcessesRequest, context: Context
    ) -> pb.ListProcessesResponse:
        procs = self.mmu.processes.values() if request.all else self.mmu.alive()
        return pb.ListProcessesResponse(
            processes=[process_info(self.mmu, p) for p in procs], page_size_bytes=self.mmu.page_size
        )

    @translate
    async def ShmGet(self, request: pb.ShmGetRequest, context: Context) -> pb.ShmGetResponse:
        shmid = await self.service.shmget(
            request.caller.pid,
            request.caller.token,
            request.key,
            request.size_bytes,
            request.create,
        )
        return pb.ShmGetResponse(shmid=shmid)

    @translate
    async def ShmAttach(
        self, request: pb.ShmAttachRequest, context: Context
    ) -> pb.ShmAttachResponse:
        address = await self.service.shmat(
            request.caller.pid,
            request.caller.token,
            request.shmid,
            request.address,
            request.read_only,
        )
        return pb.ShmAttachResponse(address=address)

    @translate
    async def ShmDetach(
        self, request: pb.ShmDetachRequest, context: Context
    ) -> pb.ShmDetachResponse:
        freed = await self.service.shmdt(request.caller.pid, request.caller.token, request.address)
        return pb.ShmDetachResponse(freed_pages=freed)

    @translate
    async def ShmRemove(
        self, request: pb.ShmRemoveRequest, context: Context
    ) -> pb.ShmRemoveResponse:
        freed = await self.service.shmrm(request.caller.pid, request.caller.token, request.shmid)
        return pb.ShmRemoveResponse(freed_pages=freed)

    @translate
    async def SetProcessTimes(
        self, request: pb.SetProcessTimesRequest, context: Context
    ) -> pb.ProcessInfo:
        proc = self.mmu.process(request.pid)
        self.mmu.set_times(
            proc,
            request.cpu_time_ms if request.HasField("cpu_time_ms") else None,
            request.start_time_ms if request.HasField("start_time_ms") else None,
        )
        return process_info(self.mmu, proc)

    @translate
    async def SetOomAdj(self, request: pb.SetOomAdjRequest, context: Context) -> pb.ProcessInfo:
        proc = self.mmu.process(request.pid)
        self.mmu.set_oom_adj(proc, request.oom_adj, request.oom_score_adj)
        return process_info(self.mmu, proc)

    @translate
    async def SetCgroup(self, request: pb.SetCgroupRequest, context: Context) -> pb.ProcessInfo:
        proc = self.service.set_cgroup(request.pid, request.name)
        return process_info(self.mmu, proc)

    @translate
    async def SetMempolicy(
        self, request: pb.SetMempolicyRequest, context: Context
    ) -> pb.ProcessInfo:
        # An enum value memsim does not know reaches the core as its number,
        # which the core refuses as the unknown mode it is.
        mode = MEMPOLICY_MODES.get(request.mode, f"{request.mode}")
        proc = await self.service.set_mempolicy(
            request.caller.pid, request.caller.token, mode, list(request.nodes)
        )
        return process_info(self.mmu, proc)

    @translate
    async def GetStats(self, request: pb.GetStatsRequest, context: Context) -> pb.MmuStats:
        return mmu_stats(self.mmu, self.service.cache)

    @translate
    async def GetMmuFrames(
        self, request: pb.GetMmuFramesRequest, context: Context
    ) -> pb.GetMmuFramesResponse:
        frames = mmu_frames(self.mmu, self.service.cache)
        return pb.GetMmuFramesResponse(
            anon_pages=ranges_message(frames.anon),
            shmem_pages=ranges_message(frames.shmem),
            page_table_pages=ranges_message(frames.page_tables),
            frame_cache_pages=ranges_message(frames.frame_cache),
            block_pages=ranges_message(frames.blocks),
        )

    @translate
    async def GetProcess(self, request: pb.GetProcessRequest, context: Context) -> pb.ProcessInfo:
        return process_info(self.mmu, self.mmu.process(request.pid, alive=False))


def mmu_stats(mmu: Mmu, cache: FrameCache | None = None) -> pb.MmuStats:
    alive = mmu.alive()
    active, inactive = mmu.lru_counts()
    zones = [
        pb.MmuZonePages(
            node=node,
            zone=zone,
            anon_pages=counts["anon"],
            page_table_pages=counts["page_table"],
            shmem_pages=counts["shmem"],
            frame_cache_pages=counts["frame_cache"],
        )
        for (node, zone), counts in sorted(mmu_zone_pages(mmu, cache).items())
    ]
    return pb.MmuStats(
        page_size_bytes=mmu.page_size,
        anon_pages=active + inactive,
        page_table_pages=sum(len(p.mm.pt.tables) for p in alive),
        active_pages=active,
        inactive_pages=inactive,
        swap_total_pages=mmu.swap.total,
        swap_free_pages=mmu.swap.free,
        processes=len(alive),
        pswpin=mmu.swap_events["pswpin"],
        pswpout=mmu.swap_events["pswpout"],
        pgfault=mmu.faults["minor"] + mmu.faults["major"],
        pgmajfault=mmu.faults["major"],
        uptime_ms=mmu.clock_ms,
        committed_as_pages=max(mmu.committed_as, 0),
        commit_limit_pages=mmu.commit_limit,
        commit_refusals=mmu.commit_refusals,
        overcommit_memory=mmu.sysctls.overcommit_memory,
        zones=zones,
    )


class ReclaimerServicer(zone_pb2_grpc.ReclaimerServicer):
    """What the zone's kswapd and direct reclaim call: pages of one zone back."""

    def __init__(self, service: MmuService) -> None:
        self.service = service

    @translate
    async def ShrinkZone(
        self, request: zone_pb.ShrinkZoneRequest, context: Context
    ) -> zone_pb.ShrinkZoneResponse:
        scanned, reclaimed, lru_pages = await self.service.reclaim(
            request.zone.node, request.zone.zone, request.nr_to_reclaim, request.priority
        )
        return zone_pb.ShrinkZoneResponse(
            nr_scanned=scanned, nr_reclaimed=reclaimed, lru_pages=lru_pages
        )

    @translate
    async def DrainCache(
        self, request: zone_pb.DrainCacheRequest, context: Context
    ) -> zone_pb.DrainCacheResponse:
        return zone_pb.DrainCacheResponse(drained_pages=await self.service.drain_cache())


def mmu_service(config: MmuConfig | None = None, zone: ZonePort | None = None) -> Service:
    """The MMU service; with no zone given it dials the zone service at start and
    registers with it as a reclaimer."""
    return build_mmu_server(config, zone).service


@dataclass(frozen=True)
class MmuServer:
    """The bootstrap's Service and the MmuService behind it, for whoever wires
    the MMU to the rest of the machine in process (set_sysctls)."""

    service: Service
    mmu: MmuService


def build_mmu_server(config: MmuConfig | None = None, zone: ZonePort | None = None) -> MmuServer:
    """mmu_service, with its MmuService within reach."""
    config = config or MmuConfig.from_env()
    page_size = config.profile.page_size
    mmu = Mmu(config.profile, config.seed, swap_pages=config.swap_bytes // page_size)
    swapfile = (
        SwapFile(config.data_dir / f"swap-{os.getpid()}-{id(mmu):x}", page_size)
        if config.swap_bytes
        else None
    )
    service = MmuService(mmu, zone or _unconnected(), swapfile, config.swappiness)
    servicer = MmuServicer(service)
    reclaimer = ReclaimerServicer(service)
    channels: list[grpc.aio.Channel] = []
    tasks: list[asyncio.Task[None]] = []
    follower: SysctlFollower | None = None

    async def on_start(address: str) -> None:
        nonlocal follower
        if zone is None:  # a channel belongs to the loop the server runs on
            client, zone_channels = dial_zone(
                config.profile, config.zone_address, config.zone_nodes
            )
            channels.extend(zone_channels)
            service.zone = GrpcZone(client)
            await client.register_reclaimer("mmu", address)
        if config.slab_address is not None:
            channels.append(open_channel(config.slab_address))
            await service.connect_slab(GrpcSlab(SlabClient(channels[-1])))
        await service.boot()
        if config.policy_address is not None:
            # The policy's sysctls (overcommit, swappiness) and its panic.
            follower = SysctlFollower(config.policy_address, built.gate, service.follow_sysctls)
            follower.start()
            channels.append(open_channel(config.policy_address))
            policy = PolicyClient(channels[-1])
            # Memory cgroups: charges, uncharges and the group's OOM killer.
            service.policy = GrpcPolicy(policy, page_size)
            await policy.connect_task_source(address)
        if config.counters_refresh_ms:  # the commit check's counters, in the background
            tasks.append(
                asyncio.create_task(
                    service.refresh_counters_forever(config.counters_refresh_ms / 1000)
                )
            )

    async def on_stop() -> None:
        if follower is not None:
            await follower.stop()
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for channel in channels:
            await channel.close(None)
        if swapfile is not None:
            swapfile.close()

    def add(server: grpc.aio.Server) -> None:
        mmu_pb2_grpc.add_MmuServicer_to_server(servicer, server)
        zone_pb2_grpc.add_ReclaimerServicer_to_server(reclaimer, server)

    built = Service(
        name="mmu",
        service_names=[
            pb.DESCRIPTOR.services_by_name["Mmu"].full_name,
            zone_pb.DESCRIPTOR.services_by_name["Reclaimer"].full_name,
        ],
        add_to_server=add,
        collectors=[MmuCollector(mmu, service.cache)],
        on_start=on_start,
        on_stop=on_stop,
    )
    return MmuServer(built, service)


def _unconnected() -> ZonePort:
    from memsim.services.zone.ports import NotConnected

    port: ZonePort = NotConnected()  # type: ignore[assignment]
    return port
