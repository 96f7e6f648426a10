"""Every query of the Grafana dashboards runs against the real Prometheus
scraping `memsim up -d` after a workload: none errors, and every panel query
has at least one series (except those waiting for a metric that
src/memsim/dashboards/missing.py lists as not exported yet), with the labels
its `by (...)` clauses group by."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from memsim.clients.process.process import InvalidArgument, Process
from memsim.dashboards import PanelQuery, queries
from memsim.runtime.channel import open_channel
from tests.e2e.harness import Cli
from tests.e2e.prometheus_harness import (
    MEMSIM_JOBS,
    PrometheusError,
    memsim_scrape_config,
    metrics_addresses,
    prometheus_binary,
    running_prometheus,
    values,
)

PAGE = 4096
PAGES = 64
# $__rate_interval with a 1 s scrape: long enough to cover the whole workload.
RATE_INTERVAL = "30s"
BY = re.compile(r"\bby \(([^)]*)\)")

pytestmark = pytest.mark.e2e


async def workload(mmu_address: str) -> None:
    """Processes map, touch, write, fork and malloc; one bad mmap (a non-OK
    status code for the error panels); one process stays alive (top RSS)."""
    async with open_channel(mmu_address) as channel:
        for name in ("graf-a", "graf-b", "graf-keep"):
            proc = await Process.spawn(channel, name)
            address = await proc.mmap(PAGES * PAGE)
            await proc.touch(address, PAGES * PAGE)
            child = await proc.fork()
            await child.write(address, b"memsim")  # copy-on-write
            await proc.malloc(1000)
            with pytest.raises(InvalidArgument):
                await proc.mmap(PAGE, prot=0x800000)  # unknown protection bits
            await child.exit()
            if name != "graf-keep":
                await proc.exit()


def grouped_labels(expr: str) -> set[str]:
    """Label names of the query's `by (...)` clauses (le is consumed by
    histogram_quantile)."""
    return {
        label.strip() for group in BY.findall(expr) for label in group.split(",") if label.strip()
    } - {"le"}


def test_every_dashboard_query_runs_and_has_data(cli: Cli, tmp_path: Path) -> None:
    prometheus_binary()  # skips, with how to install it, when missing
    up = cli.run("up", "-d", "--ephemeral-ports")
    assert up.returncode == 0, up.stderr
    try:
        config = memsim_scrape_config(metrics_addresses(cli.run_dir), with_rules=False)
        with running_prometheus(config, tmp_path / "prometheus") as prometheus:
            prometheus.wait_for(
                "up == 1", lambda r: set(values(r, "job")) == set(MEMSIM_JOBS), timeout_s=30
            )
            asyncio.run(workload(cli.addresses()["mmu"]))
            # Two scrapes of the refused call, so that rate() over it has a series.
            prometheus.wait_for(
                f'rate(grpc_server_handled_total{{job="mmu", grpc_code!="OK"}}[{RATE_INTERVAL}])'
            )
            prometheus.wait_for(f'memsim_mmu_page_faults_total{{kind="minor"}} >= {3 * PAGES}')

            failures: list[str] = []
            pending: list[PanelQuery] = []
            for query in queries():
                where = f"{query.dashboard} / {query.panel}: {query.promql(RATE_INTERVAL)}"
                try:
                    result = prometheus.query(query.promql(RATE_INTERVAL))
                except PrometheusError as error:
                    failures.append(f"{where}: {error}")
                    continue
                if query.kind == "annotation":
                    continue  # events: none on a healthy machine
                if not result:
                    if query.missing:
                        pending.append(query)
                    else:
                        failures.append(f"{where}: no series")
                    continue
                present = set().union(*(sample["metric"].keys() for sample in result))
                absent = grouped_labels(query.expr) - present
                if absent:
                    failures.append(f"{where}: no series has the labels {sorted(absent)}")
            assert failures == []
            # The panels waiting for a metric have no data only for that reason.
            assert all(q.missing for q in pending)
    finally:
        down = cli.run("down")
        assert down.returncode == 0, down.stderr
