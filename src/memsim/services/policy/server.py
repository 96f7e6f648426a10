"""The policy service's gRPC edge."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc

from memsim.policy.v1 import policy_pb2 as pb
from memsim.policy.v1 import policy_pb2_grpc
from memsim.runtime.channel import open_channel
from memsim.runtime.config import ConfigError, parse_address
from memsim.runtime.errors import status_for, translate_errors
from memsim.runtime.server import Service
from memsim.services.mmu.client import MmuClient
from memsim.services.policy.badness import ULONG_MAX
from memsim.services.policy.config import PolicyConfig
from memsim.services.policy.core import Policy
from memsim.services.policy.errors import (
    BadUncharge,
    BadValue,
    GroupBusy,
    GroupExists,
    NoSuchGroup,
    NoSuchTask,
    NotPermitted,
    Panicked,
    PolicyError,
    UnknownSysctl,
)
from memsim.services.policy.memcg import RESOURCE_MAX, MemCgroup
from memsim.services.policy.metrics import PolicyCollector
from memsim.services.policy.mmu_port import MmuTasks
from memsim.services.policy.oom import Constraint, Decision, GiveUp, Kill, Panic, Wait, as_long
from memsim.services.policy.overcommit import MemState
from memsim.services.policy.ports import PeerUnavailable, TaskSource, Unconnected
from memsim.services.policy.service import (
    OomCall,
    OomEvent,
    PolicyService,
    SysctlState,
    printed_lines,
)
from memsim.services.policy.sysctl import Change

STATUS: dict[type[Exception], grpc.StatusCode] = {
    BadValue: grpc.StatusCode.INVALID_ARGUMENT,
    UnknownSysctl: grpc.StatusCode.NOT_FOUND,
    NoSuchTask: grpc.StatusCode.NOT_FOUND,
    NoSuchGroup: grpc.StatusCode.NOT_FOUND,
    NotPermitted: grpc.StatusCode.PERMISSION_DENIED,
    GroupExists: grpc.StatusCode.ALREADY_EXISTS,
    GroupBusy: grpc.StatusCode.FAILED_PRECONDITION,
    BadUncharge: grpc.StatusCode.FAILED_PRECONDITION,
    Panicked: grpc.StatusCode.FAILED_PRECONDITION,
    PeerUnavailable: grpc.StatusCode.UNAVAILABLE,
}
translate = translate_errors(STATUS)
# Seconds a replaced channel to the MMU keeps for the calls still on it.
CLOSE_GRACE_S = 5.0
Context = grpc.aio.ServicerContext[Any, Any]


async def abort(context: Context, exc: PolicyError) -> None:
    """translate's mapping for the streaming handlers, which it cannot wrap."""
    code = status_for(exc, STATUS) or grpc.StatusCode.UNKNOWN
    await context.abort(code, str(exc))


CONSTRAINTS: dict[pb.Constraint.ValueType, Constraint] = {
    pb.CONSTRAINT_UNSPECIFIED: Constraint.NONE,
    pb.CONSTRAINT_NONE: Constraint.NONE,
    pb.CONSTRAINT_CPUSET: Constraint.CPUSET,
    pb.CONSTRAINT_MEMORY_POLICY: Constraint.MEMORY_POLICY,
    pb.CONSTRAINT_MEMORY_CGROUP: Constraint.MEMCG,
}
CONSTRAINT_ENUM = {c: n for n, c in CONSTRAINTS.items() if n != pb.CONSTRAINT_UNSPECIFIED}


def constraint_of(value: pb.Constraint.ValueType) -> Constraint:
    constraint = CONSTRAINTS.get(value)
    if constraint is None:
        raise BadValue(f"unknown constraint {value}")
    return constraint


def decision_enum(decision: Decision) -> pb.OomDecision.ValueType:
    if isinstance(decision, Kill):
        return pb.OOM_DECISION_KILLED
    if isinstance(decision, Wait):
        return pb.OOM_DECISION_WAIT
    if isinstance(decision, Panic):
        return pb.OOM_DECISION_PANIC
    assert isinstance(decision, GiveUp)
    return pb.OOM_DECISION_GIVE_UP


def int64(value: int) -> int:
    """An unsigned long as a signed int64 (ULONG_MAX is -1, as %li prints it)."""
    return as_long(value & ULONG_MAX)


