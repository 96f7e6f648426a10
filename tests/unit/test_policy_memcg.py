"""Memory cgroups as 2.6.25's res_counter keeps them, and the Policy object
that joins the core: panic until reboot."""

from __future__ import annotations

import pytest

from memsim.services.policy.badness import Task
from memsim.services.policy.core import Policy
from memsim.services.policy.errors import (
    BadUncharge,
    BadValue,
    GroupBusy,
    GroupExists,
    NoSuchGroup,
    Panicked,
)
from memsim.services.policy.memcg import RESOURCE_MAX, MemCgroups, memparse, parse_limit
from memsim.services.policy.oom import CONSTRAINT_MEMCG, Kill, OomRequest, Panic
from memsim.services.policy.overcommit import MemState
from memsim.services.policy.sysctl import Sysctls


@pytest.mark.parametrize(
    ("text", "value"),
    [("4096", 4096), ("64M", 64 << 20), ("1g", 1 << 30), ("0x10k", 16 << 10), ("010", 8)],
)
def test_memparse(text: str, value: int) -> None:
    assert memparse(text) == value


@pytest.mark.parametrize("text", ["", "M", "-5", "64MB", "1.5G", "4096 "])
def test_memparse_refuses(text: str) -> None:
    with pytest.raises(BadValue):
        memparse(text)


def test_limits_round_up_to_a_page() -> None:
    assert parse_limit("1000", 4096) == 4096
    assert parse_limit("4097", 4096) == 8192
    assert parse_limit(" 8192\n", 4096) == 8192
    assert parse_limit("-1", 4096) == RESOURCE_MAX
    assert parse_limit("0", 4096) == 0


def test_charges_stop_at_the_limit() -> None:
    cg = MemCgroups()
    group = cg.create("/batch", "40K")  # ten pages
    assert cg.try_charge("/batch", 10).ok
    refused = cg.try_charge("/batch", 1)
    assert (refused.ok, refused.usage_bytes, refused.limit_bytes) == (False, 40960, 40960)
    assert (group.usage_bytes, group.failcnt, group.max_usage_bytes) == (40960, 1, 40960)
    cg.uncharge("/batch", 4)
    assert cg.try_charge("/batch", 4).ok
    with pytest.raises(BadUncharge):
        cg.uncharge("/batch", 11)
    # a lower limit leaves usage above it until charges come back
    cg.set_limit("/batch", "16K")
    assert group.over_limit
    assert cg.limit_pages("/batch") == 4
    # the root group is unlimited
    assert cg.try_charge("/", 10**9).ok


def test_groups_tasks_and_removal() -> None:
    cg = MemCgroups()
    cg.create("/a")
    cg.create("/a/b", "1M")
    with pytest.raises(GroupExists):
        cg.create("/a")
    with pytest.raises(NoSuchGroup):
        cg.create("/x/y")
    for bad in ["a", "/a/", "/a//c", "/a/../b"]:
        with pytest.raises(BadValue):
            cg.create(bad)
    cg.attach(7, "/a/b")
    assert cg.group_of(7) == "/a/b"
    assert cg.group_of(8) == "/"
    with pytest.raises(GroupBusy):
        cg.remove("/a")  # has a subgroup
    with pytest.raises(GroupBusy):
        cg.remove("/a/b")  # has a task
    cg.attach(7, "/a")
    cg.try_charge("/a/b", 1)
    with pytest.raises(GroupBusy):
        cg.remove("/a/b")  # still charged
    cg.uncharge("/a/b", 1)
    cg.remove("/a/b")
    cg.detach(7)
    cg.remove("/a")
    assert list(cg.groups) == ["/"]
    with pytest.raises(GroupBusy):
        cg.remove("/")
    with pytest.raises(NoSuchGroup):
        cg.attach(1, "/gone")


def machine_policy() -> Policy:
    return Policy(Sysctls(min_free_kbytes=1024, lowmem_reserve_ratio=[256], free_kbytes=1 << 20))


TASKS = [Task(1, "init"), Task(2, "hog", uid=1000, total_vm=5000, memcg="/g")]
MEM = MemState(totalram_pages=1000, total_swap_pages=200, nr_free_pages=500)


def test_policy_panics_until_reboot() -> None:
    p = machine_policy()
    p.set_sysctl("vm.panic_on_oom", "1", admin=True)
    p.set_sysctl("vm.overcommit_memory", "2", admin=True)
    assert p.vm_enough_memory(2, 100, MEM, cap_sys_admin=True, total_vm=0).ok
    d = p.out_of_memory(TASKS, OomRequest(current=2))
    assert isinstance(d, Panic)
    msg = "Kernel panic - not syncing: out of memory. panic_on_oom is selected"
    assert p.panic_message == msg
    with pytest.raises(Panicked, match=msg):
        p.set_sysctl("vm.panic_on_oom", "0", admin=True)
    with pytest.raises(Panicked):
        p.vm_enough_memory(2, 1, MEM, cap_sys_admin=True, total_vm=0)
    with pytest.raises(Panicked):
        p.out_of_memory(TASKS, OomRequest(current=2))
    p.reboot()
    assert p.panic_message is None
    assert p.sysctls.panic_on_oom == 0
    assert p.ledger.committed == 0
    assert isinstance(p.out_of_memory(TASKS, OomRequest(current=2)), Kill)


def test_policy_meminfo_and_exit() -> None:
    p = machine_policy()
    p.cgroups.create("/g")
    p.cgroups.attach(2, "/g")
    assert p.vm_enough_memory(2, 100, MEM, cap_sys_admin=False, total_vm=0).ok
    assert p.meminfo(MEM) == ["CommitLimit:      2800 kB", "Committed_AS:      400 kB"]
    p.vm_unacct_memory(2, 40)
    assert p.exit_task(2) == 60
    assert p.cgroups.group_of(2) == "/"
    assert p.meminfo(MEM)[1] == "Committed_AS:        0 kB"
    d = p.out_of_memory(TASKS, OomRequest(CONSTRAINT_MEMCG, current=2, memcg="/g"))
    assert isinstance(d, Kill)
    assert d.victim == 2
