"""The Ops facade: every call a simulated process makes, performed, timed,
counted and recorded in one place.

Workloads never touch a gRPC stub or an address: they hold *handles* (small
integers, one counter per simulated process slot) for what a call created (a
process, a mapping, a malloc'ed block, kernel objects, a slab cache) and pass
them back. A handle is numbered when the call is made, whether or not it
succeeds, so a trace names the same things in the same way however the calls
turned out, and `--replay` binds each recorded handle to whatever the machine
gives this time.

What performs a call is a Backend: MachineBackend (machine.py) over the real
services, or a fake in the tests. Outcomes:

    ok       the call did what was asked
    ENOMEM   RESOURCE_EXHAUSTED, or malloc returning NULL: an expected refusal
    killed   the process is gone (the OOM killer, FAILED_PRECONDITION): expected
    SIGSEGV, EINVAL, ESRCH, EPERM, panic, unbound, error: unexpected

A call on a process that comes back killed, SIGSEGV or ESRCH raises
ProcessDied after it is counted, so that a workload can drop a child or
(uncaught) let the runner replace the whole simulated process.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import grpc

from memsim.clients.load.schema import Burst
from memsim.clients.process.errors import (
    InvalidArgument,
    NoSuchProcess,
    NotYourProcess,
    OutOfMemory,
    ProcessGone,
    SegmentationFault,
)
from memsim.clients.process.malloc import MallocError

OK = "ok"
ENOMEM = "ENOMEM"
KILLED = "killed"
EXPECTED = frozenset({OK, ENOMEM, KILLED})
DEATHS = frozenset({KILLED, "SIGSEGV", "ESRCH"})
PANIC_TEXT = "Kernel panic"

# Every op: its argument names, and whether it creates a handle.
OPS: dict[str, tuple[tuple[str, ...], bool]] = {
    "spawn": (("name",), True),
    "fork": (("proc",), True),
    "exit": (("proc",), False),
    "mmap": (("proc", "length", "shared"), True),
    "munmap": (("proc", "at", "offset", "length"), False),
    "touch": (("proc", "at", "offset", "length", "read_only"), False),
    "write": (("proc", "at", "offset", "length", "fill"), False),
    "read": (("proc", "at", "offset", "length"), False),
    "malloc": (("proc", "size"), True),
    "free": (("proc", "at"), False),
    "kmalloc": (("size", "count"), True),
    "kfree": (("obj",), False),
    "create_cache": (("name", "size"), True),
    "cache_alloc": (("cache", "count"), True),
    "cache_free": (("obj",), False),
    "destroy_cache": (("cache",), False),
}
HANDLE_ARGS = frozenset({"proc", "at", "obj", "cache"})


class Stop(Exception):
    """The run is over (its --ops or --duration reached): unwind the workload."""


class ProcessDied(Exception):
    """A call found its process gone (killed, SIGSEGV): the handle of that process."""

    def __init__(self, handle: int, outcome: str) -> None:
        super().__init__(f"process handle {handle}: {outcome}")
        self.handle = handle
        self.outcome = outcome


class Unbound(Exception):
    """Replay: a recorded handle that this run never bound (the call that made
    it failed here although it had succeeded when recorded)."""


class Backend(Protocol):
    async def execute(self, op: str, args: dict[str, Any], resolve: Callable[[int], Any]) -> Any:
        """Perform op; raise what the client libraries raise on a refusal."""
        ...


@dataclass(frozen=True)
class Result:
    outcome: str
    code: str
    handle: int | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == OK


@dataclass(frozen=True)
class CallRecord:
    seq: int
    slot: int
    op: str
    args: dict[str, Any]
    ret: int | None
    outcome: str
    code: str
    latency_s: float
    message: str = ""


def classify(exc: BaseException) -> tuple[str, str, str]:
    """(outcome, status code name, message) of a refused call."""
    if isinstance(exc, OutOfMemory):
        return ENOMEM, "RESOURCE_EXHAUSTED", exc.message
    if isinstance(exc, ProcessGone):
        if PANIC_TEXT in exc.message:
            return "panic", "FAILED_PRECONDITION", exc.message
        return KILLED, "FAILED_PRECONDITION", exc.message
    if isinstance(exc, SegmentationFault):
        return "SIGSEGV", "SIGSEGV", str(exc)
    if isinstance(exc, InvalidArgument):
        return "EINVAL", "INVALID_ARGUMENT", exc.message
    if isinstance(exc, NoSuchProcess):
        return "ESRCH", "NOT_FOUND", exc.message
    if isinstance(exc, NotYourProcess):
        return "EPERM", "PERMISSION_DENIED", exc.message
    if isinstance(exc, grpc.aio.AioRpcError):
        code = exc.code()
        details = exc.details() or ""
        if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
            return ENOMEM, code.name, details
        if PANIC_TEXT in details:
            return "panic", code.name, details
        return "error", code.name, details
    if isinstance(exc, Unbound):
        return "unbound", "UNBOUND", str(exc)
    if isinstance(exc, MallocError):
        return "error", "MALLOC", str(exc)
    return "error", type(exc).__name__, str(exc)


class Session(Protocol):
    """What Ops needs of the run: the budget, the in-flight limit, the sink."""

    stop_event: asyncio.Event

    def ticket(self) -> None:
        """Take one call of the budget, or raise Stop."""
        ...

    @property
    def in_flight(self) -> asyncio.Semaphore | None: ...

    def complete(
        self,
        slot: int,
        op: str,
        args: dict[str, Any],
        ret: int | None,
        result: Result,
        latency_s: float,
        message: str,
    ) -> None:
        """Count and record a finished call (called in completion order)."""
        ...


class Ops:
    """The calls of one simulated process slot (its processes, its kernel
    objects) with their handles."""

    def __init__(
        self, slot: int, backend: Backend, session: Session, *, burst: Burst | None = None
    ) -> None:
        self.slot = slot
        self.backend = backend
        self.session = session
        self.burst = burst
        self._burst_left = 0
        self._next_handle = 1
        self.bound: dict[int, Any] = {}
        self.kinds: dict[int, str] = {}
        # Handles still held, for the clean-up at the end.
        self.live_procs: list[int] = []
        self.live_objs: list[int] = []
        self.live_caches: list[int] = []
        self.generation = 0
        self.spawns = 0  # processes this slot has started

    # -- the calls --------------------------------------------------------------------

    async def spawn(self, name: str) -> int:
        """A new process; ProcessDied if the machine refuses."""
        result = await self.call("spawn", {"name": name})
        if not result.ok or result.handle is None:
            raise ProcessDied(0, result.outcome)
        self.spawns += 1
        return result.handle

    async def fork(self, proc: int) -> Result:
        return await self.call("fork", {"proc": proc})

    async def exit(self, proc: int) -> Result:
        return await self.call("exit", {"proc": proc})

    async def mmap(self, proc: int, length: int, shared: bool = False) -> Result:
        return await self.call("mmap", {"proc": proc, "length": length, "shared": shared})

    async def munmap(self, proc: int, at: int, offset: int, length: int) -> Result:
        args = {"proc": proc, "at": at, "offset": offset, "length": length}
        return await self.call("munmap", args)

    async def touch(
        self, proc: int, at: int, offset: int, length: int, read_only: bool = False
    ) -> Result:
        args = {"proc": proc, "at": at, "offset": offset, "length": length, "read_only": read_only}
        return await self.call("touch", args)

    async def write(self, proc: int, at: int, offset: int, length: int, fill: int) -> Result:
        args = {"proc": proc, "at": at, "offset": offset, "length": length, "fill": fill}
        return await self.call("write", args)

    async def read(self, proc: int, at: int, offset: int, length: int) -> Result:
        return await self.call("read", {"proc": proc, "at": at, "offset": offset, "length": length})

    async def malloc(self, proc: int, size: int) -> Result:
        return await self.call("malloc", {"proc": proc, "size": size})

    async def free(self, proc: int, at: int) -> Result:
        return await self.call("free", {"proc": proc, "at": at})

    async def kmalloc(self, size: int, count: int = 1) -> Result:
        return await self.call("kmalloc", {"size": size, "count": count})

    async def kfree(self, obj: int) -> Result:
        return await self.call("kfree", {"obj": obj})

    async def create_cache(self, name: str, size: int) -> Result:
        return await self.call("create_cache", {"name": name, "size": size})

    async def cache_alloc(self, cache: int, count: int = 1) -> Result:
        return await self.call("cache_alloc", {"cache": cache, "count": count})

    async def cache_free(self, obj: int) -> Result:
        return await self.call("cache_free", {"obj": obj})

    async def destroy_cache(self, cache: int) -> Result:
        return await self.call("destroy_cache", {"cache": cache})

    # -- the machinery ----------------------------------------------------------------

    async def call(
        self,
        op: str,
        args: dict[str, Any],
        *,
        budget: bool = True,
        ret: int | None = None,
        raise_on_death: bool = True,
    ) -> Result:
        """Perform one op. ret: the handle to bind (replay); else a new one."""
        if budget:
            await self._pace()
            self.session.ticket()
        creates = OPS[op][1]
        handle: int | None = None
        if creates:
            handle = ret if ret is not None else self._next_handle
            self._next_handle = max(self._next_handle, handle + 1)
        semaphore = self.session.in_flight
        if semaphore is not None:
            await semaphore.acquire()
        try:
            start = time.perf_counter()
            message = ""
            try:
                value = await self.backend.execute(op, args, self._resolve)
                outcome, code = OK, "OK"
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                value = None
                outcome, code, message = classify(exc)
            latency = time.perf_counter() - start
            result = Result(outcome, code, handle)
            if outcome == OK:
                self._bookkeep(op, args, handle, value)
            elif outcome in DEATHS and "proc" in args:
                self._forget_proc(args["proc"])
            self.session.complete(self.slot, op, args, handle, result, latency, message)
        finally:
            if semaphore is not None:
                semaphore.release()
        if raise_on_death and outcome in DEATHS and "proc" in args:
            raise ProcessDied(args["proc"], outcome)
        return result

    def _resolve(self, handle: int) -> Any:
        try:
            return self.bound[handle]
        except KeyError:
            raise Unbound(f"handle {handle} of slot {self.slot} is not bound") from None

    def _bookkeep(self, op: str, args: dict[str, Any], handle: int | None, value: Any) -> None:
        if handle is not None:
            self.bound[handle] = value
            self.kinds[handle] = op
            if op in ("spawn", "fork"):
                self.live_procs.append(handle)
            elif op in ("kmalloc", "cache_alloc"):
                self.live_objs.append(handle)
            elif op == "create_cache":
                self.live_caches.append(handle)
        elif op == "exit":
            self._forget_proc(args["proc"])
        elif op in ("kfree", "cache_free"):
            self._drop(self.live_objs, args["obj"])
        elif op == "destroy_cache":
            self._drop(self.live_caches, args["cache"])

    def _forget_proc(self, proc: int) -> None:
        self._drop(self.live_procs, proc)

    @staticmethod
    def _drop(items: list[int], handle: int) -> None:
        if handle in items:
            items.remove(handle)

    async def _pace(self) -> None:
        """The burst modifier: idle, then `ops` calls back to back, again and again."""
        if self.burst is None:
            return
        if self._burst_left <= 0:
            if self.burst.idle_s > 0:
                stop = self.session.stop_event
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.burst.idle_s)
            self._burst_left = self.burst.ops
        self._burst_left -= 1

    async def cleanup(self) -> None:
        """Give back what this slot still holds: kernel objects, caches, processes
        (children before parents). Outside the budget; recorded like any call."""
        for obj in list(self.live_objs):
            op = "kfree" if self.kinds.get(obj) == "kmalloc" else "cache_free"
            await self.call(op, {"obj": obj}, budget=False, raise_on_death=False)
        for cache in list(self.live_caches):
            await self.call("destroy_cache", {"cache": cache}, budget=False, raise_on_death=False)
        for proc in sorted(self.live_procs, reverse=True):
            await self.call("exit", {"proc": proc}, budget=False, raise_on_death=False)

    async def reap(self) -> None:
        """The slot's process died: its children left behind exit (outside the
        budget, recorded); kernel objects and caches stay, as they belong to
        no process, for the next generation or the clean-up."""
        self.generation += 1
        for proc in sorted(self.live_procs, reverse=True):
            await self.call("exit", {"proc": proc}, budget=False, raise_on_death=False)
