"""The policy service in process: over a fake task source, or over the real
MMU (with its zone, on the conftest's buddy) reached through gRPC."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
from prometheus_client import CollectorRegistry

from memsim.profiles.loader import MachineProfile, load_profile
from memsim.runtime.channel import open_channel
from memsim.runtime.server import RunningServer, start_server
from memsim.services.mmu.client import MmuClient
from memsim.services.policy.badness import Task
from memsim.services.policy.client import PolicyClient
from memsim.services.policy.config import PolicyConfig
from memsim.services.policy.errors import NoSuchTask, NotPermitted
from memsim.services.policy.ports import SIGKILL, TaskList, TaskSource
from memsim.services.policy.server import policy_service
from tests.integration.conftest import UNREACHABLE, BuddyHarness, running_servers

ADMIN = "test-admin-token"


def small_machine() -> MachineProfile:
    """x86_32 with 64 MiB of RAM."""
    return load_profile("x86_32", mem="64M")


def policy_config(
    mmu_address: str = UNREACHABLE, swap_bytes: int = 32 << 20, *, open_admin: bool = False
) -> PolicyConfig:
    """The test machine; open_admin: no admin token, the empty one is root's."""
    if open_admin:
        return PolicyConfig(
            small_machine(), mmu_address, None, swap_bytes=swap_bytes, allow_empty_admin_token=True
        )
    return PolicyConfig(small_machine(), mmu_address, ADMIN, swap_bytes=swap_bytes)


class FakeTasks:
    """An in-memory process table: a kill takes the task out and frees its RSS."""

    def __init__(
        self, tasks: list[Task], uptime_s: int = 0, tokens: dict[int, str] | None = None
    ) -> None:
        self.by_pid = {t.pid: t for t in tasks}
        self.uptime_s = uptime_s
        self.tokens = tokens or {}
        self.killed: list[tuple[int, int]] = []
        # Set to hold kills until the test lets them go.
        self.kill_gate: asyncio.Event | None = None
        # Set to make every kill fail with it (an MMU that went away).
        self.kill_error: Exception | None = None
        # Set to deliver kills later, as the MMU does to a process with a
        # call in flight: the task stays listed until die() is called.
        self.defer_kills = False

    async def tasks(self) -> TaskList:
        return TaskList(sorted(self.by_pid.values(), key=lambda t: t.pid), self.uptime_s)

    async def process(self, pid: int) -> Task:
        task = self.by_pid.get(pid)
        if task is None:
            raise NoSuchTask(f"no process with pid {pid}")
        return task

    async def kill(self, pid: int, signal: int = SIGKILL) -> int:
        if self.kill_gate is not None:
            await self.kill_gate.wait()
        if self.kill_error is not None:
            raise self.kill_error
        if self.defer_kills:
            await self.process(pid)
            self.killed.append((pid, signal))
            return 0
        task = self.by_pid.pop(pid, None)
        if task is None:
            raise NoSuchTask(f"no process with pid {pid}")
        self.killed.append((pid, signal))
        return task.rss

    def die(self, pid: int) -> None:
        """A deferred kill arrives: the task is gone."""
        del self.by_pid[pid]

    async def set_oom_adj(self, pid: int, oom_adj: int, oom_score_adj: int) -> None:
        task = await self.process(pid)
        self.by_pid[pid] = replace(task, oom_adj=oom_adj, oom_score_adj=oom_score_adj)

    async def set_cgroup(self, pid: int, name: str) -> None:
        task = await self.process(pid)
        self.by_pid[pid] = replace(task, memcg=name)

    async def check_caller(self, pid: int, token: str) -> None:
        if self.tokens.get(pid) != token:
            raise NotPermitted(f"wrong token for writer pid {pid}")


@dataclass
class PolicyHarness:
    running: RunningServer
    channel: grpc.aio.Channel
    client: PolicyClient
    registry: CollectorRegistry


@contextlib.asynccontextmanager
async def running_policy(
    config: PolicyConfig, tasks: TaskSource | None = None
) -> AsyncIterator[PolicyHarness]:
    registry = CollectorRegistry()
    running = await start_server(
        policy_service(config, tasks), "127.0.0.1:0", None, registry=registry
    )
    channel = open_channel(running.address)
    try:
        yield PolicyHarness(running, channel, PolicyClient(channel), registry)
    finally:
        await channel.close(None)
        await running.stop(0)


@dataclass
class MachineStack:
    """Zone, MMU and policy servers in process over a buddy fixture."""

    policy: PolicyHarness
    mmu: MmuClient
    mmu_address: str
    # For the MMU calls MmuClient does not wrap (Mmap, Touch).
    mmu_channel: grpc.aio.Channel


@contextlib.asynccontextmanager
async def policy_over_mmu(
    buddy: BuddyHarness, data_dir: Path, swap_bytes: int = 0, *, connect: bool = False
) -> AsyncIterator[MachineStack]:
    """The policy service dialling a real MMU at start (MEMSIM_MMU_ADDR); with
    connect, it starts with an address where nothing serves and the MMU's
    address comes by ConnectTaskSource, as `memsim up` starts them."""
    async with running_servers(
        small_machine(), data_dir, buddy_address=buddy.running.address, swap_bytes=swap_bytes
    ) as servers:
        config = policy_config(UNREACHABLE if connect else servers.mmu_address, swap_bytes)
        async with running_policy(config) as policy:
            if connect:
                assert await policy.client.connect_task_source(servers.mmu_address) == UNREACHABLE
            yield MachineStack(policy, servers.mmu, servers.mmu_address, servers.mmu_channel)
