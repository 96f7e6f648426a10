"""The policy core in process: how long the OOM killer takes to choose.

10,000 synthetic processes (a few hundred parents with forked children, some
niced, some root, some with oom_adj), the snapshot the service would get from
the MMU; the clock runs over TaskTable (the children index) and
select_bad_process, which is what one OOM costs before anyone is signalled.
The modern policy's selection over the same tasks is reported for context.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable

from bench.report import Report, Result
from memsim.services.policy.badness import OOM_DISABLE, Task
from memsim.services.policy.oom import (
    OomRequest,
    OomSettings,
    TaskTable,
    out_of_memory_modern,
    select_bad_process,
)

TASKS = 10_000
RUNS = 7
GOAL_MS = 50.0
SEED = 7
UPTIME = 200_000  # seconds: run times from 0 to about two days


def synthetic_tasks(count: int, seed: int = SEED) -> list[Task]:
    """init, then processes of which about one in eight forks children."""
    rng = random.Random(seed)
    tasks = [Task(1, "init", total_vm=400, rss=100)]
    parents: list[int] = []
    for pid in range(2, count + 1):
        ppid = rng.choice(parents) if parents and rng.random() < 0.6 else 1
        if rng.random() < 0.125:
            parents.append(pid)
        total_vm = rng.randrange(64, 1 << 18)
        tasks.append(
            Task(
                pid,
                f"proc{pid}",
                uid=0 if rng.random() < 0.1 else 1000 + pid % 50,
                nice=rng.choice((-5, 0, 0, 0, 5, 10)),
                capabilities=frozenset({"CAP_SYS_RAWIO"}) if rng.random() < 0.02 else frozenset(),
                total_vm=total_vm,
                rss=total_vm // rng.randrange(1, 8),
                swap_pages=rng.randrange(0, 256),
                pte_pages=total_vm >> 9,
                cpu_jiffies=rng.randrange(0, 1 << 22),
                start_time=rng.randrange(0, UPTIME),
                nodes=frozenset({pid % 2}) if rng.random() < 0.1 else None,
                oom_adj=OOM_DISABLE if rng.random() < 0.01 else rng.choice((0, 0, 0, -2, 3)),
                ppid=ppid,
            )
        )
    return tasks


def _median_ms(fn: Callable[[], None], runs: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), times


def run(report: Report) -> None:
    print(f"policy core (in process, {TASKS:,} synthetic processes, median of {RUNS} runs)")
    tasks = synthetic_tasks(TASKS)
    current = tasks[len(tasks) // 2]

    def select_2_6_24() -> None:
        table = TaskTable(tasks)
        sel = select_bad_process(table, current, UPTIME)
        assert sel.chosen is not None

    median, times = _median_ms(select_2_6_24, RUNS)
    report.add(
        Result(
            f"policy victim selection, 2.6.24 badness ({TASKS:,} processes)",
            median,
            "ms",
            f"<= {GOAL_MS:g}",
            median <= GOAL_MS,
            detail="TaskTable + select_bad_process; runs: " + ", ".join(f"{t:.1f}" for t in times),
        )
    )

    settings = OomSettings(policy="modern", oom_dump_tasks=False)
    req = OomRequest(current=current.pid, totalpages=1 << 22)

    def select_modern() -> None:
        out_of_memory_modern(TaskTable(tasks), req, settings)

    median, times = _median_ms(select_modern, RUNS)
    report.add(
        Result(
            f"policy victim selection, modern oom_badness ({TASKS:,} processes)",
            median,
            "ms",
            detail="TaskTable + 4.19 out_of_memory, no task dump; runs: "
            + ", ".join(f"{t:.1f}" for t in times),
        )
    )
