"""The Grafana dashboards: generated from src/memsim/dashboards, committed in
deploy/grafana/dashboards, current, self-consistent, and reading only
metrics that the services export (or that missing.py lists as still to come)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from memsim.dashboards import DASHBOARDS, REGENERATE, generate, metric_names, queries
from memsim.dashboards.common import DATASOURCE_UID
from memsim.dashboards.missing import MISSING_METRICS

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
COMMITTED = GRAFANA / "dashboards"

# Where the exported metric names are spelled.
METRIC_SOURCES = [
    *sorted((ROOT / "src" / "memsim" / "services").glob("*/metrics.py")),
    ROOT / "src" / "memsim" / "runtime" / "interceptors.py",
]
# prometheus_client's process collector and Prometheus's own series.
STANDARD = {"process_cpu_seconds_total", "process_resident_memory_bytes", "up"}
# What Prometheus stores for a family named N: counters and histograms.
SUFFIXES = ("", "_total", "_bucket", "_sum", "_count")


def _files(directory: Path) -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(directory.glob("*.json"))}


def _models() -> dict[str, dict[str, Any]]:
    return {name: json.loads(text) for name, text in generate().items()}


def test_committed_dashboards_are_what_the_generator_writes(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "memsim.dashboards", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    fresh = _files(tmp_path)
    committed = _files(COMMITTED)
    assert fresh, "the generator wrote nothing"
    assert sorted(committed) == sorted(fresh), f"run {REGENERATE}: the files differ"
    stale = [name for name in fresh if committed[name] != fresh[name]]
    assert not stale, f"run {REGENERATE}: stale dashboards {stale}"


def test_generation_is_deterministic_sorted_and_ends_with_a_newline() -> None:
    first, second = generate(), generate()
    assert first == second
    for name, text in first.items():
        assert text.endswith("}\n"), name
        assert text == json.dumps(json.loads(text), sort_keys=True, indent=2) + "\n", name


def test_uids_are_the_file_names_and_panel_ids_are_stable() -> None:
    for name, model in _models().items():
        assert model["uid"] == name.removesuffix(".json")
        assert len(model["uid"]) <= 40  # Grafana's limit
        panels = model["panels"]
        assert [p["id"] for p in panels] == list(range(1, len(panels) + 1)), name
        titles = [p["title"] for p in panels]
        assert len(titles) == len(set(titles)), f"{name}: two panels with one title"
        for panel in panels:
            assert panel["targets"], f"{name}: {panel['title']} has no query"
            assert panel.get("description"), f"{name}: {panel['title']} has no description"
    assert set(DASHBOARDS) == {n.removesuffix(".json") for n in _models()}


def test_every_panel_query_annotation_and_variable_uses_the_provisioned_data_source() -> None:
    provisioned = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    (source,) = provisioned["datasources"]
    assert source["uid"] == DATASOURCE_UID
    assert source["type"] == "prometheus"
    for name, model in _models().items():
        refs = [p["datasource"] for p in model["panels"]]
        refs += [t["datasource"] for p in model["panels"] for t in p["targets"]]
        refs += [a["datasource"] for a in model.get("annotations", {}).get("list", [])]
        refs += [v["datasource"] for v in model.get("templating", {}).get("list", [])]
        assert refs, name
        assert all(r == {"type": "prometheus", "uid": DATASOURCE_UID} for r in refs), name


def test_the_data_source_url_comes_from_the_environment_with_a_loopback_default() -> None:
    provisioned = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    assert provisioned["datasources"][0]["url"] == "${PROMETHEUS_URL}"
    env = dict(
        line.split("=", 1)
        for line in (GRAFANA / "grafana.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert env["PROMETHEUS_URL"] == "http://127.0.0.1:9090"


def test_the_dashboard_provider_reads_a_directory_of_files() -> None:
    provisioned = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "memsim.yml").read_text()
    )
    (provider,) = provisioned["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"]


def _exported() -> set[str]:
    names: set[str] = set()
    for source in METRIC_SOURCES:
        for family in re.findall(r'"((?:memsim|grpc_server)_[a-z0-9_]+)"', source.read_text()):
            names.update(family + suffix for suffix in SUFFIXES)
    return names


def test_every_query_reads_exported_metrics_or_ones_listed_as_missing() -> None:
    exported = _exported() | STANDARD
    for query in queries():
        names = metric_names(query.expr)
        assert names, f"{query.dashboard}: {query.panel}: no metric in {query.expr}"
        unknown = names - exported - MISSING_METRICS.keys()
        assert not unknown, f"{query.dashboard}: {query.panel}: unknown metrics {unknown}"
        assert set(query.missing) == names & MISSING_METRICS.keys()


def test_every_missing_metric_is_needed_by_a_panel() -> None:
    used = {name for query in queries() for name in query.missing}
    assert used == set(MISSING_METRICS)


def test_queries_list_every_target_and_annotation() -> None:
    listed = queries()
    expected = 0
    for model in _models().values():
        expected += sum(len(p["targets"]) for p in model["panels"])
        expected += sum("expr" in a for a in model.get("annotations", {}).get("list", []))
    assert len(listed) == expected
    kinds = {q.kind for q in listed}
    assert kinds == {"panel", "annotation"}


def test_promql_has_every_grafana_variable_substituted() -> None:
    for query in queries():
        promql = query.promql("2m")
        assert "$" not in promql, promql
        assert promql.count("(") == promql.count(")"), promql
        assert promql.count("{") == promql.count("}"), promql
