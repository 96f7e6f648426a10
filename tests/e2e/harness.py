"""Runs the real `memsim` command for end-to-end tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

MEMSIM = str(Path(sys.executable).parent / "memsim")
TIMEOUT_S = 60


@dataclass
class Cli:
    run_dir: Path
    env: dict[str, str]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [MEMSIM, *args],
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )

    def start(self, *args: str) -> subprocess.Popen[str]:
        """memsim in the background, for commands that run until signalled."""
        return subprocess.Popen(
            [MEMSIM, *args],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    @staticmethod
    def pid_alive(pid: int) -> bool:
        return pid_alive(pid)

    def with_env(self, **changes: str | None) -> Cli:
        """The same machine's command with some variables set (or, for None,
        unset): e.g. another user's credential. Its runs record no pids."""
        env = {**self.env, **{k: v for k, v in changes.items() if v is not None}}
        for name in (k for k, v in changes.items() if v is None):
            env.pop(name, None)
        return replace(self, env=env)

    def addresses(self) -> dict[str, str]:
        """Each running service's gRPC address, from the run directory."""
        state = json.loads((self.run_dir / "machine.json").read_text())
        return {name: record["address"] for name, record in state["services"].items()}

    def admin_token(self) -> str:
        """The machine's admin credential, as `memsim up` left it."""
        return (self.run_dir / "admin_token").read_text().strip()

    def recorded_pids(self) -> list[int]:
        try:
            state = json.loads((self.run_dir / "machine.json").read_text())
        except FileNotFoundError:
            return []
        return [record["pid"] for record in state["services"].values()]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().rpartition(")")[2].split()[0] != "Z"
