"""What a run shows while it runs: a rich Live table on a terminal, plain
periodic lines otherwise (CI logs), and the summary at the end."""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from memsim.clients.load.stats import Stats
from memsim.profiles.sizes import format_size


def _mib(size: int | None) -> str:
    return "?" if size is None else f"{size / (1 << 20):.1f} MiB"


class Display:
    """Ticked once per interval by the runner; `close` before the summary."""

    def __init__(self, stats: Stats, title: str, *, live: bool, stream: IO[str] | None = None):
        self.stats = stats
        self.title = title
        self.stream = stream or sys.stdout
        self._last_calls = 0
        self._last_time = time.monotonic()
        self.rate = 0.0
        self._live: Live | None = None
        if live:
            self._live = Live(self._table(), console=Console(file=self.stream), auto_refresh=False)
            self._live.start()

    def tick(self) -> None:
        now = time.monotonic()
        calls = self.stats.calls
        self.rate = (calls - self._last_calls) / max(now - self._last_time, 1e-9)
        self._last_calls, self._last_time = calls, now
        if self._live is not None:
            self._live.update(self._table(), refresh=True)
        else:
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def line(self) -> str:
        s = self.stats
        codes = ", ".join(f"{code} {n}" for code, n in sorted(s.codes.items()) if code != "OK")
        lat = s.latency.summary_ms()
        return (
            f"load: {s.elapsed_s():6.1f} s  {s.calls} calls  {self.rate:.0f}/s  "
            f"p50 {lat['p50']:.2f} ms p90 {lat['p90']:.2f} ms p99 {lat['p99']:.2f} ms  "
            f"errors: {codes or 'none'}  free {_mib(s.free_bytes)}  "
            f"OOM kills {s.oom_kills}  replaced {s.replacements}"
        )

    def _table(self) -> Table:
        s = self.stats
        lat = s.latency.summary_ms()
        table = Table(title=self.title, show_header=False)
        table.add_column("what")
        table.add_column("value")
        table.add_row("elapsed", f"{s.elapsed_s():.1f} s")
        table.add_row("calls", f"{s.calls} ({self.rate:.0f}/s)")
        table.add_row(
            "latency", f"p50 {lat['p50']:.2f} ms  p90 {lat['p90']:.2f} ms  p99 {lat['p99']:.2f} ms"
        )
        table.add_row(
            "outcomes", ", ".join(f"{o} {n}" for o, n in sorted(s.outcomes.items())) or "-"
        )
        table.add_row(
            "status codes",
            ", ".join(f"{c} {n}" for c, n in sorted(s.codes.items()) if c != "OK") or "none",
        )
        table.add_row("free memory", _mib(s.free_bytes))
        table.add_row("OOM kills", str(s.oom_kills))
        table.add_row("processes replaced", str(s.replacements))
        return table

    def close(self) -> None:
        if self._live is not None:
            self._live.update(self._table(), refresh=True)
            self._live.stop()
            self._live = None


def render_summary(summary: dict[str, Any]) -> str:
    """The summary as text: totals, then one line per op."""
    lat = summary["latency_ms"]
    lines = [
        f"memsim load: {summary['calls']} calls in {summary['elapsed_s']:.1f} s "
        f"({summary['throughput_per_s']:.0f}/s), stopped by {summary.get('stopped_by', '?')}",
        f"  latency ms: p50 {lat['p50']:.3f}  p90 {lat['p90']:.3f}  p99 {lat['p99']:.3f}  "
        f"max {lat['max']:.3f}",
        "  outcomes: " + ", ".join(f"{k} {v}" for k, v in summary["outcomes"].items()),
        "  status codes: " + ", ".join(f"{k} {v}" for k, v in summary["status_codes"].items()),
        f"  processes replaced: {summary['replacements']}  OOM kills: {summary['oom_kills']}",
    ]
    free = summary["free_bytes"]
    if free["start"] is not None and free["end"] is not None:
        lines.append(
            f"  free memory: {format_size(free['start'])} at start, {format_size(free['end'])} "
            "at end"
        )
    if "divergences" in summary and summary.get("replay"):
        lines.append(f"  replay divergences: {summary['divergences']}")
    lines.append(f"  {'op':14} {'calls':>7} {'p50 ms':>9} {'p99 ms':>9}  outcomes")
    for op, data in summary["ops"].items():
        outcomes = ", ".join(f"{k} {v}" for k, v in data["outcomes"].items())
        lines.append(
            f"  {op:14} {data['calls']:>7} {data['latency_ms']['p50']:>9.3f} "
            f"{data['latency_ms']['p99']:>9.3f}  {outcomes}"
        )
    return "\n".join(lines) + "\n"
