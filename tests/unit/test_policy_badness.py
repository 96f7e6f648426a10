"""2.6.24's badness() one rule at a time, and 4.19's oom_badness(), with the
scores worked out by hand (HZ = 250, SHIFT_HZ = 8: CPU time is jiffies >> 11)."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memsim.services.policy.badness import (
    OOM_DISABLE,
    SHIFT_HZ,
    ULONG_MAX,
    Task,
    badness,
    int_sqrt,
    int_sqrt_kernel,
    oom_badness,
    shift_hz,
)
from memsim.services.policy.errors import BadValue

USER = 1000


def user(total_vm: int = 1000, **kw: Any) -> Task:
    """A plain user's task of total_vm pages, with kw changed."""
    return replace(Task(10, "t", uid=USER, total_vm=total_vm), **kw)


def score(
    task: Task,
    children: list[Task] | None = None,
    uptime: int = 0,
    caller_nodes: frozenset[int] | None = None,
    hz: int = 250,
) -> int:
    return badness(task, children or [], uptime, caller_nodes, hz=hz)


# -- int_sqrt and SHIFT_HZ ----------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "root"), [(0, 0), (1, 1), (3, 1), (4, 2), (15, 3), (16, 4), (ULONG_MAX, (1 << 32) - 1)]
)
def test_int_sqrt_kernel_values(x: int, root: int) -> None:
    assert int_sqrt_kernel(x) == root


@given(st.integers(min_value=0, max_value=ULONG_MAX))
def test_int_sqrt_is_floor_sqrt(x: int) -> None:
    assert int_sqrt_kernel(x) == int_sqrt(x) == math.isqrt(x)


def test_shift_hz_table() -> None:
    assert SHIFT_HZ == shift_hz(250) == 8
    assert [shift_hz(hz) for hz in (100, 191, 192, 300, 383, 384, 1000)] == [7, 7, 8, 8, 8, 9, 10]
    with pytest.raises(BadValue):
        shift_hz(2000)


# -- each rule alone ------------------------------------------------------------


def test_no_mm_scores_zero() -> None:
    assert score(user(5000, has_mm=False)) == 0


def test_total_vm_is_the_basis() -> None:
    assert score(user(1234)) == 1234


def test_children_with_their_own_mm_add_half_plus_one() -> None:
    parent = user(1000, pid=10)
    own = Task(11, "c", uid=USER, ppid=10, total_vm=301)  # 301 // 2 + 1 = 151
    shared = Task(12, "v", uid=USER, ppid=10, total_vm=999, mm_id=10)  # vfork: parent's mm
    gone = Task(13, "z", uid=USER, ppid=10, total_vm=999, has_mm=False)
    assert score(parent, [own]) == 1151
    assert score(parent, [shared, gone]) == 1000
    assert score(parent, [own, own]) == 1302


def test_cpu_time_divides_by_its_square_root() -> None:
    # cpu_time = 8192 >> (8 + 3) = 4; int_sqrt(4) = 2; 1000 / 2
    assert score(user(1000, cpu_jiffies=8192)) == 500
    # 2047 >> 11 = 0: no division
    assert score(user(1000, cpu_jiffies=2047)) == 1000
    # 9 * 2048 >> 11 = 9; int_sqrt = 3; 1000 / 3 = 333
    assert score(user(1000, cpu_jiffies=9 * 2048)) == 333


def test_cpu_time_shift_follows_hz() -> None:
    # HZ 100: SHIFT_HZ 7, 8192 >> 10 = 8, int_sqrt(8) = 2
    assert score(user(1000, cpu_jiffies=8192), hz=100) == 500


def test_run_time_divides_by_its_fourth_root() -> None:
    # (16384 - 0) >> 10 = 16; int_sqrt(int_sqrt(16)) = 2
    assert score(user(1000), uptime=16 * 1024) == 500
    # 15: int_sqrt(15) = 3, int_sqrt(3) = 1
    assert score(user(1000), uptime=15 * 1024) == 1000
    # 81 * 1024 s: int_sqrt(81) = 9, int_sqrt(9) = 3
    assert score(user(1000, start_time=1000), uptime=1000 + 81 * 1024) == 333
    # started "after" uptime: run time 0
    assert score(user(1000, start_time=10**6), uptime=5) == 1000


def test_nice_doubles() -> None:
    assert score(user(1000, nice=1)) == 2000
    assert score(user(1000, nice=0)) == 1000
    assert score(user(1000, nice=-5)) == 1000


@pytest.mark.parametrize(
    "task",
    [
        Task(10, "r", uid=0, total_vm=1000),
        Task(10, "e", uid=USER, euid=0, total_vm=1000),
        Task(10, "a", uid=USER, capabilities=frozenset({"CAP_SYS_ADMIN"}), total_vm=1000),
        # all three at once still divide once
        Task(10, "x", uid=0, euid=0, capabilities=frozenset({"CAP_SYS_ADMIN"}), total_vm=1000),
    ],
)
def test_superuser_divides_by_four_once(task: Task) -> None:
    assert score(task) == 250


