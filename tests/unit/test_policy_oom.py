"""The OOM killer: 2.6.24's select_bad_process, oom_kill_process and
out_of_memory (2.6.25's dump_tasks and cgroup OOM), 4.19's for the modern
policy, and the kernel's log lines and panic messages word for word."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from memsim.services.policy.badness import OOM_DISABLE, ULONG_MAX, Task
from memsim.services.policy.errors import BadValue, NoSuchTask
from memsim.services.policy.oom import (
    CONSTRAINT_CPUSET,
    CONSTRAINT_MEMCG,
    CONSTRAINT_MEMORY_POLICY,
    CONSTRAINT_NONE,
    Constraint,
    Decision,
    GiveUp,
    Kill,
    OomRequest,
    OomSettings,
    Panic,
    TaskTable,
    Wait,
    constrained_alloc,
    dump_tasks_2_6_25,
    modern_totalpages,
    nodelist,
    out_of_memory,
    select_bad_process,
)

U = 1000  # a plain user's uid
PANIC = "Kernel panic - not syncing: "


def machine() -> list[Task]:
    """init, a hog, the allocating task and its cgroup mate."""
    return [
        Task(1, "init", uid=0, total_vm=100, rss=50),
        Task(2, "hog", uid=U, total_vm=50_000, rss=40_000),
        Task(3, "alloc", uid=U, total_vm=2_000, rss=1_000, memcg="/grp"),
        Task(4, "grpmate", uid=U, total_vm=8_000, rss=6_000, memcg="/grp"),
    ]


def request(constraint: Constraint, **kw: Any) -> OomRequest:
    totalpages = 10_000 if constraint is CONSTRAINT_MEMCG else 100_000
    req = OomRequest(
        constraint=constraint,
        current=3,
        memcg="/grp" if constraint is CONSTRAINT_MEMCG else None,
        nodemask=frozenset({0}) if constraint is CONSTRAINT_MEMORY_POLICY else None,
        totalpages=totalpages,
    )
    return replace(req, **kw)


def outcome(d: Decision) -> tuple[object, ...]:
    if isinstance(d, Kill):
        return ("kill", d.victim, d.reason)
    if isinstance(d, Panic):
        return ("panic", d.message)
    if isinstance(d, Wait):
        return ("wait", d.pid)
    return ("giveup", d.why)


OOM = "Out of memory"
ALLOC = "Out of memory (oom_kill_allocating_task)"
MPOL = "No available memory (MPOL_BIND)"
MEMCG = "Memory cgroup out of memory"
P1 = ("panic", PANIC + "out of memory. panic_on_oom is selected")
P2 = ("panic", PANIC + "out of memory. Compulsory panic_on_oom is selected.")
P2_MEMCG = ("panic", PANIC + "out of memory(memcg). panic_on_oom is selected.")
M1 = ("panic", PANIC + "Out of memory: system-wide panic_on_oom is enabled")
M2 = ("panic", PANIC + "Out of memory: compulsory panic_on_oom is enabled")

# (panic_on_oom, oom_kill_allocating_task, constraint) -> (2.6.24, modern)
TABLE = {
    (0, 0, CONSTRAINT_NONE): (("kill", 2, OOM), ("kill", 2, OOM)),
    (0, 1, CONSTRAINT_NONE): (("kill", 3, ALLOC), ("kill", 3, ALLOC)),
    (0, 0, CONSTRAINT_CPUSET): (("kill", 2, OOM), ("kill", 2, OOM)),
    (0, 1, CONSTRAINT_CPUSET): (("kill", 3, ALLOC), ("kill", 3, ALLOC)),
    # 2.6.24 kills the allocating task; 4.19 selects among the tasks bound
    # to nodes that intersect the mempolicy's (all of them here).
    (0, 0, CONSTRAINT_MEMORY_POLICY): (("kill", 3, MPOL), ("kill", 2, OOM)),
    (0, 1, CONSTRAINT_MEMORY_POLICY): (("kill", 3, MPOL), ("kill", 3, ALLOC)),
    # a cgroup OOM picks inside the group and ignores oom_kill_allocating_task
    (0, 0, CONSTRAINT_MEMCG): (("kill", 4, MEMCG), ("kill", 4, MEMCG)),
    (0, 1, CONSTRAINT_MEMCG): (("kill", 4, MEMCG), ("kill", 4, MEMCG)),
    # panic_on_oom = 1 panics only when nothing constrained the allocation
    (1, 0, CONSTRAINT_NONE): (P1, M1),
    (1, 1, CONSTRAINT_NONE): (P1, M1),
    (1, 0, CONSTRAINT_CPUSET): (("kill", 2, OOM), ("kill", 2, OOM)),
    (1, 1, CONSTRAINT_CPUSET): (("kill", 3, ALLOC), ("kill", 3, ALLOC)),
    (1, 0, CONSTRAINT_MEMORY_POLICY): (("kill", 3, MPOL), ("kill", 2, OOM)),
    (1, 1, CONSTRAINT_MEMORY_POLICY): (("kill", 3, MPOL), ("kill", 3, ALLOC)),
    (1, 0, CONSTRAINT_MEMCG): (("kill", 4, MEMCG), ("kill", 4, MEMCG)),
    (1, 1, CONSTRAINT_MEMCG): (("kill", 4, MEMCG), ("kill", 4, MEMCG)),
    # panic_on_oom = 2 always panics, a cgroup's OOM too
    (2, 0, CONSTRAINT_NONE): (P2, M2),
    (2, 1, CONSTRAINT_NONE): (P2, M2),
    (2, 0, CONSTRAINT_CPUSET): (P2, M2),
    (2, 1, CONSTRAINT_CPUSET): (P2, M2),
    (2, 0, CONSTRAINT_MEMORY_POLICY): (P2, M2),
    (2, 1, CONSTRAINT_MEMORY_POLICY): (P2, M2),
    (2, 0, CONSTRAINT_MEMCG): (P2_MEMCG, M2),
    (2, 1, CONSTRAINT_MEMCG): (P2_MEMCG, M2),
}


@pytest.mark.parametrize("policy", ["2.6.24", "modern"])
@pytest.mark.parametrize(("panic_on_oom", "kill_allocating", "constraint"), list(TABLE))
def test_decision_table(
    policy: str, panic_on_oom: int, kill_allocating: int, constraint: Constraint
) -> None:
    settings = OomSettings(panic_on_oom, bool(kill_allocating), policy=policy)
    decision = out_of_memory(machine(), request(constraint), settings)
    expected = TABLE[(panic_on_oom, kill_allocating, constraint)][policy == "modern"]
    assert outcome(decision) == expected
    if isinstance(decision, Panic):
        assert decision.log[-1] == decision.message


def test_table_covers_every_combination() -> None:
    assert len(TABLE) == 3 * 2 * 4


# -- select_bad_process (2.6.24) ----------------------------------------------------


def select(tasks: list[Task], current: int | None = None, memcg: str | None = None) -> object:
    table = TaskTable(tasks)
    sel = select_bad_process(table, table.get(current), 0, memcg)
    if sel.wait_for is not None:
        return ("wait", sel.wait_for.pid)
    return None if sel.chosen is None else (sel.chosen.pid, sel.points)


def test_selection_skips_init_tasks_without_mm_and_oom_disable() -> None:
    tasks = [
        Task(1, "init", total_vm=10**6),
        Task(2, "kthread", has_mm=False, total_vm=10**6),
        Task(3, "immortal", uid=U, total_vm=10**6, oom_adj=OOM_DISABLE),
        Task(4, "plain", uid=U, total_vm=10),
    ]
    assert select(tasks) == (4, 10)


def test_selection_keeps_the_earlier_task_on_a_tie() -> None:
    tasks = [Task(5, "a", uid=U, total_vm=100), Task(6, "b", uid=U, total_vm=100)]
    assert select(tasks) == (5, 100)
    assert select([*tasks, Task(7, "c", uid=U, total_vm=101)]) == (7, 101)


def test_selection_takes_the_first_candidate_even_at_zero_points() -> None:
    tasks = [Task(1, "init"), Task(5, "a", uid=U, total_vm=0), Task(6, "b", uid=U, total_vm=0)]
    assert select(tasks) == (5, 0)
    assert select([Task(1, "init")]) is None


def test_selection_waits_for_an_earlier_victim() -> None:
    tasks = [
        Task(5, "big", uid=U, total_vm=10**6),
        Task(6, "dying", uid=U, total_vm=1, memdie=True),
    ]
    assert select(tasks) == ("wait", 6)


def test_selection_waits_for_an_exiting_task_unless_it_is_current() -> None:
    tasks = [
        Task(5, "exiting", uid=U, total_vm=1, exiting=True),
        Task(6, "big", uid=U, total_vm=10**6),
    ]
    assert select(tasks, current=6) == ("wait", 5)
    # current exiting: chosen outright at ULONG_MAX; a bigger task later cannot beat it
    assert select(tasks, current=5) == (5, ULONG_MAX)
    # even with OOM_DISABLE: PF_EXITING is looked at first
    disabled = [replace(tasks[0], oom_adj=OOM_DISABLE), tasks[1]]
    assert select(disabled, current=5) == (5, ULONG_MAX)
    # but the scan goes on, and a dying victim after it still means wait
    assert select([*tasks, Task(7, "d", uid=U, memdie=True)], current=5) == ("wait", 7)


def test_cgroup_selection_looks_only_inside_the_group() -> None:
    assert select(machine(), current=3, memcg="/grp") == (4, 8000)
    assert select(machine(), current=3, memcg="/empty") is None


# -- oom_kill_process (2.6.24) ------------------------------------------------------


def family(*children: Task) -> list[Task]:
    return [Task(1, "init"), Task(10, "parent", uid=U, total_vm=1000), *children]


def kill(tasks: list[Task], **settings: Any) -> Decision:
    s = replace(OomSettings(oom_dump_tasks=False), **settings)
    return out_of_memory(tasks, OomRequest(current=10, gfp_mask=0x201D2), s)


def test_the_first_child_with_its_own_mm_dies_not_the_biggest() -> None:
    small = Task(11, "c1", uid=U, ppid=10, total_vm=10)
    big = Task(12, "c2", uid=U, ppid=10, total_vm=500)
    d = kill(family(small, big))
    assert isinstance(d, Kill)
    # parent: 1000 + (10 // 2 + 1) + (500 // 2 + 1) = 1257; c2 alone is 500
    assert (d.chosen, d.score, d.victim, d.signal) == (10, 1257, 11, True)
    assert d.log == (
        "parent invoked oom-killer: gfp_mask=0x201d2, order=0, oomkilladj=0",
        "Out of memory: kill process 10 (parent) score 1257 or a child",
        "Killed process 11 (c1)",
    )


def test_children_sharing_the_mm_or_oom_disabled_are_passed_over() -> None:
    vforked = Task(11, "v", uid=U, ppid=10, total_vm=1000, mm_id=10)
    immortal = Task(12, "i", uid=U, ppid=10, total_vm=1, oom_adj=OOM_DISABLE)
    mortal = Task(13, "m", uid=U, ppid=10, total_vm=1)
    d = kill(family(vforked, immortal, mortal))
    assert isinstance(d, Kill)
    assert d.victim == 13
    # killing the parent also kills the task sharing its mm
    d = kill(family(vforked, immortal))
    assert isinstance(d, Kill)
    assert (d.victim, d.also_killed) == (10, (11,))
    assert d.log[-1] == "Killed process 10 (parent)"


def test_an_mm_shared_with_an_oom_disabled_task_cannot_be_killed() -> None:
    guard = Task(11, "guard", uid=U, ppid=1, mm_id=10, oom_adj=OOM_DISABLE)
    d = kill(family(guard))
    # the kernel would goto retry and choose the same task for ever
    assert isinstance(d, GiveUp)
    assert "OOM_DISABLE" in d.why


def test_an_exiting_victim_is_only_marked() -> None:
    tasks = family(Task(11, "c", uid=U, ppid=10, total_vm=5))
    tasks[1] = replace(tasks[1], exiting=True)
    d = kill(tasks)
    assert isinstance(d, Kill)
    assert (d.chosen, d.victim, d.score) == (10, 10, -1)
    assert d.log == ("parent invoked oom-killer: gfp_mask=0x201d2, order=0, oomkilladj=0",)


def test_swapoff_score_prints_as_minus_one() -> None:
    tasks = [Task(1, "init"), Task(10, "swapoff", uid=U, total_vm=3, swapoff=True)]
    d = kill(tasks)
    assert isinstance(d, Kill)
    assert d.log[1] == "Out of memory: kill process 10 (swapoff) score -1 or a child"


def test_nothing_killable_panics() -> None:
    tasks = [Task(1, "init"), Task(10, "immortal", uid=U, oom_adj=OOM_DISABLE)]
    d = kill(tasks)
    assert outcome(d) == ("panic", PANIC + "Out of memory and no killable processes...")
    assert isinstance(d, Panic)
    assert d.log == (d.message,)


def test_an_unkillable_allocating_task_kills_nothing_in_2_6_24_only() -> None:
    tasks = [*machine()]
    tasks[2] = replace(tasks[2], oom_adj=OOM_DISABLE)
    req = request(CONSTRAINT_NONE)
    d = out_of_memory(tasks, req, OomSettings(oom_kill_allocating_task=True))
    assert isinstance(d, GiveUp)
    assert "alloc" in d.why
    # 4.19 checks first and falls back to the selection
    tasks[2] = replace(tasks[2], oom_score_adj=-1000)
    d = out_of_memory(tasks, req, OomSettings(oom_kill_allocating_task=True, policy="modern"))
    assert outcome(d) == ("kill", 2, OOM)


def test_allocating_init_under_mpol_bind_is_not_killed() -> None:
    tasks = [Task(1, "init", total_vm=10)]
    req = OomRequest(CONSTRAINT_MEMORY_POLICY, current=1)
    d = out_of_memory(tasks, req, OomSettings(oom_dump_tasks=False))
    assert isinstance(d, GiveUp)
    assert d.log[-1] == "tried to kill init!"


def test_dump_tasks_in_2_6_25_format() -> None:
    tasks = [
        Task(1, "init", total_vm=100, rss=50),
        Task(2, "a-very-long-process-name", uid=U, total_vm=123456, rss=7890, cpu=1, oom_adj=-3),
        Task(3, "kthread", has_mm=False),
    ]
    assert dump_tasks_2_6_25(tasks) == [
        "[ pid ]   uid  tgid total_vm      rss cpu oom_adj name",
        "[    1]     0     1      100       50   0       0 init",
        "[    2]  1000     2   123456     7890   1      -3 a-very-long-pro",
    ]


def test_every_kill_logs_the_dump_when_oom_dump_tasks_is_set() -> None:
    d = out_of_memory(machine(), request(CONSTRAINT_NONE), OomSettings())
    assert isinstance(d, Kill)
    assert d.log[1:6] == (
        "[ pid ]   uid  tgid total_vm      rss cpu oom_adj name",
        "[    1]     0     1      100       50   0       0 init",
        "[    2]  1000     2    50000    40000   0       0 hog",
        "[    3]  1000     3     2000     1000   0       0 alloc",
        "[    4]  1000     4     8000     6000   0       0 grpmate",
    )
    assert d.log[6:] == (
        "Out of memory: kill process 2 (hog) score 50000 or a child",
        "Killed process 2 (hog)",
    )
    # a cgroup's OOM dumps its own tasks only
    d = out_of_memory(machine(), request(CONSTRAINT_MEMCG), OomSettings())
    assert isinstance(d, Kill)
    assert [line.split()[-1] for line in d.log[2:4]] == ["alloc", "grpmate"]
    assert d.log[4] == "Memory cgroup out of memory: kill process 4 (grpmate) score 8000 or a child"


def test_rounds_of_kills_until_the_allocation_fits() -> None:
    """The service's loop: kill, let the victim exit, free its memory, retry."""
    tasks = {
        t.pid: t
        for t in [
            Task(1, "init", total_vm=100, rss=100),
            Task(2, "a", uid=U, total_vm=3000, rss=3000),
            Task(3, "b", uid=U, total_vm=2000, rss=2000),
            Task(4, "c", uid=U, total_vm=1000, rss=1000, nice=10),  # 2000, after b
            Task(5, "d", uid=U, total_vm=500, rss=500),
        ]
    }
    free, need, victims = 0, 5500, []
    settings = OomSettings(oom_dump_tasks=False)
    while free < need:
        d = out_of_memory(tasks.values(), OomRequest(current=5), settings)
        if isinstance(d, Wait):
            # the victim exits: its memory comes back
            free += tasks.pop(d.pid).rss
            continue
        assert isinstance(d, Kill)
        victims.append(d.victim)
        tasks[d.victim] = replace(tasks[d.victim], memdie=True)
    # a (3000) then b (2000, the earlier of the tie with niced c) then c
    assert victims == [2, 3, 4]
    assert free == 6000


