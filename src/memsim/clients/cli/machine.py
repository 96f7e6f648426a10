"""Bringing a whole machine up and down on one host, and booting it."""

from __future__ import annotations

import os

from memsim.clients.cli.credentials import ENV as ADMIN_TOKEN_ENV
from memsim.clients.cli.credentials import admin_token, forget_admin_token, new_admin_token
from memsim.clients.cli.processes import (
    LaunchError,
    is_alive,
    is_memsim_service,
    start_service,
    stop_pids,
)
from memsim.clients.cli.state import MachineState, run_dir
from memsim.profiles.loader import MachineProfile

# Start order: a service starts after every service it asks. The policy
# service asks the MMU too (for tasks to kill): the MMU tells it where it is
# when it starts.
SERVICES: tuple[str, ...] = ("buddy", "policy", "zone", "slab", "mmu")


def running_machine() -> MachineState | None:
    """The machine in the run directory if any of its services still runs."""
    state = MachineState.load()
    if state is None:
        return None
    if any(is_alive(s.pid) for s in state.services.values()):
        return state
    MachineState.remove()  # stale: everything it names is gone
    return None


def default_swap_bytes(profile: MachineProfile) -> int:
    """Half of RAM, as the MMU service assumes; none without an MMU (uClinux has no swap)."""
    return profile.mem_bytes // 2 if profile.mmu else 0


def profile_env(profile: MachineProfile, swap_bytes: int | None = None) -> dict[str, str]:
    """What the services boot: the profile with every option resolved, the size of
    the MMU's swap area and the directory its swap file lives in."""
    return {
        "MEMSIM_PROFILE": profile.name,
        "MEMSIM_MEM": str(profile.mem_bytes),
        "MEMSIM_PAGE_SIZE": str(profile.page_size),
        "MEMSIM_MAX_ORDER": str(profile.max_order),
        "MEMSIM_SWAP": str(default_swap_bytes(profile) if swap_bytes is None else swap_bytes),
        "MEMSIM_DATA_DIR": str(run_dir() / "data"),
    }


def bring_up(
    profile: MachineProfile,
    *,
    ephemeral_ports: bool,
    detached: bool,
    swap_bytes: int | None = None,
) -> MachineState:
    existing = running_machine()
    if existing is not None:
        pids = ", ".join(str(s.pid) for s in existing.services.values())
        raise LaunchError(
            f"a machine is already running from {MachineState.path()} "
            f"(pids {pids}); stop it with `memsim down`"
        )
    state = MachineState(
        profile.name,
        profile.summary,
        os.getpid(),
        detached,
        boot_env=profile_env(profile, swap_bytes),
        ephemeral_ports=ephemeral_ports,
    )
    new_admin_token()
    _start_services(state)
    return state


def _start_services(state: MachineState) -> None:
    """Starts every service in order, recording each in the run directory;
    on any failure stops what it started."""
    peers: dict[str, str] = {}
    env = {**state.boot_env, ADMIN_TOKEN_ENV: admin_token()}
    try:
        for name in SERVICES:
            record = start_service(
                name,
                run_dir(),
                ephemeral_ports=state.ephemeral_ports,
                peers=peers,
                extra_env=env,
            )
            state.services[name] = record
            peers[name] = record.address
            state.save()
    except BaseException:
        tear_down(state)
        raise


def reboot(state: MachineState) -> list[str]:
    """Every service stopped and booted again as it was first booted: the
    machine's boot state, a panic forgotten. A foreground `memsim up` follows
    the new pids."""
    state.rebooting = True
    state.save()
    report = _stop_services(state)
    state.services = {}
    _start_services(state)
    state.rebooting = False
    state.save()
    return report


def tear_down(state: MachineState) -> list[str]:
    """Stops every service by the pid it was started with; returns what it did."""
    report = _stop_services(state)
    MachineState.remove()
    forget_admin_token()
    return report


def _stop_services(state: MachineState) -> list[str]:
    """Every service told to stop, the last started first, and waited for
    together: their shutdowns overlap (none calls another on its way out)."""
    names = list(reversed(list(state.services)))
    ours = [state.services[n].pid for n in names if is_memsim_service(state.services[n].pid)]
    stopped = stop_pids(ours)
    report = []
    for name in names:
        pid = state.services[name].pid
        if stopped.get(pid, False):
            report.append(f"{name}: stopped pid {pid}")
        else:
            report.append(f"{name}: pid {pid} was already gone")
    return report