def test_rawio_divides_by_four_and_stacks_with_root() -> None:
    rawio = frozenset({"CAP_SYS_RAWIO"})
    assert score(user(1000, capabilities=rawio)) == 250
    assert score(Task(10, "r", uid=0, capabilities=rawio, total_vm=1000)) == 62  # 1000/4/4


def test_nodes_that_do_not_intersect_divide_by_eight() -> None:
    t = user(1000, nodes=frozenset({1}))
    assert score(t, caller_nodes=frozenset({0})) == 125
    assert score(t, caller_nodes=frozenset({0, 1})) == 1000
    assert score(t, caller_nodes=None) == 1000
    assert score(user(1000), caller_nodes=frozenset({0})) == 1000


def test_oom_adj_shifts_last() -> None:
    assert score(user(1000, oom_adj=3)) == 8000
    assert score(user(1000, oom_adj=-2)) == 250
    assert score(user(1000, oom_adj=OOM_DISABLE)) == 1000 >> 17 == 0
    # a positive adj makes 0 into 1 first
    assert score(user(0, oom_adj=4)) == 16
    assert score(user(0, oom_adj=-4)) == 0
    # unsigned long: the shift wraps
    assert score(user(1 << 60, oom_adj=15)) == ((1 << 75) & ULONG_MAX)


def test_swapoff_scores_ulong_max() -> None:
    assert score(user(1, swapoff=True, oom_adj=-16)) == ULONG_MAX


def test_truncation_order_seven_pages_niced_root() -> None:
    # (7 * 2) / 4 = 3, where 7 / 4 * 2 would be 2
    assert score(Task(10, "r", uid=0, nice=5, total_vm=7)) == 3


def test_all_rules_in_the_kernels_order() -> None:
    child = Task(11, "c", uid=USER, ppid=10, total_vm=1)  # + 1 // 2 + 1 = 1
    t = Task(
        10,
        "all",
        uid=0,
        nice=3,
        capabilities=frozenset({"CAP_SYS_RAWIO"}),
        total_vm=1000,
        cpu_jiffies=4 * 2048,
        start_time=0,
        nodes=frozenset({1}),
        oom_adj=2,
    )
    # 1001 / 2 (cpu) = 500; / 2 (run 16) = 250; * 2 = 500; / 4 = 125; / 4 = 31;
    # / 8 = 3; << 2 = 12
    assert badness(t, [child], 16 * 1024, frozenset({0})) == 12


# -- 4.19 oom_badness --------------------------------------------------------------


def test_oom_badness_counts_rss_swap_and_page_tables() -> None:
    t = Task(10, "m", uid=USER, rss=100, swap_pages=20, pte_pages=3, total_vm=10**6)
    assert oom_badness(t, 10_000) == 123


def test_oom_badness_adj_is_thousandths_of_totalpages() -> None:
    base = Task(10, "m", uid=USER, rss=100, swap_pages=20, pte_pages=3)
    # 10_000 // 1000 = 10 pages per unit
    assert oom_badness(replace(base, oom_score_adj=500), 10_000) == 5123
    # below zero: still 1 for an eligible task
    assert oom_badness(replace(base, oom_score_adj=-500), 10_000) == 1
    # totalpages under 1000: the adjustment is worth nothing
    assert oom_badness(replace(base, oom_score_adj=999), 999) == 123


def test_oom_badness_no_root_bonus_and_ineligible_tasks() -> None:
    root = Task(10, "r", uid=0, capabilities=frozenset({"CAP_SYS_ADMIN"}), rss=100)
    assert oom_badness(root, 10_000) == 100
    assert oom_badness(Task(1, "init", rss=100), 10_000) == 0
    assert oom_badness(Task(10, "k", has_mm=False, rss=100), 10_000) == 0
    assert oom_badness(Task(10, "d", rss=100, oom_score_adj=-1000), 10_000) == 0
    assert oom_badness(Task(10, "z", rss=0), 10_000) == 1


@given(
    total_vm=st.integers(min_value=0, max_value=1 << 40),
    nice=st.integers(min_value=-20, max_value=19),
    uid=st.sampled_from([0, USER]),
    adj=st.integers(min_value=-16, max_value=0),
)
def test_badness_never_exceeds_double_the_size_without_a_positive_adj(
    total_vm: int, nice: int, uid: int, adj: int
) -> None:
    t = Task(10, "h", uid=uid, nice=nice, total_vm=total_vm, oom_adj=adj)
    assert 0 <= badness(t, [], 0) <= 2 * total_vm
