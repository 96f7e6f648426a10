"""The task source over gRPC: the MMU service's processes as the OOM killer's
tasks."""

from __future__ import annotations

import asyncio

import grpc

from memsim.mmu.v1 import mmu_pb2 as mmu_pb
from memsim.services.mmu.client import MmuClient
from memsim.services.policy.badness import HZ, Task
from memsim.services.policy.errors import BadValue, NoSuchTask, NotPermitted, PolicyError
from memsim.services.policy.ports import SIGKILL, PeerUnavailable, TaskList

DEAD = "X"


def task_from_info(info: mmu_pb.ProcessInfo, hz: int = HZ) -> Task | None:
    """The Task the killer reads of one MMU process; None for a dead one
    (its mm is gone: it is no longer a task)."""
    if info.state == DEAD:
        return None
    return Task(
        pid=info.pid,
        name=info.name,
        uid=info.uid,
        # memsim has no setuid: the effective uid is the real one.
        euid=info.uid,
        nice=info.nice,
        capabilities=frozenset(info.capabilities),
        total_vm=info.vm_size_pages,
        rss=info.rss_pages,
        swap_pages=info.swap_pages,
        pte_pages=info.pte_pages,
        # utime + stime in jiffies of the simulated HZ.
        cpu_jiffies=info.cpu_time_ms * hz // 1000,
        # start_time.tv_sec: whole seconds, as badness reads them.
        start_time=info.start_time_ms // 1000,
        nodes=frozenset(info.nodes) or None,
        oom_adj=info.oom_adj,
        oom_score_adj=info.oom_score_adj,
        ppid=info.ppid,
        has_mm=True,
        # The MMU keeps each process's group: a forked child is in its parent's.
        memcg=info.cgroup or "/",
    )


def _translate(exc: grpc.aio.AioRpcError, what: str) -> PolicyError:
    code, details = exc.code(), exc.details() or ""
    if code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION):
        return NoSuchTask(details)
    if code is grpc.StatusCode.PERMISSION_DENIED:
        return NotPermitted(details)
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        return BadValue(details)
    return PeerUnavailable(f"the MMU failed {what}: {code.name}: {details}")


class MmuTasks:
    def __init__(self, client: MmuClient, hz: int = HZ) -> None:
        self.client = client
        self.hz = hz

    async def tasks(self) -> TaskList:
        try:
            listing, stats = await asyncio.gather(self.client.processes(), self.client.stats())
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc, "to list processes") from None
        tasks = [t for t in (task_from_info(p, self.hz) for p in listing.processes) if t]
        tasks.sort(key=lambda t: t.pid)
        return TaskList(tasks, stats.uptime_ms // 1000)

    async def process(self, pid: int) -> Task:
        try:
            info = await self.client.process(pid)
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc, f"to find pid {pid}") from None
        task = task_from_info(info, self.hz)
        if task is None:
            raise NoSuchTask(f"pid {pid} ({info.name}) is dead")
        return task

    async def kill(self, pid: int, signal: int = SIGKILL) -> int:
        try:
            return await self.client.kill(pid, signal)
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc, f"to kill pid {pid}") from None

    async def set_oom_adj(self, pid: int, oom_adj: int, oom_score_adj: int) -> None:
        try:
            await self.client.set_oom_adj(pid, oom_adj, oom_score_adj)
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc, f"to store pid {pid}'s oom_adj") from None

    async def set_cgroup(self, pid: int, name: str) -> None:
        try:
            await self.client.set_cgroup(pid, name)
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc, f"to move pid {pid} into memory cgroup {name}") from None

    async def check_caller(self, pid: int, token: str) -> None:
        # The MMU has no call that only checks a token; brk(0) checks it and
        # changes nothing (it reads the break).
        request = mmu_pb.BrkRequest(caller=mmu_pb.Caller(pid=pid, token=token), address=0)
        try:
            await self.client.stub.Brk(request)
        except grpc.aio.AioRpcError as exc:
            error = _translate(exc, f"to check pid {pid}'s token")
            if isinstance(error, NotPermitted):
                raise NotPermitted(f"wrong token for writer pid {pid}") from None
            raise error from None
