"""The real Prometheus scrapes `memsim up -d` with deploy/prometheus's jobs and
rules, a workload runs, and its HTTP API has the data."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import grpc
import pytest
import yaml

from memsim.clients.process.process import Process
from memsim.runtime.channel import open_channel
from memsim.services.slab.client import SlabClient
from tests.e2e.harness import Cli
from tests.e2e.prometheus_harness import (
    DEPLOY,
    MEMSIM_JOBS,
    memsim_scrape_config,
    metrics_addresses,
    prometheus_binary,
    running_prometheus,
    values,
)

PAGE = 4096
TOUCHED_PAGES = 64
KMALLOCS = 16
# The recording rules and alerts of deploy/prometheus/rules, all loaded.
DEPLOYED_RULES = sum(
    len(group["rules"])
    for path in sorted((DEPLOY / "rules").glob("*.yml"))
    for group in yaml.safe_load(path.read_text())["groups"]
)
METRIC_NAME = re.compile(r"(?<![\w:])(?:memsim|grpc_server)_\w+(?![\w:])")


async def workload(addresses: dict[str, str]) -> None:
    """Two processes map and touch memory and exit; kmalloc and kfree through
    the slab service, and one kfree it refuses (a non-OK status code)."""
    async with open_channel(addresses["mmu"]) as channel:
        for name in ("prom-a", "prom-b"):
            proc = await Process.spawn(channel, name)
            address = await proc.mmap(TOUCHED_PAGES * PAGE)
            await proc.touch(address, TOUCHED_PAGES * PAGE)
            await proc.write(address, b"memsim")
            await proc.exit()
    async with open_channel(addresses["slab"]) as channel:
        slab = SlabClient(channel)
        objects = [*(await slab.kmalloc(64, count=KMALLOCS)).addresses]
        objects += (await slab.kmalloc(1000, count=KMALLOCS)).addresses
        await slab.kfree(objects)
        with pytest.raises(grpc.aio.AioRpcError):
            await slab.kfree(objects[:1])  # a double free


def rule_metric_names() -> set[str]:
    """Every memsim_* and grpc_server_* metric the rules' expressions read
    (not the level:metric:operations names of recording rules)."""
    names: set[str] = set()
    for path in sorted((DEPLOY / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                names.update(METRIC_NAME.findall(rule["expr"]))
    return names


def test_prometheus_scrapes_every_service_and_evaluates_the_rules(cli: Cli, tmp_path: Path) -> None:
    prometheus_binary()  # skips, with how to install it, when missing
    up = cli.run("up", "-d", "--ephemeral-ports")
    assert up.returncode == 0, up.stderr
    try:
        targets = metrics_addresses(cli.run_dir)
        assert set(targets) == set(MEMSIM_JOBS)
        config = memsim_scrape_config(targets, interval="1s")
        with running_prometheus(config, tmp_path / "prometheus") as prometheus:
            prometheus.wait_for(
                "up == 1", lambda r: set(values(r, "job")) == set(MEMSIM_JOBS), timeout_s=30
            )
            # Twice, scraped after each round, so that the series the first
            # round creates (Kmalloc's) also grow while Prometheus watches.
            for round_ in (1, 2):
                asyncio.run(workload(cli.addresses()))
                prometheus.wait_for(
                    'grpc_server_handled_total{job="slab",grpc_method="Kmalloc",grpc_code="OK"}'
                    f" >= {2 * round_}"
                )
                prometheus.wait_for(
                    f'memsim_mmu_page_faults_total{{kind="minor"}} >= {128 * round_}'
                )

            assert values(prometheus.query("up"), "job") == dict.fromkeys(MEMSIM_JOBS, 1.0)
            for job in MEMSIM_JOBS:
                series = prometheus.query(f'{{__name__=~"memsim_.+",job="{job}"}}')
                assert series, f"no memsim_* series from {job}"
            handled = prometheus.query("sum by (job) (grpc_server_handled_total)")
            assert set(values(handled, "job")) == set(MEMSIM_JOBS)
            codes = values(
                prometheus.query('sum by (grpc_code) (grpc_server_handled_total{job="slab"})'),
                "grpc_code",
            )
            assert codes["OK"] >= 6
            assert set(codes) - {"OK"}, codes  # the refused double free

            # The rules read only metrics that exist.
            names = set(prometheus.api("label/__name__/values"))
            assert rule_metric_names() - names == set()

            # Every rule evaluates without error; the recording rules have data.
            rules = prometheus.wait_rules_evaluated()
            assert len(rules) == DEPLOYED_RULES
            assert [r for r in rules if r["health"] != "ok"] == []
            free = prometheus.wait_for("node_zone:memsim_zone_free_pages:sum")
            assert set(values(free, "zone")) == {"DMA", "Normal", "HighMem"}
            rates = prometheus.wait_for(
                'job_grpc_method:grpc_server_handled:rate1m{job="slab",grpc_method="Kmalloc"} > 0'
            )
            assert len(rates) == 1
            prometheus.wait_for('kind:memsim_mmu_page_faults:rate1m{kind="minor"} > 0')
            prometheus.wait_for(
                'job_grpc_method:grpc_server_handling_seconds:histogram_quantile{job="slab",'
                'grpc_method="Kmalloc",quantile="0.99"} > 0'
            )
            # A healthy machine: nothing fires.
            assert prometheus.query('ALERTS{alertstate="firing"}') == []
    finally:
        down = cli.run("down")
        assert down.returncode == 0, down.stderr
