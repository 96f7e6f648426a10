"""Typed client of the policy service, for the zone, the MMU and the CLI.

The watch calls return the stream itself: iterate it with `async for` (or
read() it), and cancel() it to stop watching. Streams have no deadline: they
last as long as the watcher wants.

admin_token is root's credential (MEMSIM_ADMIN_TOKEN of the service); the
empty default is root only on a service started with
MEMSIM_ALLOW_EMPTY_ADMIN_TOKEN=1. Errors arrive as grpc.aio.AioRpcError with
the service's status codes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TypeVar

import grpc

from memsim.policy.v1 import policy_pb2 as pb
from memsim.policy.v1 import policy_pb2_grpc

SysctlStream = grpc.aio.UnaryStreamCall[pb.WatchSysctlsRequest, pb.WatchSysctlsResponse]
OomEventStream = grpc.aio.UnaryStreamCall[pb.WatchOomEventsRequest, pb.WatchOomEventsResponse]


_Charge = TypeVar("_Charge", pb.ChargeCgroupRequest, pb.UnchargeCgroupRequest)


def _group_of(request: _Charge, name: str | None, pid: int | None) -> _Charge:
    """The request with its group: the one named, or else pid's."""
    if name is not None:
        request.name = name
    elif pid is not None:
        request.pid = pid
    return request