def test_unknown_current_and_duplicate_pids() -> None:
    with pytest.raises(NoSuchTask):
        out_of_memory(machine(), OomRequest(current=99), OomSettings())
    with pytest.raises(BadValue):
        TaskTable([Task(5, "a"), Task(5, "b")])
    with pytest.raises(BadValue):
        out_of_memory(machine(), OomRequest(CONSTRAINT_MEMCG, current=3), OomSettings())
    with pytest.raises(BadValue):
        OomSettings(policy="2.4")


# -- 4.19 ----------------------------------------------------------------------


def modern(tasks: list[Task], req: OomRequest, **kw: Any) -> Decision:
    settings = replace(OomSettings(policy="modern", oom_dump_tasks=False), **kw)
    return out_of_memory(tasks, req, settings)


def test_modern_scores_rss_swap_and_page_tables_scaled_to_thousandths() -> None:
    tasks = [
        Task(1, "init", rss=10**6),
        Task(2, "vm-heavy", uid=U, total_vm=10**6, rss=100),
        Task(3, "rss-heavy", uid=U, total_vm=1000, rss=900, swap_pages=50, pte_pages=50),
    ]
    d = modern(tasks, OomRequest(current=2, totalpages=10_000))
    assert isinstance(d, Kill)
    # 1000 points * 1000 / 10_000 pages
    assert (d.victim, d.score) == (3, 100)
    assert d.log == (
        "vm-heavy invoked oom-killer: gfp_mask=0, nodemask=(null), order=0, oom_score_adj=0",
        "Out of memory: Kill process 3 (rss-heavy) score 100 or sacrifice child",
        "Killed process 3 (rss-heavy) total-vm:4000kB, anon-rss:3600kB, file-rss:0kB, "
        "shmem-rss:0kB",
    )


