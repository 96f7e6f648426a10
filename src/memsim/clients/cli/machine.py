"""Bringing a whole machine up and down on one host, and booting it."""

from __future__ import annotations

import os

from memsim.clients.cli.processes import (
    LaunchError,
    is_alive,
    is_memsim_service,
    start_service,
    stop_pid,
)
from memsim.clients.cli.state import MachineState, run_dir
from memsim.profiles.loader import MachineProfile

# Start order: a service starts after every service it asks.
SERVICES: tuple[str, ...] = ("buddy", "zone")


def running_machine() -> MachineState | None:
    """The machine in the run directory if any of its services still runs."""
    state = MachineState.load()
    if state is None:
        return None
    if any(is_alive(s.pid) for s in state.services.values()):
        return state
    MachineState.remove()  # stale: everything it names is gone
    return None


def profile_env(profile: MachineProfile) -> dict[str, str]:
    """What the zone service boots: the profile with every option resolved."""
    return {
        "MEMSIM_PROFILE": profile.name,
        "MEMSIM_MEM": str(profile.mem_bytes),
        "MEMSIM_PAGE_SIZE": str(profile.page_size),
        "MEMSIM_MAX_ORDER": str(profile.max_order),
    }


def bring_up(profile: MachineProfile, *, ephemeral_ports: bool, detached: bool) -> MachineState:
    existing = running_machine()
    if existing is not None:
        pids = ", ".join(str(s.pid) for s in existing.services.values())
        raise LaunchError(
            f"a machine is already running from {MachineState.path()} "
            f"(pids {pids}); stop it with `memsim down`"
        )
    state = MachineState(profile.name, profile.summary, os.getpid(), detached)
    peers: dict[str, str] = {}
    try:
        for name in SERVICES:
            record = start_service(
                name,
                run_dir(),
                ephemeral_ports=ephemeral_ports,
                peers=peers,
                extra_env=profile_env(profile),
            )
            state.services[name] = record
            peers[name] = record.address
            state.save()
    except BaseException:
        tear_down(state)
        raise
    return state


def tear_down(state: MachineState) -> list[str]:
    """Stops every service by the pid it was started with; returns what it did."""
    report = []
    for name in reversed(list(state.services)):
        record = state.services[name]
        if not is_memsim_service(record.pid):
            report.append(f"{name}: pid {record.pid} was already gone")
        elif stop_pid(record.pid):
            report.append(f"{name}: stopped pid {record.pid}")
        else:
            report.append(f"{name}: pid {record.pid} was already gone")
    MachineState.remove()
    return report
