"""What every memsim dashboard shares: the data source, the job names that
deploy/prometheus scrapes, and small panel helpers over grafana-foundation-sdk.

A panel is declared as a title, a description and its PromQL queries; the
helpers fill in the rest (data source, legend, tooltip, size), so that a
dashboard module reads as a list of questions and the queries that answer them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from grafana_foundation_sdk.builders import bargauge, prometheus, stat, timeseries
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as dashboard_models

# The data source provisioned by deploy/grafana/provisioning/datasources/prometheus.yml.
DATASOURCE_UID = "prometheus"
DATASOURCE = dashboard_models.DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)

# Scrape job names, as deploy/prometheus/prometheus.yml spells them.
BUDDY = 'job="buddy"'
ZONE = 'job="zone"'
SLAB = 'job="slab"'
MMU = 'job="mmu"'
POLICY = 'job="policy"'
SERVICE_JOBS = ("buddy", "zone", "slab", "mmu", "policy")
NODE_EXPORTER_JOB = "node"

# Grafana's own variable for rate() windows: at least four scrape intervals.
RATE = "$__rate_interval"

TAG = "memsim"
PAGES = "short"  # memsim's metrics count pages; Grafana has no unit for them


@dataclass(frozen=True)
class Query:
    """One PromQL query of a panel, with its legend."""

    expr: str
    legend: str = ""


def _target(query: Query, ref_id: str, instant: bool) -> prometheus.Dataquery:
    target = (
        prometheus.Dataquery()
        .datasource(DATASOURCE)
        .expr(query.expr)
        .legend_format(query.legend or "__auto")
        .ref_id(ref_id)
    )
    return target.instant() if instant else target.range()


def _ref_ids(queries: Sequence[Query]) -> list[str]:
    if not queries:
        raise ValueError("a panel needs at least one query")
    return [chr(ord("A") + i) for i in range(len(queries))]


_Panel = TypeVar("_Panel", timeseries.Panel, bargauge.Panel, stat.Panel)


def _panel(
    panel: _Panel, title: str, description: str, unit: str, width: int, height: int
) -> _Panel:
    """What every panel has: its title and description, the data source, the
    unit of its values, its size."""
    return (
        panel.title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(width)
        .height(height)
    )


def timeseries_panel(
    title: str,
    description: str,
    queries: Sequence[Query],
    *,
    unit: str = PAGES,
    stack: bool = False,
    width: int = 12,
    height: int = 8,
    min_value: float | None = None,
    max_value: float | None = None,
    dashed: str | None = None,
) -> timeseries.Panel:
    """A graph over time; `dashed` is a regexp of series drawn as dashed lines
    (limits and watermarks against the values they bound)."""
    panel = (
        _panel(timeseries.Panel(), title, description, unit, width, height)
        .fill_opacity(25 if stack else 10)
        .line_width(1)
        .legend(
            common_builders.VizLegendOptions()
            .show_legend(True)
            .display_mode(common_models.LegendDisplayMode.LIST)
            .placement(common_models.LegendPlacement.BOTTOM)
        )
        .tooltip(
            common_builders.VizTooltipOptions()
            .mode(common_models.TooltipDisplayMode.MULTI)
            .sort(common_models.SortOrder.DESCENDING)
        )
    )
    if stack:
        panel = panel.stacking(
            common_builders.StackingConfig().mode(common_models.StackingMode.NORMAL)
        )
    if min_value is not None:
        panel = panel.min(min_value)
    if max_value is not None:
        panel = panel.max(max_value)
    if dashed is not None:
        panel = panel.override_by_regexp(
            dashed,
            [
                dashboard_models.DynamicConfigValue(
                    id_val="custom.lineStyle", value={"dash": [10, 10], "fill": "dash"}
                ),
                dashboard_models.DynamicConfigValue(id_val="custom.fillOpacity", value=0),
                dashboard_models.DynamicConfigValue(
                    id_val="custom.stacking", value={"mode": "none"}
                ),
            ],
        )
    for query, ref_id in zip(queries, _ref_ids(queries), strict=True):
        panel = panel.with_target(_target(query, ref_id, instant=False))
    return panel


def rate_panel(
    title: str, description: str, queries: Sequence[Query], *, width: int = 12
) -> timeseries.Panel:
    """A graph of events per second."""
    return timeseries_panel(title, description, queries, unit="ops", width=width)


def bars_panel(
    title: str,
    description: str,
    queries: Sequence[Query],
    *,
    unit: str = PAGES,
    width: int = 12,
    height: int = 8,
) -> bargauge.Panel:
    """Horizontal bars of the latest values (instant queries): rankings."""
    panel = (
        _panel(bargauge.Panel(), title, description, unit, width, height)
        .min(0)
        .orientation(common_models.VizOrientation.HORIZONTAL)
        .display_mode(common_models.BarGaugeDisplayMode.GRADIENT)
        .show_unfilled(True)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )
    for query, ref_id in zip(queries, _ref_ids(queries), strict=True):
        panel = panel.with_target(_target(query, ref_id, instant=True))
    return panel


def stat_panel(
    title: str,
    description: str,
    query: Query,
    *,
    unit: str = PAGES,
    width: int = 4,
    height: int = 4,
    red_from: float | None = None,
) -> stat.Panel:
    """One big number; red at and above `red_from`."""
    steps = [dashboard_models.Threshold(value=None, color="green")]
    if red_from is not None:
        steps.append(dashboard_models.Threshold(value=red_from, color="red"))
    return (
        _panel(stat.Panel(), title, description, unit, width, height)
        .graph_mode(common_models.BigValueGraphMode.AREA)
        .color_mode(common_models.BigValueColorMode.VALUE)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .thresholds(
            dashboard_builders.ThresholdsConfig()
            .mode(dashboard_models.ThresholdsMode.ABSOLUTE)
            .steps(steps)
        )
        .with_target(_target(query, "A", instant=False))
    )


def annotation(name: str, expr: str, color: str) -> dashboard_builders.AnnotationQuery:
    """Events from a PromQL query: a mark wherever the query has a sample."""
    return (
        dashboard_builders.AnnotationQuery()
        .name(name)
        .datasource(DATASOURCE)
        .enable(True)
        .hide(False)
        .icon_color(color)
        .expr(expr)
    )


def oom_kill_annotation() -> dashboard_builders.AnnotationQuery:
    return annotation("OOM kills", f"increase(memsim_oom_kills_total{{{POLICY}}}[1m]) > 0", "red")


def panic_annotation() -> dashboard_builders.AnnotationQuery:
    return annotation("Kernel panic", f"memsim_policy_panicked{{{POLICY}}} > 0", "purple")


def new_dashboard(
    uid: str, title: str, description: str, *annotations: dashboard_builders.AnnotationQuery
) -> dashboard_builders.Dashboard:
    """A dashboard with memsim's defaults: last 30 minutes, refreshed every
    10 s, shared crosshair, links to the other memsim dashboards; and the
    annotations given, in order."""
    d = (
        dashboard_builders.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags([TAG])
        .editable()
        .time("now-30m", "now")
        .refresh("10s")
        .timezone("browser")
        .tooltip(dashboard_models.DashboardCursorSync.CROSSHAIR)
        .link(
            dashboard_builders.DashboardLink("memsim")
            .type(dashboard_models.DashboardLinkType.DASHBOARDS)
            .tags([TAG])
            .as_dropdown(True)
            .include_vars(False)
            .keep_time(True)
            .target_blank(False)
            .icon("external link")
            .tooltip("")
            .url("")
        )
    )
    for query in annotations:
        d = d.annotation(query)
    return d


def build(builder: dashboard_builders.Dashboard) -> dashboard_models.Dashboard:
    """The dashboard model, its panels numbered 1, 2, ... in order (stable ids)."""
    model = builder.build()
    for number, panel in enumerate(model.panels or [], start=1):
        panel.id_val = number
    return model
