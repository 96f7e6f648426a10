"""memsim's Grafana dashboards as code (grafana-foundation-sdk).

`python -m memsim.dashboards deploy/grafana/dashboards` writes one JSON file
per dashboard (sorted keys, stable uids and panel ids, trailing newline);
tests/unit/test_dashboards.py checks that the committed files are current.
`queries()` lists every panel's and annotation's PromQL, for the end-to-end
test that runs them against a real Prometheus.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard

from memsim.dashboards import buddy, overview, processes, services, slab
from memsim.dashboards.missing import MISSING_METRICS

__all__ = [
    "DASHBOARDS",
    "REGENERATE",
    "PanelQuery",
    "generate",
    "metric_names",
    "queries",
    "render",
    "write",
]

REGENERATE = "python -m memsim.dashboards deploy/grafana/dashboards"

# File name (without .json) -> the function that builds the dashboard.
DASHBOARDS: dict[str, Callable[[], Dashboard]] = {
    "memsim-overview": overview.dashboard,
    "memsim-buddy": buddy.dashboard,
    "memsim-slab": slab.dashboard,
    "memsim-processes": processes.dashboard,
    "memsim-services": services.dashboard,
}


def render(model: Dashboard) -> str:
    """The dashboard as Grafana reads it: JSON, sorted keys, two-space indent."""
    return json.dumps(model, cls=JSONEncoder, sort_keys=True, indent=2) + "\n"


def generate() -> dict[str, str]:
    """File name -> contents, for every dashboard."""
    return {f"{name}.json": render(build()) for name, build in DASHBOARDS.items()}


def write(directory: Path) -> list[Path]:
    """Writes every dashboard into directory and removes *.json files that no
    dashboard produces any more; the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    files = generate()
    for stale in directory.glob("*.json"):
        if stale.name not in files:
            stale.unlink()
    written = []
    for name, text in files.items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


_METRIC = re.compile(r"\b(?:memsim_[a-z0-9_]+|grpc_server_[a-z0-9_]+|process_[a-z0-9_]+|up)\b")
_LABEL_SETS = re.compile(r"\{[^}]*\}")


def metric_names(expr: str) -> set[str]:
    """Metric names a query reads (memsim's, the gRPC ones, process_*, up)."""
    return set(_METRIC.findall(_LABEL_SETS.sub("{}", expr)))


@dataclass(frozen=True)
class PanelQuery:
    """One query of a generated dashboard."""

    dashboard: str  # uid
    panel: str  # panel title, or annotation name
    expr: str  # as in the JSON, with Grafana's variables
    kind: Literal["panel", "annotation"] = "panel"
    instant: bool = False
    missing: tuple[str, ...] = ()  # metrics no service exports yet (missing.py)
    variables: Mapping[str, str] = field(default_factory=dict)

    def promql(self, rate_interval: str = "1m") -> str:
        """The query as Prometheus takes it: $__rate_interval and the
        dashboard's variables (at their "All" value) substituted."""
        expr = self.expr.replace("$__rate_interval", rate_interval)
        for name, value in sorted(self.variables.items(), key=lambda kv: -len(kv[0])):
            expr = expr.replace(f"${{{name}}}", value).replace(f"${name}", value)
        return expr


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # a row's collapsed panels


def _dashboard_queries(model: dict[str, Any]) -> Iterator[PanelQuery]:
    uid = model["uid"]
    templating = model.get("templating", {}).get("list", [])
    variables = {v["name"]: v.get("allValue") or ".+" for v in templating}

    def entry(
        panel: str, expr: str, kind: Literal["panel", "annotation"], instant: bool
    ) -> PanelQuery:
        missing = tuple(sorted(metric_names(expr) & MISSING_METRICS.keys()))
        return PanelQuery(uid, panel, expr, kind, instant, missing, variables)

    for annotation in model.get("annotations", {}).get("list", []):
        if "expr" in annotation:
            yield entry(annotation["name"], annotation["expr"], "annotation", False)
    for panel in _panels(model.get("panels", [])):
        for target in panel.get("targets", []):
            yield entry(panel["title"], target["expr"], "panel", bool(target.get("instant")))


def queries() -> list[PanelQuery]:
    """Every (dashboard, panel title, expr) of the generated dashboards,
    annotations included, in dashboard and panel order."""
    return [query for text in generate().values() for query in _dashboard_queries(json.loads(text))]
