"""`memsim sysctl` as procps' sysctl(8) reads and writes vm.* sysctls: the
policy service owns them, and prints what sysctl prints."""

from __future__ import annotations

from collections.abc import Sequence

from memsim.services.policy.client import PolicyClient


def _shown(name: str, value: str, values_only: bool) -> str:
    return f"{value}\n" if values_only else f"{name} = {value}\n"


async def show_all(policy: PolicyClient, values_only: bool) -> str:
    """sysctl -a."""
    return "".join(_shown(n, v, values_only) for n, v in await policy.list_sysctls())


async def show(policy: PolicyClient, names: Sequence[str], values_only: bool) -> str:
    """sysctl NAME...: each as it is named (vm.x or vm/x)."""
    out = []
    for name in names:
        out.append(_shown(name, await policy.get_sysctl(name), values_only))
    return "".join(out)


async def write(
    policy: PolicyClient, assignments: Sequence[str], admin_token: str, values_only: bool
) -> str:
    """sysctl -w vm.x=y ...: all of them or none; prints what was written."""
    response = await policy.set_sysctls(assignments, admin_token=admin_token)
    if values_only:
        return "".join(f"{s.value}\n" for s in response.written)
    return "".join(f"{line}\n" for line in response.lines)


async def load(policy: PolicyClient, text: str, filename: str, admin_token: str) -> str:
    """sysctl -p FILE."""
    lines = await policy.apply_sysctl_conf(text, filename, admin_token=admin_token)
    return "".join(f"{line}\n" for line in lines)
