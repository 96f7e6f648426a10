"""`memsim load --clients K` end to end: the real command against `memsim up -d`,
its client processes checked by pid."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.e2e.harness import Cli, pid_alive
from tests.e2e.test_load import down, up

pytestmark = pytest.mark.e2e


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def wait_gone(pids: list[int], timeout_s: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        left = [p for p in pids if pid_alive(p)]
        if not left:
            return []
        time.sleep(0.1)
    return [p for p in pids if pid_alive(p)]


def only_init(cli: Cli) -> None:
    ps = cli.run("ps")
    assert ps.returncode == 0, ps.stderr
    assert len(ps.stdout.strip().splitlines()) == 2, ps.stdout


def test_two_clients_share_the_processes_and_the_ops(cli: Cli, tmp_path: Path) -> None:
    up(cli, "--mem", "128M")
    try:
        out = tmp_path / "out.json"
        result = cli.run(
            "load", "--mix", "default", "--processes", "8", "--clients", "2",
            "--ops", "200", "--seed", "3", "--output", str(out),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "stopped by ops" in result.stdout
        summary = json.loads(out.read_text())
        assert summary["clients"] == 2
        assert summary["workload_calls"] == 200
        assert summary["stopped_by"] == "ops"
        assert summary["unexpected_errors"] == 0, summary
        clients = summary["per_client"]
        assert [c["processes"] for c in clients] == [[0, 1, 2, 3], [4, 5, 6, 7]]
        assert [c["ops_limit"] for c in clients] == [100, 100]
        assert [c["workload_calls"] for c in clients] == [100, 100]
        assert sum(c["calls"] for c in clients) == summary["calls"]
        assert sum(o["calls"] for o in summary["ops"].values()) == summary["calls"]
        assert summary["latency_ms"]["p99"] >= summary["latency_ms"]["p50"] > 0
        pids = [c["pid"] for c in clients]
        assert len(set(pids)) == 2
        assert os.getpid() not in pids
        assert wait_gone(pids, 0.0) == [], "a client process outlived the run"
        only_init(cli)
    finally:
        down(cli)


def test_ctrl_c_stops_the_clients_and_leaves_none(cli: Cli, tmp_path: Path) -> None:
    up(cli, "--mem", "128M")
    try:
        trace = tmp_path / "t.jsonl"
        load = cli.start(
            "load", "--processes", "4", "--clients", "2", "--duration", "60s",
            "--record", str(trace),
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while not (
                trace.with_name("t.jsonl.0").exists() and trace.with_name("t.jsonl.1").exists()
            ):
                assert time.monotonic() < deadline, "the clients never started"
                assert load.poll() is None, load.communicate()
                time.sleep(0.1)
            time.sleep(1.0)
            clients = children_of(load.pid)
            assert len(clients) >= 2  # the two clients (and multiprocessing's tracker)
            load.send_signal(signal.SIGINT)
            _, stderr = load.communicate(timeout=30)
        finally:
            if load.poll() is None:
                load.kill()
                load.wait()
        assert load.returncode == 130, stderr
        assert "interrupted" in stderr
        assert wait_gone(clients) == []
        # Each client stopped as at the end of a run: its clean-up exited its processes.
        only_init(cli)
        for k in (0, 1):
            lines = trace.with_name(f"t.jsonl.{k}").read_text().splitlines()
            header = json.loads(lines[0])
            assert header["client"] == k
            assert header["clients"] == 2
            assert len(lines) > 1
        replayed = cli.run("load", "--replay", str(trace.with_name("t.jsonl.0")), "--clients", "2")
        assert replayed.returncode == 1
        assert "--replay plays a trace in one client" in replayed.stderr
    finally:
        down(cli)


def test_a_failed_client_stops_the_other_and_exits_1(cli: Cli) -> None:
    up(cli, "--mem", "128M")
    try:
        load = cli.start("load", "--processes", "4", "--clients", "2", "--duration", "60s")
        try:
            deadline = time.monotonic() + 30
            clients: list[int] = []
            while len(clients) < 3:  # two clients and the resource tracker
                assert time.monotonic() < deadline, "the clients never started"
                time.sleep(0.2)
                clients = children_of(load.pid)
            time.sleep(3.0)
            spawned = [p for p in clients if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text()]
            assert len(spawned) == 2
            os.kill(spawned[0], signal.SIGKILL)
            _, stderr = load.communicate(timeout=30)
        finally:
            if load.poll() is None:
                load.kill()
                load.wait()
        assert load.returncode == 1
        assert "exited with status -9" in stderr
        assert wait_gone(clients) == []
    finally:
        down(cli)


def test_clients_need_processes_and_ops(cli: Cli) -> None:
    result = cli.run("load", "--processes", "2", "--clients", "3", "--ops", "10")
    assert result.returncode == 1
    assert "--clients 3 is more than --processes 2" in result.stderr
    result = cli.run("load", "--processes", "4", "--clients", "2", "--ops", "1")
    assert result.returncode == 1
    assert "--ops 1 is less than --clients 2" in result.stderr
