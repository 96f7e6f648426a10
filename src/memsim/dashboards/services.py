"""The services as gRPC servers: requests, errors and latency per RPC,
from the go-grpc-prometheus metrics of runtime/interceptors.py."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.models import dashboard as dashboard_models

from memsim.dashboards.common import (
    DATASOURCE,
    NODE_EXPORTER_JOB,
    RATE,
    SERVICE_JOBS,
    Query,
    build,
    new_dashboard,
    stat_panel,
    timeseries_panel,
)

UID = "memsim-services"
TITLE = "memsim / Services"

JOB = 'job=~"$job"'
RPC = "job, grpc_service, grpc_method"
RPC_LEGEND = "{{job}} {{grpc_method}}"
# The value the job variable takes for "All" (queries() expands $job to it):
# the memsim services only, not node_exporter or Prometheus itself.
ALL_JOBS = "|".join(SERVICE_JOBS)


def job_variable() -> dashboard_builders.QueryVariable:
    return (
        dashboard_builders.QueryVariable("job")
        .label("service")
        .datasource(DATASOURCE)
        .query("label_values(grpc_server_started_total, job)")
        .refresh(dashboard_models.VariableRefresh.ON_DASHBOARD_LOAD)
        .sort(dashboard_models.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(ALL_JOBS)
        .current(dashboard_models.VariableOption(selected=True, text="All", value="$__all"))
    )


def latency(quantile: str) -> str:
    return (
        f"histogram_quantile({quantile}, sum by ({RPC}, le) "
        f"(rate(grpc_server_handling_seconds_bucket{{{JOB}}}[{RATE}])))"
    )


def dashboard() -> dashboard_models.Dashboard:
    d = new_dashboard(
        UID,
        TITLE,
        "Every memsim service as a gRPC server: requests, errors and latency per RPC.",
    )
    d = d.with_variable(job_variable())
    scraped = "|".join((*SERVICE_JOBS, NODE_EXPORTER_JOB))
    d = d.with_panel(
        stat_panel(
            "Targets up",
            "Scrape targets that answered their last scrape, of the memsim services and "
            "node_exporter.",
            Query(f'sum(up{{job=~"{scraped}"}})'),
            unit="none",
            width=6,
        )
    )
    d = d.with_panel(
        stat_panel(
            "Targets down",
            "Scrape targets that did not answer their last scrape.",
            Query(f'count(up{{job=~"{scraped}"}} == 0) or vector(0)'),
            unit="none",
            width=6,
            red_from=1,
        )
    )
    d = d.with_panel(
        stat_panel(
            "Requests per second",
            "RPCs started per second, all services selected.",
            Query(f"sum(rate(grpc_server_started_total{{{JOB}}}[{RATE}]))"),
            unit="reqps",
            width=6,
        )
    )
    d = d.with_panel(
        stat_panel(
            "Error ratio",
            "RPCs answered with a status other than OK, over all RPCs answered.",
            Query(
                f'(sum(rate(grpc_server_handled_total{{{JOB}, grpc_code!="OK"}}[{RATE}]))'
                " or vector(0))"
                f" / sum(rate(grpc_server_handled_total{{{JOB}}}[{RATE}]))"
            ),
            unit="percentunit",
            width=6,
            red_from=0.05,
        )
    )
    d = d.with_panel(
        timeseries_panel(
            "Requests per second per RPC",
            "RPCs started per second (grpc_server_started_total).",
            [
                Query(
                    f"sum by ({RPC}) (rate(grpc_server_started_total{{{JOB}}}[{RATE}]))",
                    RPC_LEGEND,
                )
            ],
            unit="reqps",
        )
    )
    d = d.with_panel(
        timeseries_panel(
            "Responses per second by status code",
            "RPCs completed per second, by service and gRPC status code.",
            [
                Query(
                    f"sum by (job, grpc_code) (rate(grpc_server_handled_total{{{JOB}}}[{RATE}]))",
                    "{{job}} {{grpc_code}}",
                )
            ],
            unit="reqps",
        )
    )
    d = d.with_panel(
        timeseries_panel(
            "Errors per second per RPC",
            "RPCs completed with a status other than OK, by method and code "
            "(RESOURCE_EXHAUSTED: no memory; FAILED_PRECONDITION: double free, dead "
            "process or panic; ...).",
            [
                Query(
                    f"sum by ({RPC}, grpc_code) "
                    f'(rate(grpc_server_handled_total{{{JOB}, grpc_code!="OK"}}[{RATE}]))',
                    "{{job}} {{grpc_method}} {{grpc_code}}",
                )
            ],
            unit="reqps",
        )
    )
    d = d.with_panel(
        timeseries_panel(
            "Error ratio per RPC",
            "Share of each method's RPCs that completed with a status other than OK.",
            [
                Query(
                    f"sum by ({RPC}) "
                    f'(rate(grpc_server_handled_total{{{JOB}, grpc_code!="OK"}}[{RATE}]))'
                    f" / sum by ({RPC}) (rate(grpc_server_handled_total{{{JOB}}}[{RATE}]))",
                    RPC_LEGEND,
                )
            ],
            unit="percentunit",
            min_value=0,
        )
    )
    for name, quantile in (("p50", "0.5"), ("p90", "0.9"), ("p99", "0.99")):
        d = d.with_panel(
            timeseries_panel(
                f"Latency {name} per RPC",
                f"The {name} of the time the server took to handle each method "
                "(grpc_server_handling_seconds).",
                [Query(latency(quantile), RPC_LEGEND)],
                unit="s",
                width=8,
            )
        )
    d = d.with_panel(
        timeseries_panel(
            "RPCs in flight",
            "RPCs started and not yet completed: mostly the long-lived watch streams.",
            [
                Query(
                    f"sum by ({RPC}) (grpc_server_started_total{{{JOB}}})"
                    f" - sum by ({RPC}) (grpc_server_handled_total{{{JOB}}})",
                    RPC_LEGEND,
                )
            ],
            unit="none",
            width=8,
        )
    )
    d = d.with_panel(
        timeseries_panel(
            "Service CPU",
            "CPU time each service process uses (1 = one core).",
            [Query(f"sum by (job) (rate(process_cpu_seconds_total{{{JOB}}}[{RATE}]))", "{{job}}")],
            unit="percentunit",
            width=8,
        )
    )
    d = d.with_panel(
        timeseries_panel(
            "Service resident memory",
            "Resident memory of each service's Python process (not the simulated memory).",
            [Query(f"sum by (job) (process_resident_memory_bytes{{{JOB}}})", "{{job}}")],
            unit="bytes",
            width=8,
        )
    )
    return build(d)
