"""Latency percentiles (within 1 %), counters, and the JSON and CSV outputs."""

from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path

import pytest

from memsim.clients.load.output import OutputError, output_format, to_csv, write_output
from memsim.clients.load.stats import Histogram, Stats


def exact(values: list[float], p: float) -> float:
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def test_percentiles_are_within_one_percent() -> None:
    rng = random.Random(1)
    values = [rng.lognormvariate(-7, 1.2) for _ in range(20000)]
    h = Histogram()
    for v in values:
        h.add(v)
    for p in (1, 50, 90, 99, 99.9, 100):
        assert h.percentile(p) == pytest.approx(exact(values, p), rel=0.011), p
    assert h.count == 20000
    assert h.max_s == max(values)


def test_small_and_empty_histograms() -> None:
    h = Histogram()
    assert h.percentile(50) == 0.0
    h.add(0.002)
    assert h.percentile(50) == pytest.approx(0.002)  # clamped to the one value
    assert h.percentile(99) == pytest.approx(0.002)
    other = Histogram()
    other.add(0.004)
    h.merge(other)
    assert h.count == 2
    assert h.percentile(100) == pytest.approx(0.004, rel=0.01)


def summary() -> dict[str, object]:
    s = Stats()
    for _ in range(10):
        s.add("malloc", "ok", "OK", 0.001)
    s.add("malloc", "ENOMEM", "RESOURCE_EXHAUSTED", 0.002)
    s.add("touch", "killed", "FAILED_PRECONDITION", 0.003)
    s.add("kmalloc", "error", "UNAVAILABLE", 0.004, "connection refused")
    assert s.unexpected == 1
    assert s.last_error == "kmalloc: UNAVAILABLE: connection refused"
    return s.summary(mix="x", seed=1)


def test_the_summary_counts_ops_outcomes_and_codes() -> None:
    data = summary()
    assert data["calls"] == 13
    assert data["outcomes"] == {"ENOMEM": 1, "error": 1, "killed": 1, "ok": 10}
    assert data["status_codes"] == {
        "FAILED_PRECONDITION": 1,
        "OK": 10,
        "RESOURCE_EXHAUSTED": 1,
        "UNAVAILABLE": 1,
    }
    ops = data["ops"]
    assert isinstance(ops, dict)
    assert ops["malloc"]["calls"] == 11
    assert ops["malloc"]["latency_ms"]["p50"] == pytest.approx(1.0, rel=0.01)
    json.dumps(data)  # plain data


def test_json_and_csv_outputs(tmp_path: Path) -> None:
    data = summary()
    write_output(tmp_path / "s.json", data)
    assert json.loads((tmp_path / "s.json").read_text()) == data
    write_output(tmp_path / "s.csv", data)
    rows = list(csv.DictReader(io.StringIO((tmp_path / "s.csv").read_text())))
    assert [r["op"] for r in rows] == ["kmalloc", "malloc", "touch", "total"]
    assert rows[-1]["calls"] == "13"
    assert rows[1]["ENOMEM"] == "1"
    assert rows[1]["ok"] == "10"
    assert float(rows[1]["p50_ms"]) == pytest.approx(1.0, rel=0.01)
    assert to_csv(data).splitlines()[0].startswith("op,calls,ENOMEM,error,killed,ok,p50_ms")
    with pytest.raises(OutputError, match=r"\.json or \.csv"):
        output_format(tmp_path / "s.txt")
