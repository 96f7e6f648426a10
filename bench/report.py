"""Collects benchmark results and prints them as one table (and JSON)."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Result:
    name: str
    value: float
    unit: str
    goal: str = ""
    # None: a figure for context, with no goal to meet.
    passed: bool | None = None
    detail: str = ""


@dataclass
class Report:
    results: list[Result] = field(default_factory=list)

    def add(self, result: Result) -> None:
        self.results.append(result)
        mark = {True: "ok", False: "MISSED", None: ""}[result.passed]
        print(
            f"  {result.name:62} {result.value:14.3f} {result.unit:10} {result.goal:10} {mark}",
            flush=True,
        )

    def write(self, stem: str) -> Path:
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"{stem}.json"
        path.write_text(
            json.dumps(
                {
                    "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "python": platform.python_version(),
                    "machine": platform.machine(),
                    "results": [asdict(r) for r in self.results],
                },
                indent=2,
            )
        )
        markdown = ["| benchmark | value | unit | goal | met |", "|---|---:|---|---|---|"]
        markdown += [
            f"| {r.name} | {r.value:.3f} | {r.unit} | {r.goal} | "
            f"{'' if r.passed is None else ('yes' if r.passed else 'NO')} |"
            for r in self.results
        ]
        (RESULTS / f"{stem}.md").write_text("\n".join(markdown) + "\n")
        return path

    @property
    def all_passed(self) -> bool:
        return all(r.passed is not False for r in self.results)
