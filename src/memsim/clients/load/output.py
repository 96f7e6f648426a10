"""--output FILE: the summary as JSON (.json) or CSV (.csv, one row per op
and a "total" row)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

FORMATS = (".json", ".csv")
LATENCY_COLUMNS = ("p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms")


class OutputError(ValueError):
    pass


def output_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise OutputError(f"--output {path}: the name must end in .json or .csv")
    return suffix[1:]


def to_json(summary: dict[str, Any]) -> str:
    return json.dumps(summary, indent=2, sort_keys=False) + "\n"


def to_csv(summary: dict[str, Any]) -> str:
    """op, calls, one column per outcome seen (sorted), then the latencies."""
    outcomes = sorted(summary["outcomes"])
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["op", "calls", *outcomes, *LATENCY_COLUMNS])
    rows = [(op, data) for op, data in summary["ops"].items()]
    rows.append(
        (
            "total",
            {
                "calls": summary["calls"],
                "outcomes": summary["outcomes"],
                "latency_ms": summary["latency_ms"],
            },
        )
    )
    for op, data in rows:
        lat = data["latency_ms"]
        writer.writerow(
            [
                op,
                data["calls"],
                *(data["outcomes"].get(o, 0) for o in outcomes),
                lat["p50"],
                lat["p90"],
                lat["p99"],
                lat["max"],
                lat["mean"],
            ]
        )
    return out.getvalue()


def write_output(path: Path, summary: dict[str, Any]) -> None:
    text = to_json(summary) if output_format(path) == "json" else to_csv(summary)
    path.write_text(text, encoding="utf-8")
