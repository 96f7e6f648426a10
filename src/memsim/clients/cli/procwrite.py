"""`memsim write PATH VALUE`: `echo VALUE > PATH` for the files of the
simulated /proc that can be written, as root (the machine's admin
credential): /proc/PID/oom_adj, /proc/PID/oom_score_adj and
/proc/sys/vm/NAME."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from memsim.clients.cli.credentials import admin_token
from memsim.clients.cli.procfiles import Clients

_OOM = re.compile(r"/proc/(\d+)/(oom_adj|oom_score_adj)")
_SYSCTL = re.compile(r"/proc/sys/vm/([a-z_]+)")

Writer = Callable[[Clients, str], Awaitable[None]]


def writer(path: str) -> Writer | None:
    """What writes path, or None if it cannot be written."""
    oom = _OOM.fullmatch(path)
    if oom is not None and int(oom.group(1)) < 1 << 31:
        pid, score_adj = int(oom.group(1)), oom.group(2) == "oom_score_adj"

        async def write_oom(c: Clients, value: str) -> None:
            await c.policy.write_oom_adj(pid, value, score_adj=score_adj, admin_token=admin_token())

        return write_oom
    sysctl = _SYSCTL.fullmatch(path)
    if sysctl is not None:
        name = f"vm.{sysctl.group(1)}"

        async def write_sysctl(c: Clients, value: str) -> None:
            await c.policy.set_sysctls([f"{name}={value}"], admin_token=admin_token())

        return write_sysctl
    return None
