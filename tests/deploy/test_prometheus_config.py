"""deploy/prometheus checked by the tool made for it: promtool check config,
check rules and test rules (the unit tests of every alert and recording rule),
and checked against the services: every one scraped at its default metrics
port, every alert and recording rule covered by a promtool test."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from memsim.runtime.config import DEFAULT_PORTS, LOOPBACK

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
CONFIG = DEPLOY / "prometheus.yml"
RULE_FILES = sorted((DEPLOY / "rules").glob("*.yml"))
TEST_FILES = sorted((DEPLOY / "tests").glob("*.yml"))
SERVICES = ("mmu", "zone", "buddy", "slab", "policy")
NODE_EXPORTER = f"{LOOPBACK}:9100"
TIMEOUT_S = 60


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool") or "/usr/bin/promtool"
    if not Path(binary).exists():
        pytest.skip(
            "promtool is not installed: apt-get install prometheus "
            "(Debian's package; .ci/run installs it when run as root)"
        )
    return subprocess.run(
        [binary, *map(str, args)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def rules() -> list[dict[str, Any]]:
    return [
        rule for path in RULE_FILES for group in load(path)["groups"] for rule in group["rules"]
    ]


def test_promtool_check_config() -> None:
    result = promtool("check", "config", CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_check_rules() -> None:
    assert [p.name for p in RULE_FILES] == ["alerts.yml", "recording.yml"]
    result = promtool("check", "rules", *RULE_FILES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules() -> None:
    assert TEST_FILES
    result = promtool("test", "rules", *TEST_FILES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(TEST_FILES), result.stdout


def test_every_service_and_node_exporter_is_scraped() -> None:
    config = load(CONFIG)
    jobs = {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
        for job in config["scrape_configs"]
    }
    expected = {name: [f"{LOOPBACK}:{DEFAULT_PORTS[name][1]}"] for name in SERVICES}
    assert jobs == {**expected, "node": [NODE_EXPORTER]}
    rule_files = [DEPLOY / name for name in config["rule_files"]]
    assert sorted(rule_files) == RULE_FILES


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    alerts = {rule["alert"] for rule in rules() if "alert" in rule}
    assert alerts >= {
        "MemsimZoneBelowLowWatermark",
        "MemsimOomKill",
        "MemsimKernelPanic",
        "MemsimHighExternalFragmentation",
        "MemsimKswapdBusy",
        "MemsimServiceDown",
        "MemsimRpcErrorRatioHigh",
    }
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in TEST_FILES:
        for test in load(path)["tests"]:
            for case in test.get("alert_rule_test", []):
                (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    assert alerts - firing == set(), "alerts never tested firing"
    assert alerts - quiet == set(), "alerts never tested not firing"


def test_every_recording_rule_is_tested() -> None:
    records = {rule["record"] for rule in rules() if "record" in rule}
    tested = {
        case["expr"].partition("{")[0]
        for path in TEST_FILES
        for test in load(path)["tests"]
        for case in test.get("promql_expr_test", [])
    }
    assert records - tested == set()


def test_every_alert_has_a_severity_and_a_summary() -> None:
    for rule in rules():
        if "alert" in rule:
            assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
            assert rule["annotations"]["summary"], rule["alert"]
            assert rule["annotations"]["description"], rule["alert"]
