"""Runs the real `memsim` command for end-to-end tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
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
