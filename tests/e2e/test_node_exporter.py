"""The simulated machine as node_exporter sees it: `memsim procfs export`
writes the /proc files, and Debian's prometheus-node-exporter started with
--path.procfs on them serves the machine's node_memory_*, node_buddyinfo_*,
node_zoneinfo_*, node_vmstat_* and node_slabinfo_* with no collector error."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.harness import Cli

NODE_EXPORTER = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
COLLECTORS = ("meminfo", "vmstat", "buddyinfo", "zoneinfo", "slabinfo")
pytestmark = pytest.mark.skipif(
    NODE_EXPORTER is None,
    reason="node_exporter is not installed: apt-get install prometheus-node-exporter "
    "(.ci/run does it as root)",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def node_exporter(procfs: Path) -> Iterator[str]:
    """node_exporter on a free loopback port with the memory collectors
    only (the others read files memsim does not simulate); stopped by pid."""
    assert NODE_EXPORTER is not None
    address = f"127.0.0.1:{free_port()}"
    process = subprocess.Popen(
        [
            NODE_EXPORTER,
            f"--path.procfs={procfs}",
            f"--web.listen-address={address}",
            "--collector.disable-defaults",
            *(f"--collector.{name}" for name in COLLECTORS),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                urllib.request.urlopen(f"http://{address}/metrics", timeout=1).close()
                break
            except OSError:
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                assert time.monotonic() < deadline, "node_exporter did not answer in 10 s"
                time.sleep(0.1)
        yield address
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def scrape(address: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def test_node_exporter_serves_the_simulated_machine(cli: Cli, tmp_path: Path) -> None:
    assert cli.run("up", "-d", "--ephemeral-ports", "--mem", "256M").returncode == 0
    try:
        procfs = tmp_path / "proc"
        export = cli.run("procfs", "export", str(procfs))
        assert export.returncode == 0, export.stderr
        for name in ("meminfo", "buddyinfo", "zoneinfo", "vmstat", "slabinfo"):
            assert (procfs / name).read_text() == cli.run("cat", f"/proc/{name}").stdout
        meminfo = dict(
            (line.split(":")[0], int(line.split()[1]))
            for line in (procfs / "meminfo").read_text().splitlines()
        )

        with node_exporter(procfs) as address:
            samples = scrape(address)
        for collector in COLLECTORS:
            assert (
                samples["node_scrape_collector_success"].count(({"collector": collector}, 1.0)) == 1
            ), collector
        (total,) = samples["node_memory_MemTotal_bytes"]
        assert total[1] == meminfo["MemTotal"] * 1024
        (commit_limit,) = samples["node_memory_CommitLimit_bytes"]
        assert commit_limit[1] == meminfo["CommitLimit"] * 1024
        # buddyinfo: one series per node, zone and order, as the file says.
        buddyinfo = (procfs / "buddyinfo").read_text().splitlines()
        zones = {line.split()[3] for line in buddyinfo}
        assert zones == {"DMA", "Normal"}  # 256 MiB on x86_32: no HighMem
        assert {labels["zone"] for labels, _ in samples["node_buddyinfo_blocks"]} == zones
        assert len(samples["node_buddyinfo_blocks"]) == sum(len(x.split()) - 4 for x in buddyinfo)
        assert {labels["zone"] for labels, _ in samples["node_zoneinfo_nr_free_pages"]} == zones
        for family in ("min", "low", "high", "managed", "present", "spanned"):
            assert {
                labels["zone"] for labels, _ in samples[f"node_zoneinfo_{family}_pages"]
            } == zones
        assert any(name.startswith("node_vmstat_") for name in samples)
        slab = {labels["slab"]: v for labels, v in samples["node_slabinfo_active_objects"]}
        assert slab["task_struct"] >= 1  # init's, from the MMU
    finally:
        assert cli.run("down").returncode == 0


def test_export_with_an_interval_keeps_the_files_current_until_stopped(
    cli: Cli, tmp_path: Path
) -> None:
    assert cli.run("up", "-d", "--ephemeral-ports", "--mem", "64M").returncode == 0
    procfs = tmp_path / "proc"
    exporter = cli.start("procfs", "export", str(procfs), "--interval", "100ms")
    try:
        deadline = time.monotonic() + 10
        while not (procfs / "meminfo").exists():
            assert exporter.poll() is None, exporter.communicate()
            assert time.monotonic() < deadline, "no export in 10 s"
            time.sleep(0.05)
        first = (procfs / "meminfo").stat().st_mtime_ns
        while (procfs / "meminfo").stat().st_mtime_ns == first:
            assert time.monotonic() < deadline, "the export was not renewed in 10 s"
            time.sleep(0.05)
        exporter.send_signal(signal.SIGTERM)
        out, err = exporter.communicate(timeout=10)
        assert exporter.returncode == 0, err
        assert f"into {procfs}" in out
        # Written whole and renamed: no temporary file is left behind.
        assert sorted(p.name for p in procfs.iterdir()) == sorted(
            ["meminfo", "buddyinfo", "zoneinfo", "vmstat", "slabinfo", "vmallocinfo"]
        )
    finally:
        if exporter.poll() is None:
            exporter.kill()
            exporter.wait()
        assert cli.run("down").returncode == 0


def test_bad_export_requests_are_refused(cli: Cli, tmp_path: Path) -> None:
    none = cli.run("procfs", "export", str(tmp_path / "p"))
    assert none.returncode == 1
    assert "no machine is running" in none.stderr
    assert cli.run("up", "-d", "--ephemeral-ports", "--mem", "64M").returncode == 0
    try:
        bad = cli.run("procfs", "export", str(tmp_path / "p"), "--interval", "soon")
        assert bad.returncode == 1
        assert "'soon' is not a duration such as 1s or 500ms" in bad.stderr
        short = cli.run("procfs", "export", str(tmp_path / "p"), "--interval", "1ms")
        assert short.returncode == 1
        assert "shorter than 10ms" in short.stderr
        blocker = tmp_path / "file"
        blocker.write_text("")
        into_file = cli.run("procfs", "export", str(blocker / "p"))
        assert into_file.returncode == 1
        assert "procfs export:" in into_file.stderr
        assert not (tmp_path / "p").exists()
    finally:
        assert cli.run("down").returncode == 0
