"""What a simulated process sees go wrong, as a program on Linux would see it.

The MMU answers a bad system call with a gRPC status; a program expects errno.
So each status the MMU uses becomes an OSError subclass with the errno the
kernel would have returned, and the server's message kept as its strerror (it
says what was wrong far better than the errno's generic text). A protection
fault is no errno at all but a signal: SegmentationFault, after which the
process is dead.
"""

from __future__ import annotations

import errno

import grpc

from memsim.services.mmu.process import SIGSEGV


class ProcessError(Exception):
    """Base of everything this client library raises about a process."""


class SegmentationFault(ProcessError):
    """SIGSEGV: an access hit no mapping or a mapping that forbids it.

    The kernel kills the process for it, so the Process that raised it is dead
    afterwards and every further call raises ProcessGone.
    """

    signal = SIGSEGV

    def __init__(self, address: int, reason: str) -> None:
        super().__init__(f"segmentation fault at {address:#x}: {reason}")
        self.address = address
        self.reason = reason


class SystemCallError(ProcessError, OSError):
    """A system call the MMU refused; errno is what the kernel would return."""

    ERRNO = errno.EIO

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(self.ERRNO, message)
        self.message = message
        """The server's own explanation."""
        self.code = code
        """The gRPC status it came as (None when raised locally)."""


class OutOfMemory(SystemCallError):
    """ENOMEM: no room in the address space or no frames (RESOURCE_EXHAUSTED)."""

    ERRNO = errno.ENOMEM


class InvalidArgument(SystemCallError):
    """EINVAL: bad address, length, protection bits or flags (INVALID_ARGUMENT)."""

    ERRNO = errno.EINVAL


class NotYourProcess(SystemCallError, PermissionError):
    """EPERM: the token does not prove that we are that process (PERMISSION_DENIED)."""

    ERRNO = errno.EPERM


class ProcessGone(SystemCallError):
    """The process has exited or was killed (FAILED_PRECONDITION).

    ESRCH, as kill(2) answers for a process that no longer runs.
    """

    ERRNO = errno.ESRCH


class NoSuchProcess(SystemCallError, ProcessLookupError):
    """ESRCH: the MMU has never heard of that pid (NOT_FOUND)."""

    ERRNO = errno.ESRCH


STATUS_ERRORS: dict[grpc.StatusCode, type[SystemCallError]] = {
    grpc.StatusCode.RESOURCE_EXHAUSTED: OutOfMemory,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.PERMISSION_DENIED: NotYourProcess,
    grpc.StatusCode.FAILED_PRECONDITION: ProcessGone,
    grpc.StatusCode.NOT_FOUND: NoSuchProcess,
}


def from_rpc_error(error: grpc.aio.AioRpcError) -> SystemCallError | None:
    """The exception a program expects for a refused call; None for a status
    that is no answer of the MMU's (UNAVAILABLE, DEADLINE_EXCEEDED...), which
    the caller should let through as the transport failure it is."""
    cls = STATUS_ERRORS.get(error.code())
    if cls is None:
        return None
    return cls(str(error.details() or ""), error.code())
