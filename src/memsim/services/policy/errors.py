"""The policy core's exceptions. The gRPC edge maps each to a status code."""

from __future__ import annotations


class PolicyError(Exception):
    """Base of every error the policy core raises.

    `line` is the line of a sysctl.conf file (`sysctl -p`) the error is about.
    """

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


class UnknownSysctl(PolicyError):
    """No such vm.* sysctl (NOT_FOUND)."""


class BadValue(PolicyError):
    """A value the kernel would refuse with EINVAL, or a malformed
    sysctl.conf line (INVALID_ARGUMENT)."""


class NotPermitted(PolicyError):
    """The writer lacks root or the capability the kernel asks for: EACCES or
    EPERM (PERMISSION_DENIED)."""


class NoSuchTask(PolicyError):
    """A pid the request names is not in the task list (NOT_FOUND)."""


class NoSuchGroup(PolicyError):
    """Unknown memory cgroup (NOT_FOUND)."""


class GroupExists(PolicyError):
    """mkdir of a memory cgroup that exists (ALREADY_EXISTS)."""


class GroupBusy(PolicyError):
    """rmdir of a memory cgroup that still has tasks or charges (EBUSY:
    FAILED_PRECONDITION)."""


class BadUncharge(PolicyError):
    """Releasing more commit or cgroup charge than is held (FAILED_PRECONDITION)."""


class Panicked(PolicyError):
    """The machine has panicked; every mutating call gets this until reboot
    (FAILED_PRECONDITION with the panic message)."""
