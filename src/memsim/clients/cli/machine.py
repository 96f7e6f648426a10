"""Bringing a whole machine up and down on one host, and booting it."""

from __future__ import annotations

import os
import socket

from memsim.clients.cli.credentials import ENV as ADMIN_TOKEN_ENV
from memsim.clients.cli.credentials import admin_token, forget_admin_token, new_admin_token
from memsim.clients.cli.nodes import boot_profile
from memsim.clients.cli.processes import (
    LaunchError,
    is_alive,
    is_memsim_service,
    start_service,
    stop_pids,
)
from memsim.clients.cli.state import MachineState, run_dir
from memsim.profiles.loader import MachineProfile
from memsim.runtime.config import DEFAULT_PORTS, LOOPBACK

# Start order: a service starts after every service it asks. The policy
# service asks the MMU too (for tasks to kill): the MMU tells it where it is
# when it starts.
SERVICES: tuple[str, ...] = ("buddy", "policy", "zone", "slab", "mmu")
# Each node's zone and buddy instance of a machine split by node listen this
# far above the service's default ports, times the node's number plus one.
NODE_PORT_STEP = 100


def split_services(nodes: int) -> list[str]:
    """The start order of a machine with a buddy and a zone per node."""
    return [
        *(f"buddy-{n}" for n in range(nodes)),
        "policy",
        *(f"zone-{n}" for n in range(nodes)),
        "slab",
        "mmu",
    ]


def _free_port() -> int:
    """A loopback port the OS has free now (for a zone instance whose address
    its peers must know before it starts)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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
    split_nodes: bool = False,
) -> MachineState:
    """split_nodes: a zone and a buddy service per node of the profile
    (zone-0/buddy-0, zone-1/buddy-1, ...) instead of one of each."""
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
        split_nodes=split_nodes,
    )
    new_admin_token()
    _start_services(state)
    return state


def _start_services(state: MachineState) -> None:
    """Starts every service in order, recording each in the run directory;
    on any failure stops what it started."""
    if state.split_nodes:
        _start_split_services(state)
        return
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


def _start_split_services(state: MachineState) -> None:
    """_start_services for a machine with a buddy and a zone per node: each
    zone knows its node (MEMSIM_ZONE_NODE), its buddy and the other zones
    (MEMSIM_ZONE_PEERS, on ports chosen before any starts); the slab and the
    MMU know every zone (MEMSIM_ZONE_NODES)."""
    nodes = boot_profile(state).nodes
    env = {**state.boot_env, ADMIN_TOKEN_ENV: admin_token()}
    zone_ports: dict[int, tuple[int, int]] = {}
    for n in range(nodes):
        step = NODE_PORT_STEP * (n + 1)
        grpc_port, metrics_port = DEFAULT_PORTS["zone"]
        zone_ports[n] = (
            (_free_port(), 0) if state.ephemeral_ports else (grpc_port + step, metrics_port + step)
        )
    zones = ",".join(f"{n}={LOOPBACK}:{ports[0]}" for n, ports in zone_ports.items())
    peers: dict[str, str] = {}
    try:
        for name in split_services(nodes):
            kind, _, node = name.partition("-")
            extra = dict(env)
            ports: tuple[int, int] | None = None
            if kind == "buddy" and not state.ephemeral_ports:
                step = NODE_PORT_STEP * (int(node) + 1)
                grpc_port, metrics_port = DEFAULT_PORTS["buddy"]
                ports = (grpc_port + step, metrics_port + step)
            if kind == "zone":
                ports = zone_ports[int(node)]
                extra.update(
                    MEMSIM_ZONE_NODE=node,
                    MEMSIM_ZONE_PEERS=zones,
                    MEMSIM_BUDDY_ADDR=state.services[f"buddy-{node}"].address,
                )
            if kind in ("slab", "mmu"):
                extra["MEMSIM_ZONE_NODES"] = zones
            record = start_service(
                name,
                run_dir(),
                ephemeral_ports=state.ephemeral_ports,
                peers=peers,
                extra_env=extra,
                service=kind,
                ports=ports,
            )
            state.services[name] = record
            if not node:
                peers[kind] = record.address
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
