"""The locustfile on Locust's distributed mode: a headless master and one worker
on loopback drive the default mix against `memsim up -d` for a few seconds;
the master's CSV statistics hold the workloads' calls and nothing unexpected,
and the users' on_stop leaves the machine with init alone."""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import memsim.clients
from memsim.clients.load.ops import OPS
from tests.e2e.harness import Cli

pytestmark = pytest.mark.e2e

LOCUST = str(Path(sys.executable).parent / "locust")
LOCUSTFILE = str(Path(memsim.clients.__file__).parent / "locustfile.py")
MASTER_TIMEOUT_S = 45
WORKER_TIMEOUT_S = 20
# What the first four users of the default mix (steady, kernel_churn,
# fork_server, shm_db) call within a few seconds.
WORKLOAD_OPS = {
    "spawn",
    "malloc",
    "free",
    "write",
    "create_cache",
    "kmalloc",
    "kfree",
    "cache_alloc",
    "cache_free",
    "mmap",
    "touch",
    "fork",
    "read",
    "exit",
}
EXPECTED_REFUSALS = ("ENOMEM", "killed")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def locust_env(cli: Cli, addresses: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in cli.env.items() if not k.startswith("LOCUST_")}
    env["MEMSIM_MMU_ADDR"] = addresses["mmu"]
    env["MEMSIM_SLAB_ADDR"] = addresses["slab"]
    return env


def start(args: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [LOCUST, "-f", LOCUSTFILE, *args],
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_a_master_and_a_worker_run_the_default_mix(cli: Cli, tmp_path: Path) -> None:
    result = cli.run("up", "-d", "--ephemeral-ports", "--mem", "128M")
    assert result.returncode == 0, result.stderr
    processes: list[subprocess.Popen[bytes]] = []
    try:
        addresses = cli.addresses()
        env = locust_env(cli, addresses)
        port = str(free_port())
        stats = tmp_path / "stats"
        master_log, worker_log = tmp_path / "master.log", tmp_path / "worker.log"
        # The master has the addresses as options and forwards them to the worker.
        master = start(
            [
                "--headless",
                "--master",
                "--expect-workers",
                "1",
                "--master-bind-host",
                "127.0.0.1",
                "--master-bind-port",
                port,
                "-u",
                "4",
                "-r",
                "4",
                "-t",
                "5s",
                "--csv",
                str(stats),
                "--only-summary",
                "--memsim-mix",
                "default",
                "--memsim-mmu",
                addresses["mmu"],
                "--memsim-slab",
                addresses["slab"],
            ],
            env,
            tmp_path,
            master_log,
        )
        processes.append(master)
        worker = start(
            ["--worker", "--master-host", "127.0.0.1", "--master-port", port],
            env,
            tmp_path,
            worker_log,
        )
        processes.append(worker)
        code = master.wait(timeout=MASTER_TIMEOUT_S)
        assert code == 0, master_log.read_text(errors="replace")[-4000:]
        assert worker.wait(timeout=WORKER_TIMEOUT_S) == 0, worker_log.read_text(errors="replace")

        with (tmp_path / "stats_stats.csv").open(newline="") as f:
            rows = list(csv.DictReader(f))
        requests = {r["Name"]: int(r["Request Count"]) for r in rows if r["Type"] == "grpc"}
        failures = {r["Name"]: int(r["Failure Count"]) for r in rows if r["Type"] == "grpc"}
        assert all(r["Type"] == "grpc" for r in rows if r["Name"] != "Aggregated")
        missing = {op for op in WORKLOAD_OPS if requests.get(op, 0) == 0}
        assert not missing, requests
        # Every name is an op, or an op's expected refusal (a success of its own name).
        names = set(OPS) | {f"{op} {why}" for op in OPS for why in EXPECTED_REFUSALS}
        assert set(requests) <= names, requests
        # Nothing unexpected: no failure at all, and so an empty failures table.
        assert sum(failures.values()) == 0, failures
        with (tmp_path / "stats_failures.csv").open(newline="") as f:
            assert list(csv.DictReader(f)) == []
        total = next(r for r in rows if r["Name"] == "Aggregated")
        assert int(total["Request Count"]) == sum(requests.values()) > 100

        # on_stop exited every simulated process: only init is left.
        ps = cli.run("ps")
        assert ps.returncode == 0, ps.stderr
        assert len(ps.stdout.strip().splitlines()) == 2, ps.stdout
    finally:
        for process in processes:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        cli.run("down")


def test_a_bad_mix_stops_locust_at_start_naming_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('kind = "steady"\n[params]\nmax_live = -1\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCUST_", "MEMSIM_"))}
    result = subprocess.run(
        [LOCUST, "-f", LOCUSTFILE, "--headless", "-u", "1", "-t", "1s", "--memsim-mix", str(bad)],
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert f"{bad}:3: max_live: expected an integer >= 1" in result.stderr
    assert "Traceback" not in result.stderr
