"""Where a running machine is written down: the run directory's machine.json.

`memsim up` writes it; `down`, `status` and every client command read it to
find the services. MEMSIM_RUN_DIR chooses the directory (tests use their own).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path


def run_dir() -> Path:
    explicit = os.environ.get("MEMSIM_RUN_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return Path(base) / f"memsim-{os.getuid()}"


@dataclass
class ServiceRecord:
    name: str
    pid: int
    address: str
    metrics_address: str | None
    log_file: str


@dataclass
class MachineState:
    profile: str
    summary: str
    supervisor_pid: int
    detached: bool
    services: dict[str, ServiceRecord] = field(default_factory=dict)
    # Set by `memsim down` before it stops anything, so that a foreground
    # `memsim up` watching its services knows their end is wanted.
    stopping: bool = False
    # What the services were booted with (the profile's variables), so that
    # `memsim reboot` boots the same machine again.
    boot_env: dict[str, str] = field(default_factory=dict)
    ephemeral_ports: bool = False
    # Set by `memsim reboot` while it restarts the services: their ends are wanted.
    rebooting: bool = False
    # A zone and a buddy service per node (zone-0, buddy-0, ...): `memsim up
    # --split-nodes`.
    split_nodes: bool = False

    @classmethod
    def path(cls) -> Path:
        return run_dir() / "machine.json"

    def save(self) -> None:
        path = self.path()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)

    @classmethod
    def load(cls) -> MachineState | None:
        try:
            data = json.loads(cls.path().read_text())
        except FileNotFoundError:
            return None
        services = {name: ServiceRecord(**record) for name, record in data.pop("services").items()}
        return cls(**data, services=services)

    @classmethod
    def remove(cls) -> None:
        cls.path().unlink(missing_ok=True)
