"""What the policy service needs from the process owner (the MMU): the task
list, a kill, oom_adj storage and memory cgroup membership. One port, two
adapters: the MMU over gRPC (mmu_port.MmuTasks) and in-memory fakes in tests.

Adapters raise the policy's own errors: NoSuchTask for a pid that is unknown
or dead, NotPermitted for a wrong token, PeerUnavailable when the MMU cannot
answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from memsim.services.policy.badness import Task
from memsim.services.policy.errors import PolicyError

SIGKILL = 9


class PeerUnavailable(PolicyError):
    """The MMU did not answer, or answered something the policy cannot use
    (UNAVAILABLE)."""


@dataclass(frozen=True)
class TaskList:
    """A snapshot of every live task, in pid order, and the machine's clock."""

    tasks: list[Task]
    uptime_s: int  # seconds since boot: badness's run time counts from here


class TaskSource(Protocol):
    async def tasks(self) -> TaskList:
        """Every live process as a Task (dead ones are not tasks)."""
        ...

    async def process(self, pid: int) -> Task:
        """One live process; NoSuchTask if there is none."""
        ...

    async def kill(self, pid: int, signal: int = SIGKILL) -> int:
        """Sends signal; the pages freed. NoSuchTask if pid is gone already."""
        ...

    async def set_oom_adj(self, pid: int, oom_adj: int, oom_score_adj: int) -> None: ...

    async def set_cgroup(self, pid: int, name: str) -> None:
        """Moves a live process into a memory cgroup (the MMU keeps each
        process's group; its children inherit it). NoSuchTask if pid is
        unknown or dead; BadValue for a bad name."""
        ...

    async def check_caller(self, pid: int, token: str) -> None:
        """NotPermitted unless token is pid's (a process proves who it is)."""
        ...


class Unconnected:
    """The port before the service has dialled the MMU: every call says so."""

    async def tasks(self) -> TaskList:
        raise PeerUnavailable("the MMU is not connected yet")

    async def process(self, pid: int) -> Task:
        raise PeerUnavailable("the MMU is not connected yet")

    async def kill(self, pid: int, signal: int = SIGKILL) -> int:
        raise PeerUnavailable("the MMU is not connected yet")

    async def set_oom_adj(self, pid: int, oom_adj: int, oom_score_adj: int) -> None:
        raise PeerUnavailable("the MMU is not connected yet")

    async def set_cgroup(self, pid: int, name: str) -> None:
        raise PeerUnavailable("the MMU is not connected yet")

    async def check_caller(self, pid: int, token: str) -> None:
        raise PeerUnavailable("the MMU is not connected yet")
