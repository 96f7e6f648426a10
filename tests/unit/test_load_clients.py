"""--clients K without a machine: how the processes, --ops and --in-flight are
split, that a share keeps each simulated process's own stream of calls, how
the clients' statistics merge, and that stopped clients leave no process."""

from __future__ import annotations

import asyncio
import io
import multiprocessing
import random
import signal
import time
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from memsim.clients.load.clients import (
    ClientPlan,
    _Child,
    combine_stops,
    merge_stats,
    plan_clients,
    split_budget,
    split_processes,
    stop_children,
    trace_path,
)
from memsim.clients.load.runner import LoadConfig, Recorder, run_load
from memsim.clients.load.schema import load_mix
from memsim.clients.load.stats import Stats
from tests.unit.test_load_runner import INFO, FakeBackend, per_process


def test_processes_split_into_contiguous_blocks_covering_all() -> None:
    assert split_processes(8, 2) == [(0, 1, 2, 3), (4, 5, 6, 7)]
    assert split_processes(7, 3) == [(0, 1), (2, 3), (4, 5, 6)]
    for n in range(1, 30):
        for k in range(1, n + 1):
            blocks = split_processes(n, k)
            assert [i for b in blocks for i in b] == list(range(n))
            sizes = [len(b) for b in blocks]
            assert max(sizes) - min(sizes) <= 1
            assert min(sizes) >= 1
    with pytest.raises(ValueError, match="more than --processes"):
        split_processes(2, 3)
    with pytest.raises(ValueError, match="at least 1"):
        split_processes(2, 0)


def test_a_budget_splits_in_proportion_and_adds_up() -> None:
    assert split_budget(200, [4, 4]) == [100, 100]
    assert split_budget(200, [2, 3, 3]) == [50, 75, 75]
    assert split_budget(10, [1, 1, 1]) == [4, 3, 3]  # the remainder to the lower index
    assert split_budget(2, [1, 2]) == [1, 1]  # each at least 1 when the total allows
    rng = random.Random(0)
    for _ in range(500):
        weights = [rng.randint(1, 9) for _ in range(rng.randint(1, 6))]
        total = rng.randint(len(weights), 10_000)
        shares = split_budget(total, weights)
        assert sum(shares) == total
        assert min(shares) >= 1
        for share, weight in zip(shares, weights, strict=True):
            assert abs(share - total * weight / sum(weights)) < 2
        assert split_budget(total, weights) == shares  # deterministic


def test_the_plan_splits_ops_and_in_flight_by_processes() -> None:
    config = LoadConfig(processes=8, seed=3, ops=200, in_flight=6)
    plans = plan_clients(config, 3)
    assert [p.indices for p in plans] == [(0, 1), (2, 3, 4), (5, 6, 7)]
    assert [p.ops for p in plans] == [50, 75, 75]
    assert [p.in_flight for p in plans] == [2, 2, 2]
    assert [p.client for p in plans] == [0, 1, 2]
    unbounded = plan_clients(LoadConfig(processes=4, duration_s=1.0), 2)
    assert [(p.ops, p.in_flight) for p in unbounded] == [(None, 0), (None, 0)]
    with pytest.raises(ValueError, match="--ops 1 is less than --clients 2"):
        plan_clients(LoadConfig(processes=4, ops=1), 2)
    with pytest.raises(ValueError, match="--in-flight 1 is less than --clients 2"):
        plan_clients(LoadConfig(processes=4, ops=10, in_flight=1), 2)


def test_one_trace_per_client() -> None:
    assert trace_path(Path("/tmp/t.jsonl"), 1) == Path("/tmp/t.jsonl.1")


async def _run_share(indices: list[int] | None, ops: int) -> tuple[str, Stats]:
    stream = io.StringIO()
    stats = Stats()
    config = LoadConfig(processes=6, seed=7, ops=ops, cleanup=False)
    await run_load(
        load_mix("default"),
        config,
        FakeBackend(),
        INFO,
        stats,
        recorder=Recorder(stream, {}),
        indices=indices,
    )
    return stream.getvalue(), stats


async def test_a_share_of_the_processes_keeps_each_process_stream() -> None:
    whole, _ = await _run_share(None, 600)
    parts = [await _run_share(list(block), 300) for block in split_processes(6, 2)]
    alone = per_process(whole)
    split = {**per_process(parts[0][0]), **per_process(parts[1][0])}
    assert set(per_process(parts[0][0])) == {0, 1, 2}
    assert set(per_process(parts[1][0])) == {3, 4, 5}
    assert set(split) == set(alone)
    for index in alone:
        n = min(len(alone[index]), len(split[index]))
        assert n > 0
        assert alone[index][:n] == split[index][:n], index
    assert parts[0][1].calls == parts[1][1].calls == 300


