"""Typed client of the MMU service."""

from __future__ import annotations

from collections.abc import Iterable

import grpc

from memsim.mmu.v1 import mmu_pb2 as pb
from memsim.mmu.v1 import mmu_pb2_grpc


class MmuClient:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.stub = mmu_pb2_grpc.MmuStub(channel)

    async def create_process(
        self,
        name: str,
        uid: int = 0,
        parent_pid: int = 0,
        nice: int = 0,
        capabilities: list[str] | None = None,
        nodes: list[int] | None = None,
    ) -> tuple[int, str]:
        response = await self.stub.CreateProcess(
            pb.CreateProcessRequest(
                name=name,
                uid=uid,
                parent_pid=parent_pid,
                nice=nice,
                capabilities=capabilities or [],
                nodes=nodes or [],
            )
        )
        return response.pid, response.token

    async def kill(self, pid: int, signal: int = 9) -> int:
        return (await self.stub.Kill(pb.KillRequest(pid=pid, signal=signal))).freed_pages

    async def processes(self, all: bool = False) -> pb.ListProcessesResponse:
        return await self.stub.ListProcesses(pb.ListProcessesRequest(all=all))

    async def process(self, pid: int) -> pb.ProcessInfo:
        return await self.stub.GetProcess(pb.GetProcessRequest(pid=pid))

    async def stats(self) -> pb.MmuStats:
        return await self.stub.GetStats(pb.GetStatsRequest())

    async def mmu_frames(self) -> pb.GetMmuFramesResponse:
        """Every frame the MMU holds, by what it holds, as ranges."""
        return await self.stub.GetMmuFrames(pb.GetMmuFramesRequest())

    async def set_oom_adj(self, pid: int, oom_adj: int, oom_score_adj: int) -> pb.ProcessInfo:
        return await self.stub.SetOomAdj(
            pb.SetOomAdjRequest(pid=pid, oom_adj=oom_adj, oom_score_adj=oom_score_adj)
        )

    async def set_cgroup(self, pid: int, name: str) -> pb.ProcessInfo:
        """Moves pid into the memory cgroup name (the policy's AttachToCgroup)."""
        return await self.stub.SetCgroup(pb.SetCgroupRequest(pid=pid, name=name))

    async def set_mempolicy(
        self,
        pid: int,
        token: str,
        mode: pb.MempolicyMode.ValueType,
        nodes: Iterable[int] = (),
    ) -> pb.ProcessInfo:
        """set_mempolicy(2) of process pid (proven by its token):
        MEMPOLICY_MODE_BIND with its nodes, or MEMPOLICY_MODE_DEFAULT."""
        return await self.stub.SetMempolicy(
            pb.SetMempolicyRequest(
                caller=pb.Caller(pid=pid, token=token), mode=mode, nodes=list(nodes)
            )
        )
