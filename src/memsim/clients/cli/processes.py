"""Service processes: start one, wait until it serves, stop it by its pid."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from grpc_health.v1 import health_pb2, health_pb2_grpc

from memsim.clients.cli.state import ServiceRecord
from memsim.runtime.channel import open_channel
from memsim.runtime.config import DEFAULT_PORTS, LOOPBACK

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


class LaunchError(RuntimeError):
    """A service did not start or did not stop."""


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def is_alive(pid: int) -> bool:
    """True while pid runs; a zombie left for a reaper counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def is_memsim_service(pid: int) -> bool:
    """Guards `down` against a pid that was reused by an unrelated process."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return is_alive(pid)
    return b"memsim.services." in cmdline


async def check_serving(address: str, timeout_s: float = 2.0) -> str:
    """The health service's answer for the whole server, or why there is none."""
    async with open_channel(address, deadline_s=timeout_s, max_attempts=1) as channel:
        try:
            response = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest()
            )
        except Exception as exc:
            return f"unreachable ({type(exc).__name__})"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


def start_service(
    name: str,
    run_dir: Path,
    *,
    ephemeral_ports: bool,
    peers: dict[str, str],
    extra_env: dict[str, str] | None = None,
    service: str | None = None,
    ports: tuple[int, int] | None = None,
) -> ServiceRecord:
    """Starts python -m memsim.services.<service> (default: name) in its own
    session and waits for SERVING. name: the instance (zone-1 for node 1's
    zone of a machine split by node); ports: its gRPC and metrics ports
    (default: the service's, or the OS's choice with ephemeral_ports).

    Blocking on purpose: it runs before any event loop of the caller's.
    """
    service = service or name
    run_dir.mkdir(parents=True, exist_ok=True)
    ready_file = run_dir / f"{name}.ready.json"
    ready_file.unlink(missing_ok=True)
    log_file = run_dir / f"{name}.log"
    if ports is None:
        ports = (0, 0) if ephemeral_ports else DEFAULT_PORTS[service]
    grpc_port, metrics_port = ports
    env = {
        **os.environ,
        f"MEMSIM_{service.upper()}_LISTEN": f"{LOOPBACK}:{grpc_port}",
        f"MEMSIM_{service.upper()}_METRICS_LISTEN": f"{LOOPBACK}:{metrics_port}",
        "MEMSIM_READY_FILE": str(ready_file),
        **{f"MEMSIM_{peer.upper()}_ADDR": address for peer, address in peers.items()},
        **(extra_env or {}),
    }
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", f"memsim.services.{service}"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
            start_new_session=True,  # Ctrl-C in the terminal reaches `memsim up` only
        )
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not ready_file.exists():
        if process.poll() is not None:
            raise LaunchError(
                f"{name} exited with status {process.returncode} before "
                f"serving; the end of {log_file}:\n{_tail(log_file)}"
            )
        if time.monotonic() > deadline:
            stop_pid(process.pid)
            raise LaunchError(
                f"{name} did not report ready in {READY_TIMEOUT_S:.0f} s; "
                f"the end of {log_file}:\n{_tail(log_file)}"
            )
        time.sleep(0.05)
    ready = json.loads(ready_file.read_text())
    status = asyncio.run(check_serving(ready["address"]))
    if status != "SERVING":
        stop_pid(process.pid)
        raise LaunchError(f"{name} at {ready['address']} answers health {status}")
    return ServiceRecord(
        name, process.pid, ready["address"], ready["metrics_address"], str(log_file)
    )


def _wait_gone(pid: int, timeout_s: float) -> bool:
    """True once pid is gone (looked at least once), False after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(ChildProcessError):  # reap it if it is our own child
            os.waitpid(pid, os.WNOHANG)
        if not is_alive(pid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def stop_pid(pid: int, timeout_s: float = STOP_TIMEOUT_S) -> bool:
    """SIGTERM, then SIGKILL after timeout_s. False if it was already gone."""
    return stop_pids([pid], timeout_s)[pid]


def stop_pids(pids: Sequence[int], timeout_s: float = STOP_TIMEOUT_S) -> dict[int, bool]:
    """stop_pid for several processes at once: SIGTERM to each in the order
    given, then one wait for them all (their shutdowns overlap), SIGKILL to
    any still there after timeout_s. pid -> False for one already gone."""
    stopped: dict[int, bool] = {}
    for pid in pids:
        stopped[pid] = is_alive(pid)
        if stopped[pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
    running = [pid for pid, was in stopped.items() if was]
    deadline = time.monotonic() + timeout_s
    for pid in running:
        _wait_gone(pid, max(deadline - time.monotonic(), 0.0))
    left = [pid for pid in running if is_alive(pid)]
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    for pid in left:
        if not _wait_gone(pid, max(deadline - time.monotonic(), 0.0)):
            raise LaunchError(f"pid {pid} is still there after SIGKILL")
    return stopped
