"""The real Prometheus (Debian's package) on a loopback port, for end-to-end
tests: started on a configuration written into a temporary directory, asked
through its HTTP API, stopped by its own pid.

    with running_prometheus(config, tmp_path) as prometheus:
        prometheus.wait_for("up", lambda r: len(r) == 5)
        samples = prometheus.query('sum by (job) (grpc_server_handled_total)')

`memsim_scrape_config` builds a configuration from deploy/prometheus's own
(its job names, its rule files) pointed at a machine's metrics addresses.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "prometheus"
DEPLOY_CONFIG = DEPLOY / "prometheus.yml"
MEMSIM_JOBS = ("buddy", "zone", "slab", "mmu", "policy")
INSTALL_HINT = (
    "apt-get install prometheus (Debian's package: /usr/bin/prometheus and promtool); "
    ".ci/run installs it when run as root"
)
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
HTTP_TIMEOUT_S = 5.0

# One element of a query's result: {"metric": {labels}, "value": [ts, "v"]}.
Sample = dict[str, Any]


def prometheus_binary() -> str:
    """The prometheus executable, or the test is skipped with how to install it."""
    found = shutil.which("prometheus") or (
        "/usr/bin/prometheus" if os.access("/usr/bin/prometheus", os.X_OK) else None
    )
    if found is None:
        pytest.skip(f"prometheus is not installed: {INSTALL_HINT}")
    return found


def free_port() -> int:
    """A loopback port nobody listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def metrics_addresses(run_dir: Path) -> dict[str, str]:
    """Each running service's metrics host:port, from `memsim up`'s machine.json."""
    state = json.loads((run_dir / "machine.json").read_text())
    return {
        name: record["metrics_address"]
        for name, record in state["services"].items()
        if record.get("metrics_address")
    }


def memsim_scrape_config(
    targets: Mapping[str, str],
    *,
    interval: str = "1s",
    with_rules: bool = True,
) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml with each job's target replaced by the
    machine's (jobs without one, such as node, dropped), a short scrape and
    evaluation interval and absolute rule file paths."""
    config: dict[str, Any] = yaml.safe_load(DEPLOY_CONFIG.read_text())
    config["global"] = {
        **config.get("global", {}),
        "scrape_interval": interval,
        "scrape_timeout": interval,
        "evaluation_interval": interval,
    }
    jobs = []
    for job in config["scrape_configs"]:
        name = job["job_name"]
        if name in targets:
            jobs.append({**job, "static_configs": [{"targets": [targets[name]]}]})
    config["scrape_configs"] = jobs
    if with_rules:
        config["rule_files"] = [str(DEPLOY / path) for path in config.get("rule_files", [])]
    else:
        config.pop("rule_files", None)
    return config


class PrometheusError(RuntimeError):
    """Prometheus did not start, or its API answered with an error."""


@dataclass(frozen=True)
class RunningPrometheus:
    url: str  # http://127.0.0.1:PORT
    pid: int
    log_file: Path

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; its "data", or PrometheusError."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(
                f"{self.url}/api/v1/{path}{query}", timeout=HTTP_TIMEOUT_S
            ) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:  # 400/422: a bad query, with its error
            body = json.load(exc)
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[Sample]:
        """An instant query's result (a vector: one dict per series)."""
        data = self.api("query", query=expr)
        result: list[Sample] = data["result"]
        return result

    def wait_for(
        self,
        expr: str,
        ready: Callable[[list[Sample]], bool] = bool,
        timeout_s: float = 30.0,
    ) -> list[Sample]:
        """Polls `expr` until `ready(result)` (by default: until it has a
        series); the result, or AssertionError with the last one after timeout_s."""
        results: list[list[Sample]] = []

        def check() -> bool:
            results[:] = [self.query(expr)]
            return ready(results[0])

        wait_until(check, lambda: f"{expr!r}: {results[0]}", timeout_s)
        return results[0]

    def rules(self) -> list[dict[str, Any]]:
        """Every loaded rule (/api/v1/rules), each with its group's name added."""
        return [
            {**rule, "group": group["name"]}
            for group in self.api("rules")["groups"]
            for rule in group["rules"]
        ]

    def wait_rules_evaluated(self, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """Waits until every rule has been evaluated once (health no longer
        "unknown"); the rules."""
        rules: list[dict[str, Any]] = []

        def check() -> bool:
            rules[:] = self.rules()
            return bool(rules) and all(rule["health"] != "unknown" for rule in rules)

        wait_until(check, lambda: f"rules not evaluated: {rules}", timeout_s)
        return rules


def wait_until(ready: Callable[[], bool], what: Callable[[], str], timeout_s: float) -> None:
    """Polls `ready` every 0.25 s; AssertionError with what() after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"not ready after {timeout_s}s: {what()}")
        time.sleep(0.25)


def values(result: list[Sample], label: str) -> dict[str, float]:
    """{series' `label` value: sample value} of an instant vector."""
    return {sample["metric"].get(label, ""): float(sample["value"][1]) for sample in result}


@contextmanager
def running_prometheus(
    config: Mapping[str, Any], workdir: Path, *, timeout_s: float = START_TIMEOUT_S
) -> Iterator[RunningPrometheus]:
    """Writes `config` into workdir, starts prometheus on a free loopback port,
    waits until it is ready and yields it; stops it by its pid afterwards
    (SIGTERM, then SIGKILL if it has not exited within STOP_TIMEOUT_S)."""
    binary = prometheus_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    config_file = workdir / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(dict(config), sort_keys=False))
    port = free_port()
    log_file = workdir / "prometheus.log"
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_file}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=info",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    prometheus = RunningPrometheus(f"http://127.0.0.1:{port}", process.pid, log_file)
    try:
        _wait_ready(process, prometheus, timeout_s)
        yield prometheus
    finally:
        _stop(process)


def _wait_ready(
    process: subprocess.Popen[bytes], prometheus: RunningPrometheus, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise PrometheusError(
                f"prometheus exited with {process.returncode}:\n"
                + prometheus.log_file.read_text(errors="replace")[-4000:]
            )
        try:
            with urllib.request.urlopen(f"{prometheus.url}/-/ready", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:  # refused while it starts, 503 while it loads its storage
            pass
        if time.monotonic() > deadline:
            raise PrometheusError(
                f"prometheus not ready after {timeout_s}s:\n"
                + prometheus.log_file.read_text(errors="replace")[-4000:]
            )
        time.sleep(0.1)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the pid we started, SIGKILL if it lingers; always reaped."""
    if process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=STOP_TIMEOUT_S)