def test_modern_oom_score_adj_and_its_minimum() -> None:
    tasks = [
        Task(1, "init"),
        Task(2, "big", uid=U, rss=5000, oom_score_adj=-1000),
        Task(3, "small", uid=U, rss=100, oom_score_adj=500),  # 100 + 500 * 10
        Task(4, "mid", uid=U, rss=3000),
    ]
    d = modern(tasks, OomRequest(current=4, totalpages=10_000))
    assert isinstance(d, Kill)
    assert (d.victim, d.score) == (3, 510)


def test_modern_sacrifices_the_child_with_the_highest_badness() -> None:
    tasks = [
        Task(1, "init"),
        Task(10, "parent", uid=U, rss=9000),
        Task(11, "c1", uid=U, ppid=10, rss=10),
        Task(12, "c2", uid=U, ppid=10, rss=500),
        Task(13, "c3", uid=U, ppid=10, rss=500),
        Task(14, "c4", uid=U, ppid=10, rss=9999, oom_score_adj=-1000),
    ]
    d = modern(tasks, OomRequest(current=10, totalpages=100_000))
    assert isinstance(d, Kill)
    assert (d.chosen, d.victim) == (10, 12)


def test_modern_waits_panics_or_gives_up() -> None:
    tasks = [Task(1, "init"), Task(2, "a", uid=U, rss=10), Task(3, "dying", uid=U, memdie=True)]
    assert outcome(modern(tasks, OomRequest(current=2, totalpages=1000))) == ("wait", 3)
    lonely = [Task(1, "init"), Task(2, "a", uid=U, rss=10, oom_score_adj=-1000)]
    d = modern(lonely, OomRequest(current=2, totalpages=1000))
    assert outcome(d) == ("panic", PANIC + "System is deadlocked on memory")
    assert isinstance(d, Panic)
    assert "Out of memory and no killable processes..." in d.log
    d = modern(lonely, OomRequest(CONSTRAINT_MEMCG, current=2, memcg="/", totalpages=10))
    assert isinstance(d, GiveUp)


