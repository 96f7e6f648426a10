"""The service processes a benchmark measures, started in dependency order
(each told where the ones before it are) and stopped by pid in reverse."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from memsim.clients.cli.machine import profile_env
from memsim.clients.cli.processes import start_service, stop_pid
from memsim.clients.cli.state import ServiceRecord
from memsim.profiles.loader import MachineProfile

# Who each service asks, and so must start after. The policy service asks
# no one at start (the MMU tells it where it is when the MMU starts).
PEERS: dict[str, tuple[str, ...]] = {
    "echo": (),
    "buddy": (),
    "policy": (),
    "zone": ("buddy",),
    "mmu": ("zone",),
    "slab": ("zone",),
}
# Peers a service runs without, and follows when told where they are
# (MEMSIM_POLICY_ADDR): passed when started before it, else passed empty, so
# that a variable in the caller's environment cannot point elsewhere.
OPTIONAL_PEERS: dict[str, tuple[str, ...]] = {
    "zone": ("policy",),
    "mmu": ("policy",),
    "slab": ("policy",),
}


@contextlib.contextmanager
def running(
    profile: MachineProfile, *names: str, env: Mapping[str, str] | None = None
) -> Iterator[dict[str, ServiceRecord]]:
    """Starts `names` (in the order given) on ephemeral ports; swap off.

    env: more variables for every service started (MEMSIM_ADMIN_TOKEN for
    the policy service, say)."""
    with (
        tempfile.TemporaryDirectory(prefix="memsim-bench-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        run_dir = Path(tmp)
        boot_env = {
            **profile_env(profile),
            "MEMSIM_DATA_DIR": str(run_dir),
            "MEMSIM_SWAP": "0",
            **(env or {}),
        }
        started: dict[str, ServiceRecord] = {}
        for name in names:
            missing = [p for p in PEERS[name] if p not in started]
            if missing:
                raise ValueError(f"{name} needs {', '.join(missing)} started before it")
            peers = {p: started[p].address for p in PEERS[name]}
            for peer in OPTIONAL_PEERS.get(name, ()):
                peers[peer] = started[peer].address if peer in started else ""
            record = start_service(
                name,
                run_dir,
                ephemeral_ports=True,
                peers=peers,
                extra_env=boot_env,
            )
            stack.callback(stop_pid, record.pid)
            started[name] = record
        yield started