def sysctl_messages(pairs: list[tuple[str, str]]) -> list[pb.Sysctl]:
    return [pb.Sysctl(name=name, value=value) for name, value in pairs]


def written(changes: list[Change]) -> list[pb.Sysctl]:
    return [pb.Sysctl(name=c.name, value=c.text) for c in changes]


def state_message(state: SysctlState) -> pb.WatchSysctlsResponse:
    return pb.WatchSysctlsResponse(
        sysctls=sysctl_messages(list(state.values)),
        generation=state.generation,
        panicked=state.panic_message is not None,
        panic_message=state.panic_message or "",
        changed=state.changed,
    )


def event_message(event: OomEvent, dropped: int) -> pb.WatchOomEventsResponse:
    decision = event.decision
    response = pb.WatchOomEventsResponse(
        seq=event.seq,
        decision=decision_enum(decision),
        victim_name=event.victim_name,
        freed_pages=event.freed_pages,
        message=event.message,
        constraint=CONSTRAINT_ENUM[event.constraint],
        memcg=event.memcg,
        timestamp_us=event.timestamp_us,
        dropped_events=dropped,
    )
    if isinstance(decision, Kill):
        response.chosen_pid = decision.chosen
        response.victim_pid = decision.victim
        response.score = int64(decision.score)
        response.also_killed_pids.extend(decision.also_killed)
    return response


def cgroup_message(group: MemCgroup) -> pb.Cgroup:
    return pb.Cgroup(
        name=group.name,
        limit_bytes=group.limit_bytes,
        unlimited=group.limit_bytes >= RESOURCE_MAX,
        usage_bytes=group.usage_bytes,
        max_usage_bytes=group.max_usage_bytes,
        failcnt=group.failcnt,
        pids=sorted(group.tasks),
    )


def _limit(request: pb.CreateCgroupRequest | pb.SetCgroupLimitRequest) -> int | None:
    """A cgroup request's limit in bytes; None: unset (no limit)."""
    return request.limit_bytes if request.HasField("limit_bytes") else None


def mem_state(message: pb.MemState, service: PolicyService) -> MemState:
    """The request's counters; RAM and swap are the machine's unless given."""
    machine = service.machine
    return MemState(
        totalram_pages=(
            message.totalram_pages if message.HasField("totalram_pages") else machine.totalram_pages
        ),
        total_swap_pages=(
            message.total_swap_pages
            if message.HasField("total_swap_pages")
            else machine.total_swap_pages
        ),
        nr_free_pages=message.nr_free_pages,
        nr_file_pages=message.nr_file_pages,
        nr_swap_pages=message.nr_swap_pages,
        nr_slab_reclaimable=message.nr_slab_reclaimable,
        totalreserve_pages=message.totalreserve_pages,
        hugetlb_pages=message.hugetlb_pages,
        nr_shmem=message.nr_shmem,
        page_size=machine.page_size,
    )


def _target(
    request: pb.ChargeCgroupRequest | pb.UnchargeCgroupRequest,
) -> tuple[str | None, int | None]:
    which = request.WhichOneof("target")
    if which == "name":
        return request.name, None
    if which == "pid":
        return None, request.pid
    return None, None