async def test_indices_out_of_range_are_refused() -> None:
    with pytest.raises(ValueError, match="not below 6"):
        await _run_share([6], 10)


def _stats_of(calls: list[tuple[str, str, str, float]]) -> Stats:
    stats = Stats()
    for op, outcome, code, latency in calls:
        stats.add(op, outcome, code, latency, "boom" if outcome == "EINVAL" else "")
    return stats


def test_merged_statistics_are_those_of_all_the_calls() -> None:
    rng = random.Random(5)
    kinds = [("malloc", "ok", "OK"), ("malloc", "ENOMEM", "RESOURCE_EXHAUSTED")]
    kinds += [("touch", "ok", "OK"), ("touch", "EINVAL", "INVALID_ARGUMENT")]
    calls = [(*rng.choice(kinds), rng.lognormvariate(-7, 1.5)) for _ in range(5000)]
    pieces = [calls[:1000], calls[1000:3500], calls[3500:]]
    parts = [_stats_of(piece) for piece in pieces]
    parts[1].replacements = 2
    parts[2].divergences = 1
    merged = merge_stats(parts, Stats())
    alone = _stats_of(calls)
    assert merged.calls == 5000
    assert merged.outcomes == alone.outcomes
    assert merged.codes == alone.codes
    assert merged.replacements == 2
    assert merged.divergences == 1
    assert merged.last_error.startswith("touch: INVALID_ARGUMENT")
    # The histograms merge bucket by bucket: the very percentiles of all calls.
    assert merged.latency.buckets == alone.latency.buckets
    assert merged.latency.summary_ms() == pytest.approx(alone.latency.summary_ms())
    for op in ("malloc", "touch"):
        assert merged.ops[op].calls == alone.ops[op].calls
        assert merged.ops[op].outcomes == alone.ops[op].outcomes
        assert merged.ops[op].latency.summary_ms() == pytest.approx(
            alone.ops[op].latency.summary_ms()
        )
    # Not an average of percentiles: a slow client weighs by its calls.
    fast, slow = Stats(), Stats()
    for _ in range(99):
        fast.add("read", "ok", "OK", 0.001)
    slow.add("read", "ok", "OK", 1.0)
    both = merge_stats([fast, slow], Stats())
    assert both.latency.percentile(50) == pytest.approx(0.001, rel=0.01)
    assert both.latency.percentile(99) == pytest.approx(0.001, rel=0.01)
    assert both.latency.percentile(100) == pytest.approx(1.0)


def test_merging_fresh_snapshots_again_replaces_the_old_ones() -> None:
    target = Stats()
    target.oom_kills = 3
    target.free_bytes = 1 << 20
    first = _stats_of([("kmalloc", "ok", "OK", 0.002)])
    merge_stats([first, first], target)
    assert target.calls == 2
    later = _stats_of([("kmalloc", "ok", "OK", 0.002)] * 5)
    merge_stats([later, first], target)
    assert target.calls == 6
    assert target.ops["kmalloc"].calls == 6
    assert target.oom_kills == 3  # the machine's counters are the parent's
    assert target.free_bytes == 1 << 20


def test_the_run_stops_for_the_weightiest_reason() -> None:
    assert combine_stops(["ops", "ops"]) == "ops"
    assert combine_stops(["ops", "duration"]) == "duration"
    assert combine_stops(["ops", "failing", "stopped"]) == "failing"
    assert combine_stops(["failed", "ops"]) == "failed"
    assert combine_stops([]) == "done"


# -- stopping the clients by pid ------------------------------------------------------------


def _stubborn(conn: Connection) -> None:
    """A client that ignores SIGTERM (stuck in a call, say)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    conn.send(("ready",))
    time.sleep(120)


def _obedient(conn: Connection) -> None:
    conn.send(("ready",))
    time.sleep(120)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


async def test_stopped_clients_leave_no_process() -> None:
    context = multiprocessing.get_context("spawn")
    children = []
    for index, target in enumerate((_stubborn, _obedient)):
        parent_end, child_end = context.Pipe()
        process = context.Process(target=target, args=(child_end,))
        process.start()
        child_end.close()
        children.append(_Child(ClientPlan(index, (index,), None, 0), process, parent_end))
    while not all(c.ready for c in children):
        for child in children:
            child.poll()
        await asyncio.sleep(0.05)
    pids = [c.process.pid for c in children]
    assert all(pid is not None and _alive(pid) for pid in pids)
    started = time.monotonic()
    stop_children(children, grace_s=1.0)
    assert time.monotonic() - started < 10
    assert not any(pid is not None and _alive(pid) for pid in pids)
    assert children[1].process.exitcode == -signal.SIGTERM
    assert children[0].process.exitcode == -signal.SIGKILL
    assert all(c.conn.closed for c in children)
    assert all(c.error for c in children)  # neither reported: both count as failed
