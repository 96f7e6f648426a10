"""Counters and latency percentiles of a load run.

Latencies go into a log-bucketed histogram (as HdrHistogram does): bucket i
holds the latencies in [G**i, G**(i+1)) microseconds with G = 1.01, so a
percentile is exact to within 1 % whatever the number of calls, in memory that
grows with the spread of the latencies, not with the number of calls.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from memsim.clients.load.ops import EXPECTED, OK

GROWTH = 1.01
_LOG_GROWTH = math.log(GROWTH)
PERCENTILES = (50, 90, 99)


class Histogram:
    """Latencies in seconds; percentiles within 1 %."""

    def __init__(self) -> None:
        self.buckets: Counter[int] = Counter()
        self.count = 0
        self.total_s = 0.0
        self.max_s = 0.0
        self.min_s = math.inf

    def add(self, seconds: float) -> None:
        micros = max(seconds * 1e6, 1.0)
        self.buckets[int(math.log(micros) / _LOG_GROWTH)] += 1
        self.count += 1
        self.total_s += seconds
        self.max_s = max(self.max_s, seconds)
        self.min_s = min(self.min_s, seconds)

    def merge(self, other: Histogram) -> None:
        self.buckets.update(other.buckets)
        self.count += other.count
        self.total_s += other.total_s
        self.max_s = max(self.max_s, other.max_s)
        self.min_s = min(self.min_s, other.min_s)

    def percentile(self, p: float) -> float:
        """The latency (seconds) at or below which p % of the calls finished;
        0 with no calls. The bucket's geometric middle, clamped to min..max."""
        if self.count == 0:
            return 0.0
        rank = max(1, math.ceil(self.count * p / 100))
        seen = 0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= rank:
                middle: float = GROWTH ** (index + 0.5) / 1e6
                return min(max(middle, self.min_s), self.max_s)
        return self.max_s

    def summary_ms(self) -> dict[str, float]:
        out = {f"p{p}": round(self.percentile(p) * 1e3, 4) for p in PERCENTILES}
        out["max"] = round(self.max_s * 1e3, 4)
        out["mean"] = round(self.total_s / self.count * 1e3, 4) if self.count else 0.0
        return out


@dataclass
class OpStats:
    calls: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    latency: Histogram = field(default_factory=Histogram)


@dataclass
class Stats:
    """Everything the display and the summary show."""

    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    ops: dict[str, OpStats] = field(default_factory=dict)
    outcomes: Counter[str] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    latency: Histogram = field(default_factory=Histogram)
    calls: int = 0
    replacements: int = 0  # simulated processes that died and were started again
    oom_kills: int = 0  # processes the OOM killer killed during the run (policy's count)
    free_bytes_start: int | None = None
    free_bytes: int | None = None
    last_ok: float = field(default_factory=time.monotonic)
    last_error: str = ""
    divergences: int = 0  # replay: calls whose outcome differs from the trace's

    def add(self, op: str, outcome: str, code: str, latency_s: float, message: str = "") -> None:
        per = self.ops.get(op)
        if per is None:
            per = self.ops[op] = OpStats()
        per.calls += 1
        per.outcomes[outcome] += 1
        per.latency.add(latency_s)
        self.calls += 1
        self.outcomes[outcome] += 1
        self.codes[code] += 1
        self.latency.add(latency_s)
        if outcome == OK:
            self.last_ok = time.monotonic()
        elif outcome not in EXPECTED:
            self.last_error = f"{op}: {code}: {message}" if message else f"{op}: {code}"

    def merge(self, other: Stats) -> None:
        """Adds another client's calls: counts, outcomes, status codes and the
        latency histograms (bucket by bucket, so the percentiles are those of
        all the calls). The clock, free memory and OOM kills stay this one's."""
        for op, theirs in other.ops.items():
            mine = self.ops.get(op)
            if mine is None:
                mine = self.ops[op] = OpStats()
            mine.calls += theirs.calls
            mine.outcomes.update(theirs.outcomes)
            mine.latency.merge(theirs.latency)
        self.outcomes.update(other.outcomes)
        self.codes.update(other.codes)
        self.latency.merge(other.latency)
        self.calls += other.calls
        self.replacements += other.replacements
        self.divergences += other.divergences
        self.last_ok = max(self.last_ok, other.last_ok)
        if other.last_error:
            self.last_error = other.last_error

    def clear_calls(self) -> None:
        """Forgets the calls (what merge adds), keeping the clock and the
        machine's counters."""
        self.ops = {}
        self.outcomes = Counter()
        self.codes = Counter()
        self.latency = Histogram()
        self.calls = 0
        self.replacements = 0
        self.divergences = 0
        self.last_error = ""

    @property
    def unexpected(self) -> int:
        return sum(n for outcome, n in self.outcomes.items() if outcome not in EXPECTED)

    def elapsed_s(self) -> float:
        end = self.ended if self.ended is not None else time.monotonic()
        return max(end - self.started, 1e-9)

    def summary(self, **extra: Any) -> dict[str, Any]:
        """The summary as plain data (what --output writes as JSON)."""
        elapsed = self.elapsed_s()
        return {
            **extra,
            "elapsed_s": round(elapsed, 3),
            "calls": self.calls,
            "throughput_per_s": round(self.calls / elapsed, 2),
            "outcomes": dict(sorted(self.outcomes.items())),
            "status_codes": dict(sorted(self.codes.items())),
            "unexpected_errors": self.unexpected,
            "last_error": self.last_error,
            "latency_ms": self.latency.summary_ms(),
            "replacements": self.replacements,
            "oom_kills": self.oom_kills,
            "free_bytes": {"start": self.free_bytes_start, "end": self.free_bytes},
            "divergences": self.divergences,
            "ops": {
                op: {
                    "calls": s.calls,
                    "outcomes": dict(sorted(s.outcomes.items())),
                    "latency_ms": s.latency.summary_ms(),
                }
                for op, s in sorted(self.ops.items())
            },
        }