class PolicyClient:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.stub = policy_pb2_grpc.PolicyStub(channel)

    # -- sysctls ---------------------------------------------------------------------

    async def get_sysctl(self, name: str) -> str:
        """sysctl -n name."""
        return (await self.stub.GetSysctl(pb.GetSysctlRequest(name=name))).value

    async def list_sysctls(self) -> list[tuple[str, str]]:
        """sysctl -a: (name, value) in its order."""
        response = await self.stub.ListSysctls(pb.ListSysctlsRequest())
        return [(s.name, s.value) for s in response.sysctls]

    async def set_sysctls(
        self,
        assignments: Iterable[str] = (),
        values: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        *,
        admin_token: str = "",
    ) -> pb.SetSysctlsResponse:
        """sysctl -w "vm.x=y" ... (or name -> value): every write or none."""
        pairs = values.items() if isinstance(values, Mapping) else values
        return await self.stub.SetSysctls(
            pb.SetSysctlsRequest(
                assignments=list(assignments),
                sysctls=[pb.Sysctl(name=n, value=v) for n, v in pairs],
                admin_token=admin_token,
            )
        )

    async def apply_sysctl_conf(
        self, text: str, filename: str = "", *, admin_token: str = ""
    ) -> list[str]:
        """sysctl -p FILE: the lines sysctl prints."""
        response = await self.stub.ApplySysctlConf(
            pb.ApplySysctlConfRequest(text=text, filename=filename, admin_token=admin_token)
        )
        return list(response.lines)

    def watch_sysctls(self) -> SysctlStream:
        """The whole state now, then after every change (and on a panic)."""
        return self.stub.WatchSysctls(pb.WatchSysctlsRequest())

    # -- commit accounting ------------------------------------------------------------

    async def vm_enough_memory(
        self,
        pid: int,
        pages: int,
        *,
        cap_sys_admin: bool = False,
        total_vm_pages: int = 0,
        mem: pb.MemState | None = None,
    ) -> pb.VmEnoughMemoryResponse:
        return await self.stub.VmEnoughMemory(
            pb.VmEnoughMemoryRequest(
                pid=pid,
                pages=pages,
                cap_sys_admin=cap_sys_admin,
                total_vm_pages=total_vm_pages,
                mem=mem or pb.MemState(),
            )
        )

    async def vm_unacct_memory(self, pid: int, pages: int) -> int:
        """Committed_AS after the release, in pages."""
        request = pb.VmUnacctMemoryRequest(pid=pid, pages=pages)
        return (await self.stub.VmUnacctMemory(request)).committed_pages

    async def release_task(self, pid: int) -> int:
        """pid exited: the commit charge given back, in pages."""
        return (await self.stub.ReleaseTask(pb.ReleaseTaskRequest(pid=pid))).released_pages

    # -- the OOM killer ---------------------------------------------------------------

    async def out_of_memory(
        self,
        gfp_mask: int,
        order: int = 0,
        pid: int = 0,
        constraint: pb.Constraint.ValueType = pb.CONSTRAINT_NONE,
        nodemask: Iterable[int] = (),
        memcg: str = "",
    ) -> pb.OutOfMemoryResponse:
        """One round of the killer; pid 0 is a kernel allocation."""
        request = pb.OutOfMemoryRequest(
            gfp_mask=gfp_mask,
            order=order,
            pid=pid,
            constraint=constraint,
            nodemask=list(nodemask),
            memcg=memcg,
        )
        return await self.stub.OutOfMemory(request)

    def watch_oom_events(self, since_seq: int | None = None) -> OomEventStream:
        """Kills and panics as they happen; with since_seq, first those kept
        after it (0: every one kept)."""
        request = pb.WatchOomEventsRequest()
        if since_seq is not None:
            request.since_seq = since_seq
        return self.stub.WatchOomEvents(request)

    async def kernel_log(self, since_seq: int = 0) -> pb.GetKernelLogResponse:
        """dmesg: the lines after since_seq."""
        return await self.stub.GetKernelLog(pb.GetKernelLogRequest(since_seq=since_seq))

    # -- /proc/PID files --------------------------------------------------------------

    async def oom_score(self, pid: int) -> int:
        return (await self.stub.GetOomScore(pb.GetOomScoreRequest(pid=pid))).oom_score

    async def oom_adj(self, pid: int) -> tuple[int, int]:
        """(oom_adj, oom_score_adj)."""
        response = await self.stub.GetOomAdj(pb.GetOomAdjRequest(pid=pid))
        return response.oom_adj, response.oom_score_adj

    async def write_oom_adj(
        self,
        pid: int,
        text: str,
        *,
        score_adj: bool = False,
        admin_token: str = "",
        writer_pid: int = 0,
        writer_token: str = "",
    ) -> tuple[int, int]:
        """echo text > /proc/pid/oom_adj (oom_score_adj with score_adj), as
        root (admin_token) or as the process writer_pid; the (oom_adj,
        oom_score_adj) stored."""
        response = await self.stub.WriteOomAdj(
            pb.WriteOomAdjRequest(
                pid=pid,
                text=text,
                file=pb.OOM_ADJ_FILE_OOM_SCORE_ADJ if score_adj else pb.OOM_ADJ_FILE_OOM_ADJ,
                admin_token=admin_token,
                writer_pid=writer_pid,
                writer_token=writer_token,
            )
        )
        return response.oom_adj, response.oom_score_adj

    # -- panic and reboot -------------------------------------------------------------

    async def panic_state(self) -> tuple[bool, str]:
        """(panicked, the panic line)."""
        response = await self.stub.GetPanicState(pb.GetPanicStateRequest())
        return response.panicked, response.message

    async def reboot(self, *, admin_token: str = "") -> None:
        await self.stub.Reboot(pb.RebootRequest(admin_token=admin_token))

    # -- memory cgroups ---------------------------------------------------------------

    async def create_cgroup(
        self, name: str, limit_bytes: int | None = None, *, admin_token: str = ""
    ) -> pb.Cgroup:
        request = pb.CreateCgroupRequest(name=name, admin_token=admin_token)
        if limit_bytes is not None:
            request.limit_bytes = limit_bytes
        return (await self.stub.CreateCgroup(request)).cgroup

    async def remove_cgroup(self, name: str, *, admin_token: str = "") -> None:
        await self.stub.RemoveCgroup(pb.RemoveCgroupRequest(name=name, admin_token=admin_token))

    async def set_cgroup_limit(
        self, name: str, limit_bytes: int | None, *, admin_token: str = ""
    ) -> pb.Cgroup:
        """None: unlimited."""
        request = pb.SetCgroupLimitRequest(name=name, admin_token=admin_token)
        if limit_bytes is not None:
            request.limit_bytes = limit_bytes
        return (await self.stub.SetCgroupLimit(request)).cgroup

    async def attach_to_cgroup(self, name: str, pid: int, *, admin_token: str = "") -> pb.Cgroup:
        request = pb.AttachToCgroupRequest(name=name, pid=pid, admin_token=admin_token)
        return (await self.stub.AttachToCgroup(request)).cgroup

    async def cgroups(self, name: str = "") -> list[pb.Cgroup]:
        """Every group, or the one named."""
        return list((await self.stub.GetCgroups(pb.GetCgroupsRequest(name=name))).cgroups)

    async def charge_cgroup(
        self, pages: int, *, name: str | None = None, pid: int | None = None
    ) -> pb.ChargeCgroupResponse:
        """Charges the group named, or pid's group. ok False: over the limit."""
        request = _group_of(pb.ChargeCgroupRequest(pages=pages), name, pid)
        return await self.stub.ChargeCgroup(request)

    async def uncharge_cgroup(
        self, pages: int, *, name: str | None = None, pid: int | None = None
    ) -> pb.UnchargeCgroupResponse:
        request = _group_of(pb.UnchargeCgroupRequest(pages=pages), name, pid)
        return await self.stub.UnchargeCgroup(request)

    # -- statistics -------------------------------------------------------------------

    async def stats(self) -> pb.GetPolicyStatsResponse:
        return await self.stub.GetPolicyStats(pb.GetPolicyStatsRequest())

    # -- wiring -----------------------------------------------------------------------

    async def connect_task_source(self, address: str) -> str:
        """The MMU's start-up call: where it serves (host:port), so that the
        policy asks it for tasks and kills there. The address the policy
        used before ("" if none)."""
        request = pb.ConnectTaskSourceRequest(address=address)
        return (await self.stub.ConnectTaskSource(request)).previous_address
