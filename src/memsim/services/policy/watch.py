"""Following the policy service's sysctls from another service: its
WatchSysctls stream, reopened whenever it breaks, closes and opens the
service's PanicGate and hands every new state to the service (the zone's
watermarks, the MMU's overcommit settings).

The kernel's services read sysctls from memory; here each keeps the last
state it was sent, so that no call of theirs waits on the policy service.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable

import grpc

from memsim.policy.v1 import policy_pb2 as pb
from memsim.runtime.channel import open_channel
from memsim.runtime.logs import get_logger
from memsim.runtime.panic import PanicGate
from memsim.services.policy.client import PolicyClient

log = get_logger("memsim.policy.watch")

RETRY_S = (0.1, 0.2, 0.5, 1.0, 2.0)  # backoff while the policy service is away

OnState = Callable[[pb.WatchSysctlsResponse], Awaitable[None] | None]


def sysctl_values(state: pb.WatchSysctlsResponse) -> dict[str, str]:
    return {s.name: s.value for s in state.sysctls}


class SysctlFollower:
    def __init__(self, address: str, gate: PanicGate, on_state: OnState | None = None) -> None:
        self.address = address
        self.gate = gate
        self.on_state = on_state
        self.state: pb.WatchSysctlsResponse | None = None
        self.received = asyncio.Event()  # set once the first state is in
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="sysctl-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _apply(self, state: pb.WatchSysctlsResponse) -> None:
        if state.panicked:
            self.gate.halt(state.panic_message)
        else:
            self.gate.resume()
        self.state = state
        if self.on_state is not None:
            result = self.on_state(state)
            if inspect.isawaitable(result):
                await result
        self.received.set()

    async def _run(self) -> None:
        failures = 0
        while True:
            async with open_channel(self.address) as channel:
                stream = PolicyClient(channel).watch_sysctls()
                try:
                    async for state in stream:
                        failures = 0
                        await self._apply(state)
                except grpc.aio.AioRpcError as exc:
                    log.info("sysctl_watch_lost", address=self.address, code=exc.code().name)
                finally:
                    stream.cancel()
            await asyncio.sleep(RETRY_S[min(failures, len(RETRY_S) - 1)])
            failures += 1
