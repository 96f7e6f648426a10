"""The MMU core's exceptions. The gRPC edge maps each to a status code."""

from __future__ import annotations


class MmuError(Exception):
    """Base of every error the MMU core raises."""


class InvalidRequest(MmuError):
    """Bad address, length, protection bits or flags (EINVAL)."""


class NoSuchProcess(MmuError):
    """Unknown pid (ESRCH)."""


class PermissionDenied(MmuError):
    """Wrong token: the caller is not that process."""


class ProcessDead(MmuError):
    """The process has exited or was killed."""


class NoSuchSegment(MmuError):
    """No shared memory segment with that key or id (ENOENT, EINVAL)."""


class NoMemory(MmuError):
    """No room in the address space, or no frames to be had (ENOMEM)."""


class MachineHalted(MmuError):
    """The OOM killer of a memory cgroup panicked the machine
    (vm.panic_on_oom = 2): FAILED_PRECONDITION with the panic line."""