def test_modern_exiting_current_is_marked_without_a_signal() -> None:
    tasks = [Task(1, "init"), Task(2, "big", uid=U, rss=10**5), Task(3, "x", uid=U, exiting=True)]
    d = modern(tasks, OomRequest(current=3, totalpages=1000), panic_on_oom=2)
    assert isinstance(d, Kill)
    assert (d.victim, d.signal, d.log) == (3, False, ())


def test_modern_memcg_includes_subgroups_and_cpuset_excludes_other_nodes() -> None:
    tasks = [
        Task(1, "init"),
        Task(2, "outside", uid=U, rss=10**5),
        Task(3, "sub", uid=U, rss=500, memcg="/grp/sub"),
        Task(4, "grp", uid=U, rss=100, memcg="/grp"),
    ]
    d = modern(tasks, OomRequest(CONSTRAINT_MEMCG, current=4, memcg="/grp", totalpages=1000))
    assert outcome(d) == ("kill", 3, MEMCG)
    numa = [
        Task(1, "init"),
        Task(2, "node1", uid=U, rss=10**5, nodes=frozenset({1})),
        Task(3, "node0", uid=U, rss=10, nodes=frozenset({0})),
    ]
    d = modern(numa, OomRequest(CONSTRAINT_CPUSET, current=3, totalpages=1000))
    assert outcome(d) == ("kill", 3, OOM)


