"""A halted machine: after a kernel panic every memsim service answers calls
that would change its state with FAILED_PRECONDITION and the panic line, and
keeps answering the ones that only look (Get*, List*, Watch*), health checks
and reflection, until the machine is rebooted.

The gate is the service's own; who closes it (the policy service's panic,
learnt through its sysctl watch) is the service's business.
"""

from __future__ import annotations

# Calls that only look at state: still served on a halted machine. Reboot is
# what ends the halt.
LOOKING = ("Get", "List", "Watch")
ALWAYS = frozenset({"Reboot"})


class PanicGate:
    def __init__(self) -> None:
        self.message: str | None = None

    def halt(self, message: str) -> None:
        self.message = message

    def resume(self) -> None:
        self.message = None

    def refusal(self, service: str, method: str) -> str | None:
        """The panic line if this call must be refused now, else None."""
        if self.message is None or not service.startswith("memsim."):
            return None
        if method.startswith(LOOKING) or method in ALWAYS:
            return None
        return self.message
