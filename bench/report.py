"""Collects benchmark results and prints them as one table (and JSON)."""

from __future__ import annotations

import json
import platform
import re
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
NAME_WIDTH = 66
# Rows of the echo service's rate (the ceiling every gRPC ratio is taken
# against): "echo calls/s, ..., N in flight ...".
ECHO_ROW = re.compile(r"^echo calls/s\b.*?\b(\d+) in flight")


@dataclass
class Result:
    name: str
    value: float
    unit: str
    goal: str = ""
    # None: a figure for context, with no goal to meet.
    passed: bool | None = None
    detail: str = ""


def _cell(text: str) -> str:
    """Text for a markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


@dataclass
class Report:
    results: list[Result] = field(default_factory=list)

    def add(self, result: Result) -> None:
        self.results.append(result)
        mark = {True: "ok", False: "MISSED", None: ""}[result.passed]
        print(
            f"  {result.name:{NAME_WIDTH}} {result.value:14.3f} {result.unit:10} "
            f"{result.goal:10} {mark}",
            flush=True,
        )

    def echo_ceiling(self) -> list[dict[str, Any]]:
        """The echo rows of the run by calls in flight: how many, their median,
        lowest and highest (each row itself a median of paired rounds)."""
        by_in_flight: dict[int, list[Result]] = {}
        for r in self.results:
            match = ECHO_ROW.match(r.name)
            if match and r.unit == "calls/s":
                by_in_flight.setdefault(int(match.group(1)), []).append(r)
        return [
            {
                "in_flight": in_flight,
                "rows": len(rows),
                "median_calls_per_s": round(statistics.median(r.value for r in rows), 3),
                "min_calls_per_s": round(min(r.value for r in rows), 3),
                "max_calls_per_s": round(max(r.value for r in rows), 3),
                "names": [r.name for r in rows],
            }
            for in_flight, rows in sorted(by_in_flight.items())
        ]

    def write(self, stem: str) -> Path:
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"{stem}.json"
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        ceiling = self.echo_ceiling()
        path.write_text(
            json.dumps(
                {
                    "when": when,
                    "python": platform.python_version(),
                    "machine": platform.machine(),
                    "echo_ceiling": ceiling,
                    "results": [asdict(r) for r in self.results],
                },
                indent=2,
            )
        )
        passed = sum(r.passed is True for r in self.results)
        missed = sum(r.passed is False for r in self.results)
        markdown = [
            f"# make bench, {when}",
            "",
            f"Python {platform.python_version()} on {platform.machine()}: "
            f"{len(self.results)} rows, {passed + missed} with a goal, "
            f"{passed} met, {missed} missed.",
            "",
            "## Echo ceiling in this run",
            "",
            "Every echo row of the table, by calls in flight (each row a median of paired rounds).",
            "",
            "| in flight | rows | median calls/s | lowest | highest |",
            "|---:|---:|---:|---:|---:|",
        ]
        markdown += [
            f"| {c['in_flight']} | {c['rows']} | {c['median_calls_per_s']:.1f} | "
            f"{c['min_calls_per_s']:.1f} | {c['max_calls_per_s']:.1f} |"
            for c in ceiling
        ]
        markdown += [
            "",
            "## Results",
            "",
            "| benchmark | value | unit | goal | met | detail |",
            "|---|---:|---|---|---|---|",
        ]
        markdown += [
            f"| {_cell(r.name)} | {r.value:.3f} | {r.unit} | {_cell(r.goal)} | "
            f"{'' if r.passed is None else ('yes' if r.passed else 'NO')} | {_cell(r.detail)} |"
            for r in self.results
        ]
        (RESULTS / f"{stem}.md").write_text("\n".join(markdown) + "\n")
        return path

    @property
    def all_passed(self) -> bool:
        return all(r.passed is not False for r in self.results)