def test_modern_header_and_dump() -> None:
    tasks = [Task(1, "init"), Task(2, "a", uid=U, total_vm=10, rss=5, pte_pages=1)]
    req = OomRequest(CONSTRAINT_MEMORY_POLICY, current=2, nodemask=frozenset({0, 1, 3}))
    d = modern(tasks, replace(req, totalpages=1000), oom_dump_tasks=True)
    assert isinstance(d, Kill)
    assert d.log[:4] == (
        "a invoked oom-killer: gfp_mask=0, nodemask=0-1,3, order=0, oom_score_adj=0",
        "Tasks state (memory values in pages):",
        "[  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name",
        "[      2]  1000     2       10        5     4096        0             0 a",
    )
    with pytest.raises(BadValue):
        modern(tasks, req)  # no totalpages


# -- helpers -------------------------------------------------------------------


def test_constrained_alloc() -> None:
    memory = [0, 1]
    assert constrained_alloc([0, 1], None, memory) is CONSTRAINT_NONE
    assert constrained_alloc([0, 1], frozenset({0}), memory) is CONSTRAINT_CPUSET
    assert constrained_alloc([0], None, memory) is CONSTRAINT_MEMORY_POLICY


def test_modern_totalpages() -> None:
    def total(c: Constraint, nodes: frozenset[int] | None = None, limit: int = 0) -> int:
        return modern_totalpages(
            c,
            totalram_pages=4000,
            total_swap_pages=500,
            node_spanned_pages={0: 1000, 1: 3000},
            nodes=nodes,
            memcg_limit_pages=limit,
        )

    assert total(CONSTRAINT_NONE, frozenset({1})) == 4500
    assert total(CONSTRAINT_CPUSET, frozenset({1})) == 3500
    assert total(CONSTRAINT_MEMORY_POLICY, frozenset({0, 1})) == 4500
    assert total(CONSTRAINT_MEMCG, limit=256) == 256
    assert total(CONSTRAINT_MEMCG) == 1


def test_nodelist() -> None:
    assert nodelist(None) == "(null)"
    assert nodelist(frozenset({0, 1, 2, 4, 6, 7})) == "0-2,4,6-7"
