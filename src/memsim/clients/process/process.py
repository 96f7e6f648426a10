"""A simulated user process: the system calls a program makes, over the MMU service.

A Process is what a program sees of itself: its pid and the token that proves
it is that pid, and the memory system calls (mmap, munmap, mprotect, brk), the
loads and stores (touch, write, read), fork and exit, plus glibc's malloc
family on top of brk and mmap. Every call is one RPC to the MMU (reads and
writes larger than IO_CHUNK_BYTES are split, because one gRPC message holds at
most 4 MiB by default), and a refusal comes back as the exception a program
expects: an OSError with the kernel's errno (see errors.py), or
SegmentationFault when the kernel would have sent SIGSEGV.

The malloc bookkeeping lives in this object (see malloc.py for why), so fork
gives the child a copy of it, as fork copies the heap: the child can free and
realloc what the parent allocated before the fork.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

import grpc

from memsim.clients.process.errors import (
    InvalidArgument,
    NoSuchProcess,
    NotYourProcess,
    OutOfMemory,
    ProcessError,
    ProcessGone,
    SegmentationFault,
    SystemCallError,
    from_rpc_error,
)
from memsim.clients.process.malloc import Malloc
from memsim.mmu.v1 import mmu_pb2 as pb
from memsim.mmu.v1 import mmu_pb2_grpc
from memsim.services.mmu.process import SIGSEGV
from memsim.services.mmu.vma import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_GROWSDOWN,
    MAP_NORESERVE,
    MAP_POPULATE,
    MAP_PRIVATE,
    MAP_SHARED,
    PROT_EXEC,
    PROT_NONE,
    PROT_READ,
    PROT_WRITE,
)

if TYPE_CHECKING:
    from memsim.mmu.v1.mmu_pb2_grpc import MmuAsyncStub

__all__ = [
    "IO_CHUNK_BYTES",
    "MAP_ANONYMOUS",
    "MAP_FIXED",
    "MAP_GROWSDOWN",
    "MAP_NORESERVE",
    "MAP_POPULATE",
    "MAP_PRIVATE",
    "MAP_SHARED",
    "MPOL_BIND",
    "MPOL_DEFAULT",
    "PROT_EXEC",
    "PROT_NONE",
    "PROT_READ",
    "PROT_WRITE",
    "SIGSEGV",
    "Faults",
    "InvalidArgument",
    "NoSuchProcess",
    "NotYourProcess",
    "OutOfMemory",
    "Process",
    "ProcessError",
    "ProcessGone",
    "SegmentationFault",
    "SystemCallError",
]

# include/linux/mempolicy.h's modes, as set_mempolicy(2) takes them; memsim
# models these two (MPOL_PREFERRED 1 and MPOL_INTERLEAVE 3 are EINVAL here).
MPOL_DEFAULT = 0
MPOL_BIND = 2
_MEMPOLICY_MODES = {
    MPOL_DEFAULT: pb.MEMPOLICY_MODE_DEFAULT,
    MPOL_BIND: pb.MEMPOLICY_MODE_BIND,
}

IO_CHUNK_BYTES = 1 << 20
"""Largest payload of one Write or Read RPC: within the MMU's cap
(MAX_IO_BYTES, itself under gRPC's 4 MiB message limit)."""

T = TypeVar("T")


@dataclass(frozen=True)
class Faults:
    """Page faults that an access took: minor (a frame found or zeroed) and
    major (the page had to come back from swap)."""

    minor: int = 0
    major: int = 0

    def __add__(self, other: Faults) -> Faults:
        return Faults(self.minor + other.minor, self.major + other.major)


class Process:
    """One simulated process, driven from this client. Create with `spawn`."""

    def __init__(
        self,
        stub: MmuAsyncStub,
        pid: int,
        token: str,
        name: str,
        *,
        page_size: int | None = None,
    ) -> None:
        """Wrap an existing process; `spawn` and `fork` are the usual ways in."""
        self._stub = stub
        self.pid = pid
        self.token = token
        self.name = name
        self._alive = True
        self._page_size = page_size
        self._malloc: Malloc | None = None
        # Serialises the malloc family with fork, so that fork never copies
        # the allocator half way through a call.
        self._heap_lock = asyncio.Lock()

    # ------------------------------------------------------------- lifecycle

    @classmethod
    async def spawn(
        cls,
        channel_or_stub: grpc.aio.Channel | MmuAsyncStub,
        name: str,
        uid: int = 0,
        parent_pid: int = 0,
        nice: int = 0,
        capabilities: Iterable[str] = (),
        nodes: Iterable[int] = (),
    ) -> Process:
        """Create a new process (a child of init when parent_pid is 0)."""
        stub: MmuAsyncStub = (
            mmu_pb2_grpc.MmuStub(channel_or_stub)
            if isinstance(channel_or_stub, grpc.aio.Channel)
            else channel_or_stub
        )
        created = await _mapped(
            stub.CreateProcess(
                pb.CreateProcessRequest(
                    name=name,
                    uid=uid,
                    parent_pid=parent_pid,
                    nice=nice,
                    capabilities=list(capabilities),
                    nodes=list(nodes),
                )
            )
        )
        return cls(stub, created.pid, created.token, name)

    @property
    def alive(self) -> bool:
        """False once this client has seen the process exit, die of SIGSEGV or
        be reported gone; a kill from elsewhere shows at the next call."""
        return self._alive

    @property
    def caller(self) -> pb.Caller:
        """The credentials every memory call carries."""
        return pb.Caller(pid=self.pid, token=self.token)

    async def fork(self, name: str = "") -> Process:
        """fork(): a child sharing every frame copy-on-write, and a copy of
        this process's malloc state, as the child inherits the heap."""
        async with self._heap_lock:
            created = await self._call(
                self._stub.Fork(pb.ForkRequest(caller=self.caller, name=name))
            )
            child = Process(
                self._stub,
                created.pid,
                created.token,
                name or self.name,
                page_size=self._page_size,
            )
            if self._malloc is not None:
                # The backend is this process: the memo makes the copy's the child.
                child._malloc = copy.deepcopy(self._malloc, {id(self): child})
            return child

    async def exit(self) -> int:
        """exit(): the MMU frees every frame and page table; the pages freed."""
        response = await self._call(self._stub.Exit(pb.ExitRequest(caller=self.caller)))
        self._alive = False
        return response.freed_pages

    async def info(self) -> pb.ProcessInfo:
        """What /proc/PID/status and maps show: the MMU's view, dead or alive."""
        return await self._call(self._stub.GetProcess(pb.GetProcessRequest(pid=self.pid)))

    async def page_size(self) -> int:
        """The machine's page size, asked once."""
        if self._page_size is None:
            stats = await self._call(self._stub.GetStats(pb.GetStatsRequest()))
            self._page_size = stats.page_size_bytes
        return self._page_size

    async def __aenter__(self) -> Process:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Exit on the way out unless the process is already gone."""
        if self._alive:
            with contextlib.suppress(ProcessGone):  # killed meanwhile: nothing to do
                await self.exit()

    # ---------------------------------------------------------- system calls

    async def mmap(
        self,
        length: int,
        prot: int = PROT_READ | PROT_WRITE,
        flags: int = MAP_PRIVATE | MAP_ANONYMOUS,
        address: int = 0,
    ) -> int:
        """mmap(2) of anonymous memory; the address. OutOfMemory when no range is free."""
        response = await self._call(
            self._stub.Mmap(
                pb.MmapRequest(
                    caller=self.caller,
                    address=address,
                    length_bytes=length,
                    prot=prot,
                    flags=flags,
                )
            )
        )
        return response.address

    async def munmap(self, addr: int, length: int) -> None:
        """munmap(2): the frames nobody else maps go back to the zone."""
        await self._call(
            self._stub.Munmap(
                pb.MunmapRequest(caller=self.caller, address=addr, length_bytes=length)
            )
        )

    async def mprotect(self, addr: int, length: int, prot: int) -> None:
        """mprotect(2); InvalidArgument when part of the range is unmapped."""
        await self._call(
            self._stub.Mprotect(
                pb.MprotectRequest(caller=self.caller, address=addr, length_bytes=length, prot=prot)
            )
        )

    async def brk(self, addr: int = 0) -> int:
        """brk(2) as the kernel's sys_brk: the break after the call, unchanged
        when it could not move (brk(0) asks for the current break)."""
        response = await self._call(self._stub.Brk(pb.BrkRequest(caller=self.caller, address=addr)))
        return response.address

    async def set_mempolicy(self, nodes: Iterable[int], mode: int = MPOL_BIND) -> None:
        """set_mempolicy(2): MPOL_BIND keeps this process's allocations from
        now on to `nodes` (an OOM there kills it); MPOL_DEFAULT with no nodes
        undoes it. InvalidArgument (EINVAL) for an unknown mode, no nodes to
        bind to, nodes with MPOL_DEFAULT, a node the machine lacks or that is
        outside this process's cpuset; nothing changes then."""
        wanted = _MEMPOLICY_MODES.get(mode)
        if wanted is None:
            raise InvalidArgument(
                f"mempolicy mode {mode} is not one memsim models "
                f"(MPOL_DEFAULT {MPOL_DEFAULT}, MPOL_BIND {MPOL_BIND})"
            )
        nodemask = list(nodes)
        bad = [n for n in nodemask if not 0 <= n < 1 << 32]
        if bad:  # no bit of a nodemask says that
            raise InvalidArgument(f"nodes {bad} are not node numbers")
        await self._call(
            self._stub.SetMempolicy(
                pb.SetMempolicyRequest(caller=self.caller, mode=wanted, nodes=nodemask)
            )
        )

    # ------------------------------------------------------ loads and stores

    async def touch(self, addr: int, length: int, read_only: bool = False) -> Faults:
        """Fault [addr, addr + length) in, writing (a frame per page) unless
        read_only (the zero page). SegmentationFault on a forbidden access."""
        response = await self._call(
            self._stub.Touch(
                pb.TouchRequest(
                    caller=self.caller, address=addr, length_bytes=length, read_only=read_only
                )
            )
        )
        return self._faults(response)

    async def write(self, addr: int, data: bytes) -> Faults:
        """Store bytes; SegmentationFault if any byte may not be written (the
        bytes before the faulting page are stored, as a real memcpy would)."""
        faults = Faults()
        view = memoryview(data)
        for offset in range(0, len(data), IO_CHUNK_BYTES):
            chunk = bytes(view[offset : offset + IO_CHUNK_BYTES])
            response = await self._call(
                self._stub.Write(
                    pb.WriteRequest(caller=self.caller, address=addr + offset, data=chunk)
                )
            )
            faults += self._faults(response)
        if not data:  # let the server say what it thinks of an empty write
            faults = self._faults(
                await self._call(
                    self._stub.Write(pb.WriteRequest(caller=self.caller, address=addr, data=b""))
                )
            )
        return faults

    async def read(self, addr: int, length: int) -> bytes:
        """Load bytes; never-written memory reads as zeros. SegmentationFault
        if any byte may not be read."""
        parts: list[bytes] = []
        for offset in range(0, max(length, 1), IO_CHUNK_BYTES):
            size = min(IO_CHUNK_BYTES, length - offset)
            response = await self._call(
                self._stub.Read(
                    pb.ReadRequest(caller=self.caller, address=addr + offset, length_bytes=size)
                )
            )
            self._faults(response.access)
            parts.append(response.data)
        return b"".join(parts)

    # --------------------------------------------------------------- malloc

    async def malloc(self, size: int) -> int:
        """malloc(3): the address, or 0 when no memory (errno ENOMEM)."""
        allocator = await self._allocator()
        async with self._heap_lock:
            return await allocator.malloc(size)

    async def free(self, addr: int) -> None:
        """free(3); free(0) does nothing. InvalidPointer or DoubleFree on a bad pointer."""
        allocator = await self._allocator()
        async with self._heap_lock:
            await allocator.free(addr)

    async def calloc(self, nmemb: int, size: int) -> int:
        """calloc(3): cleared memory. The allocator cannot clear simulated
        memory itself, so it asks us to write the zeros."""
        allocator = await self._allocator()
        async with self._heap_lock:
            return await allocator.calloc(nmemb, size, self._zero)

    async def realloc(self, addr: int, size: int) -> int:
        """realloc(3): when the block moves, its bytes are read and written to
        the new block here, since only the process can touch its memory."""
        allocator = await self._allocator()
        async with self._heap_lock:
            return await allocator.realloc(addr, size, self._copy)

    async def malloc_stats(self) -> str:
        """malloc_stats(3)'s text ("Arena 0:" ...)."""
        allocator = await self._allocator()
        async with self._heap_lock:
            return allocator.malloc_stats()

    @property
    def malloc_errno(self) -> int:
        """errno after the last malloc-family call that returned 0 (ENOMEM), else 0."""
        return 0 if self._malloc is None else self._malloc.errno

    async def _allocator(self) -> Malloc:
        """The process's malloc, made on first use (it needs the page size)."""
        if self._malloc is None:
            page_size = await self.page_size()
            if self._malloc is None:  # another call may have made it meanwhile
                self._malloc = Malloc(self, page_size)
        return self._malloc

    async def _zero(self, addr: int, length: int) -> None:
        for offset in range(0, length, IO_CHUNK_BYTES):
            await self.write(addr + offset, bytes(min(IO_CHUNK_BYTES, length - offset)))

    async def _copy(self, src: int, dst: int, length: int) -> None:
        # Chunk by chunk, so that a large block never sits whole in this client.
        for offset in range(0, length, IO_CHUNK_BYTES):
            size = min(IO_CHUNK_BYTES, length - offset)
            await self.write(dst + offset, await self.read(src + offset, size))

    # ------------------------------------------------------------- plumbing

    def _faults(self, response: pb.AccessResponse) -> Faults:
        """The faults of an access, or SegmentationFault: the kernel killed us."""
        if response.signal == SIGSEGV:
            self._alive = False
            raise SegmentationFault(response.fault_address, response.fault_reason)
        return Faults(response.minor_faults, response.major_faults)

    async def _call(self, call: Awaitable[T]) -> T:
        """Await an RPC, turning the MMU's refusal into the errno exception."""
        try:
            return await _mapped(call)
        except ProcessGone:
            self._alive = False
            raise

    def __repr__(self) -> str:
        state = "alive" if self._alive else "dead"
        return f"<Process pid={self.pid} {self.name!r} {state}>"


async def _mapped(call: Awaitable[T]) -> T:
    try:
        return await call
    except grpc.aio.AioRpcError as error:
        mapped = from_rpc_error(error)
        if mapped is None:
            raise
        raise mapped from error
