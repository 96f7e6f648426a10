"""The runner without a machine: a fake backend that says yes to everything,
to check seeding (same seed, same calls per process), bounds, replay and the
replacement of a killed process."""

from __future__ import annotations

import asyncio
import io
import json
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from memsim.clients.load.machine import MachineInfo
from memsim.clients.load.ops import OPS
from memsim.clients.load.runner import (
    LoadConfig,
    Recorder,
    TraceError,
    read_trace,
    replay,
    run_load,
)
from memsim.clients.load.schema import Mix, load_mix
from memsim.clients.load.stats import Stats
from memsim.clients.process.errors import OutOfMemory, ProcessGone

INFO = MachineInfo(page_size=4096, nommu=False)


class FakeBackend:
    """Every call succeeds after a random-ish delay (so that the interleaving
    of the processes varies); optionally the n-th malloc of a process is
    answered as the OOM killer's victim, or ENOMEM."""

    def __init__(self, kill_every: int = 0, enomem_every: int = 0, jitter: bool = True) -> None:
        self.next = 1
        self.calls: list[str] = []
        self.kill_every = kill_every
        self.enomem_every = enomem_every
        self.jitter = jitter
        self.mallocs = 0

    async def execute(self, op: str, args: dict[str, Any], resolve: Callable[[int], Any]) -> Any:
        for key in ("proc", "at", "obj", "cache"):
            if key in args:
                resolve(args[key])
        if self.jitter:
            await asyncio.sleep(0.0005 * (hash((op, self.next)) % 3))
        self.calls.append(op)
        if op == "malloc":
            self.mallocs += 1
            if self.kill_every and self.mallocs % self.kill_every == 0:
                raise ProcessGone("process was killed by the OOM killer")
            if self.enomem_every and self.mallocs % self.enomem_every == 0:
                raise OutOfMemory("malloc returned NULL")
        self.next += 1
        return self.next


def per_process(trace: str) -> dict[int, list[tuple[str, str]]]:
    out: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for line in trace.splitlines()[1:]:
        item = json.loads(line)
        out[item["p"]].append((item["op"], json.dumps(item["args"], sort_keys=True)))
    return dict(out)


async def record(mix: Mix, seed: int, ops: int, processes: int = 6, **kw: Any) -> tuple[str, Stats]:
    stream = io.StringIO()
    stats = Stats()
    config = LoadConfig(processes=processes, seed=seed, ops=ops, cleanup=False)
    session = await run_load(
        mix, config, FakeBackend(**kw), INFO, stats, recorder=Recorder(stream, {"seed": seed})
    )
    assert session.stopped_by == "ops"
    return stream.getvalue(), stats


async def test_the_same_seed_gives_every_process_the_same_calls() -> None:
    mix = load_mix("default")
    first, stats = await record(mix, 7, 400)
    second, _ = await record(mix, 7, 400)
    a, b = per_process(first), per_process(second)
    # The interleaving (and so how far each process got) varies: compare prefixes.
    for index in a.keys() & b.keys():
        n = min(len(a[index]), len(b[index]))
        assert n > 0
        assert a[index][:n] == b[index][:n], index
    assert stats.calls == 400
    other, _ = await record(mix, 8, 400)
    c = per_process(other)
    assert any(a[i][: len(c[i])] != c[i][: len(a[i])] for i in a.keys() & c.keys())


async def test_every_kind_of_workload_makes_calls_of_its_own() -> None:
    mix = load_mix("default")
    trace, stats = await record(mix, 1, 1500, processes=13)
    ops = {json.loads(line)["op"] for line in trace.splitlines()[1:]}
    assert ops == set(OPS) - {"destroy_cache"}  # destroyed only at the clean-up
    assert stats.outcomes == {"ok": 1500}


async def test_a_killed_process_is_replaced_and_enomem_is_an_outcome() -> None:
    mix = load_mix("steady")
    trace, stats = await record(mix, 3, 300, processes=2, kill_every=15, enomem_every=7)
    assert stats.replacements >= 5
    assert stats.outcomes["killed"] >= 5
    assert stats.outcomes["ENOMEM"] >= 5
    assert stats.unexpected == 0
    spawns = [json.loads(x) for x in trace.splitlines()[1:] if '"op":"spawn"' in x]
    assert len(spawns) == 2 + stats.replacements


async def test_duration_bounds_a_run_and_cleanup_gives_back_everything() -> None:
    stats = Stats()
    backend = FakeBackend()
    config = LoadConfig(processes=4, seed=0, duration_s=0.3, cleanup=True)
    session = await run_load(load_mix("kernel"), config, backend, INFO, stats)
    assert session.stopped_by == "duration"
    assert 0.25 < stats.elapsed_s() < 3
    made = backend.calls.count("kmalloc") + backend.calls.count("cache_alloc")
    freed = backend.calls.count("kfree") + backend.calls.count("cache_free")
    assert made == freed
    assert backend.calls.count("create_cache") == backend.calls.count("destroy_cache")


async def test_replay_plays_the_same_calls_in_the_recorded_order(tmp_path: Path) -> None:
    trace_text, _ = await record(load_mix("default"), 11, 300)
    path = tmp_path / "trace.jsonl"
    path.write_text(trace_text)
    trace = read_trace(path)
    stream = io.StringIO()
    stats = Stats()
    session = await replay(
        trace, FakeBackend(jitter=False), stats, recorder=Recorder(stream, trace.header)
    )
    assert session.stopped_by == "end of trace"
    assert stats.divergences == 0
    again = [json.loads(x) for x in stream.getvalue().splitlines()[1:]]
    first = [json.loads(x) for x in trace_text.splitlines()[1:]]
    assert [(r["p"], r["op"], r["args"], r["ret"]) for r in again] == [
        (r["p"], r["op"], r["args"], r["ret"]) for r in first
    ]


def test_a_bad_trace_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"format": "memsim-load-trace", "version": 1}\n{"seq": 1}\n')
    with pytest.raises(TraceError, match=r"t\.jsonl:2: record without 'p'"):
        read_trace(path)
    path.write_text("hello\n")
    with pytest.raises(TraceError, match=r"t\.jsonl:1: not JSON"):
        read_trace(path)


def test_a_run_needs_a_bound() -> None:
    with pytest.raises(ValueError, match="--ops or --duration"):
        LoadConfig(processes=1)
