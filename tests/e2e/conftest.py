"""End to end: the real `memsim` command in subprocesses, each test with its
own run directory and OS-chosen ports, cleaned up by the pids it recorded."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import Cli, pid_alive


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMSIM_")}
    env["MEMSIM_RUN_DIR"] = str(tmp_path / "run")
    helper = Cli(tmp_path / "run", env)
    seen: set[int] = set()
    original_run = helper.run

    def run_and_remember(*args: str) -> subprocess.CompletedProcess[str]:
        result = original_run(*args)
        seen.update(helper.recorded_pids())
        return result

    helper.run = run_and_remember  # type: ignore[method-assign]
    yield helper
    # Whatever a failed test left running is stopped by its own pid.
    for pid in seen | set(helper.recorded_pids()):
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
