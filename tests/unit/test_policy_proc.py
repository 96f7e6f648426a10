"""/proc/PID/oom_score, oom_adj and oom_score_adj: 2.6.24's fs/proc/base.c
and 2.6.36's oom_score_adj, which mirrors oom_adj."""

from __future__ import annotations

import pytest

from memsim.services.policy.badness import Task
from memsim.services.policy.errors import BadValue, NotPermitted
from memsim.services.policy.oom import (
    OomAdjustment,
    TaskTable,
    Writer,
    adj_from_score_adj,
    oom_adjust_read,
    oom_adjust_write,
    oom_score,
    oom_score_adj_read,
    oom_score_adj_write,
    score_adj_from_adj,
)

U = 1000
OWNER = Writer(euid=U)
ROOT = Writer(euid=0)
TASK = Task(10, "t", uid=U, total_vm=1000, rss=100, swap_pages=20, pte_pages=3)


def test_oom_score_as_2_6_24_and_4_19_compute_it() -> None:
    table = TaskTable(
        [
            Task(1, "init", total_vm=500, rss=500),
            Task(
                10,
                "t",
                uid=U,
                total_vm=1000,
                rss=100,
                swap_pages=20,
                pte_pages=3,
                nodes=frozenset({1}),
            ),
            Task(11, "c", uid=U, ppid=10, total_vm=301),
        ]
    )
    assert oom_score(table, 10) == 1151  # 1000 + 301 // 2 + 1
    assert oom_score(table, 10, reader_nodes=frozenset({0})) == 143  # / 8
    assert oom_score(table, 1) == 125  # 2.6.24 scores init too (root: 500 / 4)
    # 4.19: (100 + 20 + 3) * 1000 / totalpages
    assert oom_score(table, 10, policy="modern", totalpages=1000) == 123
    assert oom_score(table, 10, policy="modern", totalpages=10_000) == 12
    assert oom_score(table, 1, policy="modern", totalpages=1000) == 0
    assert oom_score(table, 10, policy="modern", totalpages=1000, reader_nodes=frozenset({0})) == 0
    with pytest.raises(BadValue):
        oom_score(table, 10, policy="modern")


@pytest.mark.parametrize(
    ("text", "adj"),
    [("5", 5), ("5\n", 5), ("15", 15), ("0xf", 15), ("017", 15), ("0", 0), ("000000000000015", 0)],
)
def test_oom_adj_values(text: str, adj: int) -> None:
    assert oom_adjust_write(TASK, text, OWNER).oom_adj == adj


@pytest.mark.parametrize("text", ["16", "-18", "100", "abc", "", "-", "5x", " 5", "+5", "5 6"])
def test_oom_adj_out_of_range_or_malformed(text: str) -> None:
    with pytest.raises(BadValue):
        oom_adjust_write(TASK, text, ROOT)


def test_lowering_oom_adj_needs_cap_sys_resource() -> None:
    with pytest.raises(NotPermitted):
        oom_adjust_write(TASK, "-1", OWNER)
    assert oom_adjust_write(TASK, "-17", ROOT) == OomAdjustment(-17, -1000)
    resourceful = Writer(euid=U, capabilities=frozenset({"CAP_SYS_RESOURCE"}))
    assert oom_adjust_write(TASK, "-16", resourceful) == OomAdjustment(-16, -941)
    raised = Task(10, "t", uid=U, oom_adj=5)
    with pytest.raises(NotPermitted):
        oom_adjust_write(raised, "4", OWNER)
    assert oom_adjust_write(raised, "5", OWNER).oom_adj == 5
    assert oom_adjust_write(raised, "6", OWNER).oom_adj == 6


def test_only_the_owner_or_root_writes() -> None:
    with pytest.raises(NotPermitted):
        oom_adjust_write(TASK, "3", Writer(euid=2000))
    with pytest.raises(NotPermitted):
        oom_score_adj_write(TASK, "3", Writer(euid=2000))


def test_oom_score_adj_writes() -> None:
    assert oom_score_adj_write(TASK, "500", OWNER) == OomAdjustment(7, 500)
    assert oom_score_adj_write(TASK, " 10 \n", OWNER) == OomAdjustment(0, 10)
    assert oom_score_adj_write(TASK, "1000", OWNER) == OomAdjustment(15, 1000)
    assert oom_score_adj_write(TASK, "+0x10", OWNER) == OomAdjustment(0, 16)
    assert oom_score_adj_write(TASK, "-1000", ROOT) == OomAdjustment(-17, -1000)
    assert oom_score_adj_write(TASK, "-500", ROOT) == OomAdjustment(-7, -500)
    with pytest.raises(NotPermitted):
        oom_score_adj_write(TASK, "-1", OWNER)
    for bad in ["1001", "-1001", "abc", "", "5 5", "0x"]:
        with pytest.raises(BadValue):
            oom_score_adj_write(TASK, bad, ROOT)


def test_the_two_scales_mirror_each_other_as_2_6_36() -> None:
    # C division truncates toward zero: -16 * 1000 / 17 = -941.2 -> -941
    assert [score_adj_from_adj(a) for a in (-17, -16, -1, 0, 1, 14, 15)] == [
        -1000,
        -941,
        -58,
        0,
        58,
        823,
        1000,
    ]
    assert [adj_from_score_adj(s) for s in (-1000, -999, -67, 66, 67, 999, 1000)] == [
        -17,
        -14,
        -1,
        0,
        1,
        14,
        15,
    ]


def test_reads() -> None:
    assert oom_adjust_read(Task(10, "t", oom_adj=-17)) == "-17\n"
    assert oom_score_adj_read(Task(10, "t", oom_score_adj=250)) == "250\n"