class PolicyServicer(policy_pb2_grpc.PolicyServicer):
    def __init__(self, service: PolicyService, link: MmuLink) -> None:
        self.service = service
        self.link = link

    # -- sysctls ---------------------------------------------------------------------

    @translate
    async def GetSysctl(
        self, request: pb.GetSysctlRequest, context: Context
    ) -> pb.GetSysctlResponse:
        name, value = self.service.get_sysctl(request.name)
        return pb.GetSysctlResponse(name=name, value=value)

    @translate
    async def ListSysctls(
        self, request: pb.ListSysctlsRequest, context: Context
    ) -> pb.ListSysctlsResponse:
        return pb.ListSysctlsResponse(sysctls=sysctl_messages(self.service.list_sysctls()))

    @translate
    async def SetSysctls(
        self, request: pb.SetSysctlsRequest, context: Context
    ) -> pb.SetSysctlsResponse:
        changes = self.service.set_sysctls(
            request.assignments, [(s.name, s.value) for s in request.sysctls], request.admin_token
        )
        return pb.SetSysctlsResponse(
            written=written(changes),
            lines=printed_lines(changes),
            generation=self.service.generation,
        )

    @translate
    async def ApplySysctlConf(
        self, request: pb.ApplySysctlConfRequest, context: Context
    ) -> pb.ApplySysctlConfResponse:
        changes = self.service.apply_sysctl_conf(
            request.text, request.filename, request.admin_token
        )
        return pb.ApplySysctlConfResponse(
            written=written(changes),
            lines=printed_lines(changes),
            generation=self.service.generation,
        )

    async def WatchSysctls(
        self, request: pb.WatchSysctlsRequest, context: Context
    ) -> AsyncIterator[pb.WatchSysctlsResponse]:
        watcher = self.service.watch_sysctls()
        try:
            while True:
                yield state_message(await watcher.next())
        finally:
            self.service.unwatch_sysctls(watcher)

    # -- commit accounting -----------------------------------------------------------

    @translate
    async def VmEnoughMemory(
        self, request: pb.VmEnoughMemoryRequest, context: Context
    ) -> pb.VmEnoughMemoryResponse:
        check = self.service.vm_enough_memory(
            request.pid,
            request.pages,
            mem_state(request.mem, self.service),
            cap_sys_admin=request.cap_sys_admin,
            total_vm=request.total_vm_pages,
        )
        response = pb.VmEnoughMemoryResponse(
            ok=check.ok,
            overcommit_memory=check.mode,
            committed_pages=check.committed,
            reason=check.reason,
        )
        if check.bound is not None:
            response.bound_pages = check.bound
        return response

    @translate
    async def VmUnacctMemory(
        self, request: pb.VmUnacctMemoryRequest, context: Context
    ) -> pb.VmUnacctMemoryResponse:
        committed = self.service.vm_unacct_memory(request.pid, request.pages)
        return pb.VmUnacctMemoryResponse(committed_pages=committed)

    @translate
    async def ReleaseTask(
        self, request: pb.ReleaseTaskRequest, context: Context
    ) -> pb.ReleaseTaskResponse:
        return pb.ReleaseTaskResponse(released_pages=self.service.release_task(request.pid))

    # -- the OOM killer ----------------------------------------------------------------

    @translate
    async def OutOfMemory(
        self, request: pb.OutOfMemoryRequest, context: Context
    ) -> pb.OutOfMemoryResponse:
        call = OomCall(
            gfp_mask=request.gfp_mask,
            order=request.order,
            pid=request.pid,
            constraint=constraint_of(request.constraint),
            nodemask=frozenset(request.nodemask) if request.nodemask else None,
            memcg=request.memcg or None,
        )
        outcome = await self.service.out_of_memory(call)
        decision = outcome.decision
        response = pb.OutOfMemoryResponse(
            decision=decision_enum(decision),
            freed_pages=outcome.freed_pages,
            message=outcome.message,
            log_lines=decision.log,
        )
        if isinstance(decision, Kill):
            response.victim_pid = decision.victim
            response.chosen_pid = decision.chosen
            response.score = int64(decision.score)
            response.also_killed_pids.extend(decision.also_killed)
        elif isinstance(decision, Wait):
            response.wait_pid = decision.pid
        return response

    async def WatchOomEvents(
        self, request: pb.WatchOomEventsRequest, context: Context
    ) -> AsyncIterator[pb.WatchOomEventsResponse]:
        since = request.since_seq if request.HasField("since_seq") else None
        try:
            watcher = self.service.watch_oom_events(since)
        except PolicyError as exc:
            await abort(context, exc)
            return
        try:
            while True:
                event, dropped = await watcher.next()
                yield event_message(event, dropped)
        finally:
            self.service.unwatch_oom_events(watcher)

    @translate
    async def GetKernelLog(
        self, request: pb.GetKernelLogRequest, context: Context
    ) -> pb.GetKernelLogResponse:
        log = self.service.log
        return pb.GetKernelLogResponse(
            lines=[
                pb.LogLine(seq=line.seq, timestamp_us=line.timestamp_us, text=line.text)
                for line in self.service.kernel_log(request.since_seq)
            ],
            last_seq=log.seq,
            first_seq=log.first_seq,
        )

    # -- /proc/PID files ----------------------------------------------------------------

    @translate
    async def GetOomScore(
        self, request: pb.GetOomScoreRequest, context: Context
    ) -> pb.GetOomScoreResponse:
        score = await self.service.oom_score(request.pid)
        return pb.GetOomScoreResponse(oom_score=score & ULONG_MAX)

    @translate
    async def GetOomAdj(
        self, request: pb.GetOomAdjRequest, context: Context
    ) -> pb.GetOomAdjResponse:
        adj, score_adj = await self.service.oom_adj(request.pid)
        return pb.GetOomAdjResponse(oom_adj=adj, oom_score_adj=score_adj)

    @translate
    async def WriteOomAdj(
        self, request: pb.WriteOomAdjRequest, context: Context
    ) -> pb.WriteOomAdjResponse:
        if request.file not in (
            pb.OOM_ADJ_FILE_UNSPECIFIED,
            pb.OOM_ADJ_FILE_OOM_ADJ,
            pb.OOM_ADJ_FILE_OOM_SCORE_ADJ,
        ):
            raise BadValue(f"unknown file {request.file}")
        adjustment = await self.service.write_oom_adj(
            request.pid,
            request.text,
            score_adj=request.file == pb.OOM_ADJ_FILE_OOM_SCORE_ADJ,
            admin_token=request.admin_token,
            writer_pid=request.writer_pid,
            writer_token=request.writer_token,
        )
        return pb.WriteOomAdjResponse(
            oom_adj=adjustment.oom_adj, oom_score_adj=adjustment.oom_score_adj
        )

    # -- panic and reboot --------------------------------------------------------------------

    @translate
    async def GetPanicState(
        self, request: pb.GetPanicStateRequest, context: Context
    ) -> pb.GetPanicStateResponse:
        message = self.service.policy.panic_message
        return pb.GetPanicStateResponse(panicked=message is not None, message=message or "")

    @translate
    async def Reboot(self, request: pb.RebootRequest, context: Context) -> pb.RebootResponse:
        self.service.reboot(request.admin_token)
        return pb.RebootResponse()

    # -- memory cgroups -----------------------------------------------------------------------

    @translate
    async def CreateCgroup(
        self, request: pb.CreateCgroupRequest, context: Context
    ) -> pb.CreateCgroupResponse:
        group = self.service.create_cgroup(request.name, _limit(request), request.admin_token)
        return pb.CreateCgroupResponse(cgroup=cgroup_message(group))

    @translate
    async def RemoveCgroup(
        self, request: pb.RemoveCgroupRequest, context: Context
    ) -> pb.RemoveCgroupResponse:
        await self.service.remove_cgroup(request.name, request.admin_token)
        return pb.RemoveCgroupResponse()

    @translate
    async def SetCgroupLimit(
        self, request: pb.SetCgroupLimitRequest, context: Context
    ) -> pb.SetCgroupLimitResponse:
        group = self.service.set_cgroup_limit(request.name, _limit(request), request.admin_token)
        return pb.SetCgroupLimitResponse(cgroup=cgroup_message(group))

    @translate
    async def AttachToCgroup(
        self, request: pb.AttachToCgroupRequest, context: Context
    ) -> pb.AttachToCgroupResponse:
        group = await self.service.attach_to_cgroup(request.name, request.pid, request.admin_token)
        return pb.AttachToCgroupResponse(cgroup=cgroup_message(group))

    @translate
    async def GetCgroups(
        self, request: pb.GetCgroupsRequest, context: Context
    ) -> pb.GetCgroupsResponse:
        return pb.GetCgroupsResponse(
            cgroups=[cgroup_message(g) for g in await self.service.cgroups(request.name)]
        )

    @translate
    async def ChargeCgroup(
        self, request: pb.ChargeCgroupRequest, context: Context
    ) -> pb.ChargeCgroupResponse:
        name, pid = _target(request)
        charge = self.service.charge_cgroup(name, pid, request.pages)
        group = self.service.policy.cgroups.get(charge.group)
        return pb.ChargeCgroupResponse(
            ok=charge.ok,
            name=charge.group,
            usage_bytes=charge.usage_bytes,
            limit_bytes=charge.limit_bytes,
            failcnt=group.failcnt,
        )

    @translate
    async def UnchargeCgroup(
        self, request: pb.UnchargeCgroupRequest, context: Context
    ) -> pb.UnchargeCgroupResponse:
        name, pid = _target(request)
        group = self.service.uncharge_cgroup(name, pid, request.pages)
        return pb.UnchargeCgroupResponse(name=group.name, usage_bytes=group.usage_bytes)

    # -- statistics ---------------------------------------------------------------------------

    @translate
    async def GetPolicyStats(
        self, request: pb.GetPolicyStatsRequest, context: Context
    ) -> pb.GetPolicyStatsResponse:
        service = self.service
        counters = service.counters
        decisions = counters.decisions
        return pb.GetPolicyStatsResponse(
            page_size_bytes=service.machine.page_size,
            commit_limit_pages=service.commit_limit_pages,
            committed_as_pages=max(service.policy.ledger.committed, 0),
            meminfo_lines=service.meminfo(),
            oom_kills=decisions["killed"],
            oom_waits=decisions["wait"],
            oom_panics=decisions["panic"],
            oom_give_ups=decisions["give_up"],
            processes_killed=counters.processes_killed,
            freed_pages=counters.freed_pages,
            panicked=service.policy.panic_message is not None,
            reboots=counters.reboots,
            generation=service.generation,
            kernel_log_seq=service.log.seq,
            mmu_address=self.link.address,
        )

    # -- wiring -------------------------------------------------------------------------------

    @translate
    async def ConnectTaskSource(
        self, request: pb.ConnectTaskSourceRequest, context: Context
    ) -> pb.ConnectTaskSourceResponse:
        return pb.ConnectTaskSourceResponse(previous_address=self.link.connect(request.address))


