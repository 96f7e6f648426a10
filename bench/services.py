"""The service processes a benchmark measures, started in dependency order
(each told where the ones before it are) and stopped by pid in reverse."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from memsim.clients.cli.machine import profile_env
from memsim.clients.cli.processes import start_service, stop_pid
from memsim.clients.cli.state import ServiceRecord
from memsim.profiles.loader import MachineProfile

# Who each service asks, and so must start after.
PEERS = {"echo": (), "buddy": (), "zone": ("buddy",), "mmu": ("zone",), "slab": ("zone",)}


@contextlib.contextmanager
def running(profile: MachineProfile, *names: str) -> Iterator[dict[str, ServiceRecord]]:
    """Starts `names` (in the order given) on ephemeral ports; swap off."""
    with (
        tempfile.TemporaryDirectory(prefix="memsim-bench-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        run_dir = Path(tmp)
        env = {**profile_env(profile), "MEMSIM_DATA_DIR": str(run_dir), "MEMSIM_SWAP": "0"}
        started: dict[str, ServiceRecord] = {}
        for name in names:
            record = start_service(
                name,
                run_dir,
                ephemeral_ports=True,
                peers={p: started[p].address for p in PEERS[name]},
                extra_env=env,
            )
            stack.callback(stop_pid, record.pid)
            started[name] = record
        yield started