class MmuLink:
    """The channel to the MMU, which may move: the service dials
    MEMSIM_MMU_ADDR at start, and the MMU's ConnectTaskSource names where it
    really is. A replaced channel gets CLOSE_GRACE_S for calls still on it."""

    def __init__(self, service: PolicyService, hz: int) -> None:
        self.service = service
        self.hz = hz
        self.address = ""
        self._channel: grpc.aio.Channel | None = None
        self._closing: set[asyncio.Task[None]] = set()

    def connect(self, address: str) -> str:
        """Dials address (host:port) for every later MMU call; the address before."""
        try:
            parse_address(address, "the MMU's address")
        except ConfigError as exc:
            raise BadValue(str(exc)) from None
        previous = self.address
        if address == previous:
            return previous
        old = self._channel
        self._channel = open_channel(address)
        self.address = address
        self.service.tasks = MmuTasks(MmuClient(self._channel), self.hz)
        if old is not None:
            task = asyncio.create_task(old.close(CLOSE_GRACE_S))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        return previous

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close(None)
            self._channel = None
        await asyncio.gather(*self._closing, return_exceptions=True)


def policy_service(config: PolicyConfig | None = None, tasks: TaskSource | None = None) -> Service:
    """The policy service; with no task source given it dials the MMU at
    start (MEMSIM_MMU_ADDR), and wherever the MMU registers from then on."""
    config = config or PolicyConfig.from_env()
    policy = Policy(config.boot_sysctls(), page_size=config.profile.page_size, hz=config.hz)
    service = PolicyService(
        policy,
        tasks or Unconnected(),
        admin_token=config.admin_token,
        allow_empty_admin_token=config.allow_empty_admin_token,
        machine=config.machine,
        max_order=config.profile.max_order,
    )
    link = MmuLink(service, config.hz)
    servicer = PolicyServicer(service, link)

    async def on_start(address: str) -> None:
        # A channel belongs to the loop the server runs on. With no address
        # the MMU tells where it is when it starts (ConnectTaskSource).
        if tasks is None and config.mmu_address is not None:
            link.connect(config.mmu_address)

    def add(server: grpc.aio.Server) -> None:
        policy_pb2_grpc.add_PolicyServicer_to_server(servicer, server)

    return Service(
        name="policy",
        service_names=[pb.DESCRIPTOR.services_by_name["Policy"].full_name],
        add_to_server=add,
        collectors=[PolicyCollector(service)],
        on_start=on_start,
        on_stop=link.close,
    )
