"""Commit accounting: 2.6.24's __vm_enough_memory in its three modes, 4.19's
reserves, CommitLimit and the Committed_AS ledger, with every boundary worked
out by hand. A 1000-page machine with 200 pages of swap, ratio 50:
CommitLimit = 1000 * 50 / 100 + 200 = 700 pages."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memsim.services.policy.errors import BadUncharge, BadValue
from memsim.services.policy.overcommit import (
    CommitCheck,
    CommitLedger,
    MemState,
    meminfo_lines,
    mmap_is_charged,
    mprotect_is_charged,
    vm_commit_limit,
    vm_enough_memory,
    vm_enough_memory_2_6_24,
    vm_enough_memory_modern,
)
from memsim.services.policy.sysctl import Sysctls

MEM = MemState(
    totalram_pages=1000,
    total_swap_pages=200,
    nr_free_pages=200,
    nr_file_pages=300,
    nr_swap_pages=100,
    nr_slab_reclaimable=50,
    totalreserve_pages=50,
    nr_shmem=20,
)


def old(pages: int, committed: int = 100, *, mode: int, admin: bool, total_vm: int = 0) -> bool:
    return vm_enough_memory_2_6_24(
        pages,
        committed,
        MEM,
        overcommit_memory=mode,
        overcommit_ratio=50,
        cap_sys_admin=admin,
        total_vm=total_vm,
    ).ok


def new(pages: int, committed: int = 100, *, mode: int, admin: bool, total_vm: int = 0) -> bool:
    return vm_enough_memory_modern(
        pages,
        committed,
        MEM,
        overcommit_memory=mode,
        overcommit_ratio=50,
        overcommit_kbytes=0,
        admin_reserve_kbytes=400,  # 100 pages
        user_reserve_kbytes=200,  # 50 pages
        cap_sys_admin=admin,
        total_vm=total_vm,
    ).ok


def test_commit_limit() -> None:
    assert vm_commit_limit(MEM, 50) == 700
    # hugetlb pages are not RAM the ratio applies to
    huge = MemState(totalram_pages=1000, total_swap_pages=200, hugetlb_pages=200)
    assert vm_commit_limit(huge, 50) == 800 * 50 // 100 + 200 == 600
    # overcommit_kbytes replaces the ratio: 1024 kB = 256 pages
    assert vm_commit_limit(MEM, 0, 1024) == 456
    assert meminfo_lines(700, 100, 4096) == [
        "CommitLimit:      2800 kB",
        "Committed_AS:      400 kB",
    ]


def test_mode_2_exact_boundary_for_root() -> None:
    """The kernel charges, then checks Committed_AS < allowed: with allowed
    = CommitLimit (root, total_vm under 32 pages), exactly CommitLimit -
    Committed_AS is one page too many."""
    limit, committed = 700, 100
    assert old(limit - committed - 1, committed, mode=2, admin=True, total_vm=31)
    assert not old(limit - committed, committed, mode=2, admin=True, total_vm=31)


def test_mode_2_boundary_for_a_user() -> None:
    # 500 - 500 // 32 (15) = 485; + 200 swap = 685; - 320 // 32 (10) = 675
    assert old(574, 100, mode=2, admin=False, total_vm=320)
    assert not old(575, 100, mode=2, admin=False, total_vm=320)


def test_mode_2_overcommit_kbytes() -> None:
    check = vm_enough_memory_2_6_24(
        1,
        0,
        MEM,
        overcommit_memory=2,
        overcommit_ratio=0,
        overcommit_kbytes=1024,
        cap_sys_admin=True,
        total_vm=0,
    )
    assert check.bound == 256 + 200


def test_mode_0_for_root() -> None:
    # page cache 300 + free swap 100 + slab 50 = 450: enough on its own below 450
    assert old(449, mode=0, admin=True)
    # then free pages less the reserve: 200 - 50 = 150, 600 in all
    assert old(599, mode=0, admin=True)
    assert not old(600, mode=0, admin=True)


def test_mode_0_for_a_user() -> None:
    # 450 - 450 // 32 (14) = 436
    assert old(435, mode=0, admin=False)
    # 150 - 150 // 32 (4) = 146; 436 + 146 = 582
    assert old(581, mode=0, admin=False)
    assert not old(582, mode=0, admin=False)


def test_mode_0_when_free_pages_are_all_reserved() -> None:
    tight = MemState(
        totalram_pages=1000,
        nr_free_pages=50,
        nr_file_pages=300,
        nr_swap_pages=100,
        nr_slab_reclaimable=50,
        totalreserve_pages=50,
    )

    def check(pages: int) -> CommitCheck:
        return vm_enough_memory_2_6_24(
            pages,
            0,
            tight,
            overcommit_memory=0,
            overcommit_ratio=50,
            cap_sys_admin=True,
            total_vm=0,
        )

    assert check(449).ok
    refused = check(450)
    assert not refused.ok
    assert refused.reason == "free pages all reserved"


def test_mode_1_always() -> None:
    assert old(10**12, 10**12, mode=1, admin=False, total_vm=10**9)


def test_modern_mode_0() -> None:
    # 200 free + 300 file - 20 shmem + 100 swap + 50 slab = 630; - 50 reserve = 580
    assert new(579, mode=0, admin=True)
    assert not new(580, mode=0, admin=True)
    # a user also leaves admin_reserve_kbytes (100 pages)
    assert new(479, mode=0, admin=False)
    assert not new(480, mode=0, admin=False)


def test_modern_mode_2() -> None:
    # 700 - min(3200 // 32, 50 pages of user_reserve_kbytes) = 650
    assert new(549, 100, mode=2, admin=True, total_vm=3200)
    assert not new(550, 100, mode=2, admin=True, total_vm=3200)
    # a user: 650 - 100 pages of admin_reserve_kbytes
    assert new(449, 100, mode=2, admin=False, total_vm=3200)
    assert not new(450, 100, mode=2, admin=False, total_vm=3200)
    # small processes: 700 - 64 // 32 = 698
    assert new(597, 100, mode=2, admin=True, total_vm=64)
    assert not new(598, 100, mode=2, admin=True, total_vm=64)


def sysctls(**values: str) -> Sysctls:
    s = Sysctls(min_free_kbytes=1024, lowmem_reserve_ratio=[256, 32], free_kbytes=3200)
    for name, text in values.items():
        s.set(f"vm.{name}", text, admin=True)
    return s


def test_the_policy_sysctl_chooses_the_formula() -> None:
    s = sysctls(overcommit_memory="2")
    # 2.6.24: the user loses 1/32 of the RAM share: bound 675 as above
    check = vm_enough_memory(1, 0, MEM, s, cap_sys_admin=False, total_vm=320)
    assert check.bound == 675
    # modern: admin_reserve_kbytes = min(3200 / 32, 8 MiB) = 100 kB = 25 pages;
    # user_reserve_kbytes 100 kB too: min(10, 25) = 10; 700 - 25 - 10
    s.set("vm.oom_policy", "modern", admin=True)
    check = vm_enough_memory(1, 0, MEM, s, cap_sys_admin=False, total_vm=320)
    assert check.bound == 665
    with pytest.raises(BadValue):
        vm_enough_memory(-1, 0, MEM, s, cap_sys_admin=False, total_vm=0)


def test_ledger_charges_only_what_it_grants() -> None:
    s = sysctls(overcommit_memory="2")
    ledger = CommitLedger()
    assert ledger.check_and_charge(7, 600, MEM, s, cap_sys_admin=True, total_vm=0).ok
    refused = ledger.check_and_charge(8, 100, MEM, s, cap_sys_admin=True, total_vm=0)
    assert not refused.ok
    assert (ledger.committed, ledger.by_pid) == (600, {7: 600})
    assert ledger.check_and_charge(8, 99, MEM, s, cap_sys_admin=True, total_vm=0).ok
    ledger.uncharge(7, 100)
    with pytest.raises(BadUncharge):
        ledger.uncharge(8, 100)
    assert (ledger.committed, ledger.by_pid) == (599, {7: 500, 8: 99})
    assert ledger.release(7) == 500
    assert ledger.release(7) == 0
    ledger.uncharge(8, 99)
    assert (ledger.committed, ledger.by_pid) == (0, {})


@given(ops=st.lists(st.tuples(st.integers(1, 5), st.integers(0, 300), st.booleans()), max_size=40))
def test_ledger_total_is_the_sum_of_its_holders(ops: list[tuple[int, int, bool]]) -> None:
    s = sysctls(overcommit_memory="2")
    ledger = CommitLedger()
    for pid, pages, release in ops:
        if release:
            ledger.release(pid)
        else:
            ledger.check_and_charge(pid, pages, MEM, s, cap_sys_admin=True, total_vm=0)
        assert ledger.committed == sum(ledger.by_pid.values())
        assert ledger.committed < 700


@given(
    committed=st.integers(0, 2000),
    pages=st.integers(0, 2000),
    admin=st.booleans(),
    total_vm=st.integers(0, 10_000),
)
def test_mode_2_refuses_exactly_past_the_bound(
    committed: int, pages: int, admin: bool, total_vm: int
) -> None:
    ok = old(pages, committed, mode=2, admin=admin, total_vm=total_vm)
    allowed = (500 if admin else 500 - 500 // 32) + 200 - total_vm // 32
    assert ok == (committed + pages < allowed)
    if ok and pages:
        assert old(pages - 1, committed, mode=2, admin=admin, total_vm=total_vm)


@pytest.mark.parametrize(
    ("writable", "shared", "anonymous", "noreserve", "mode", "charged"),
    [
        (True, False, True, False, 0, True),  # private writable
        (False, False, True, False, 0, False),  # private read-only
        (True, False, False, False, 0, True),  # private writable file mapping
        (True, True, True, False, 0, True),  # shared anonymous: shmem
        (True, True, False, False, 0, False),  # shared file
        (True, False, True, True, 0, False),  # MAP_NORESERVE honoured
        (True, False, True, True, 1, False),
        (True, False, True, True, 2, True),  # ... except in mode 2
        (True, True, True, True, 2, True),
    ],
)
def test_which_mappings_are_charged(
    writable: bool, shared: bool, anonymous: bool, noreserve: bool, mode: int, charged: bool
) -> None:
    assert (
        mmap_is_charged(
            writable=writable,
            shared=shared,
            anonymous=anonymous,
            noreserve=noreserve,
            overcommit_memory=mode,
        )
        == charged
    )


def test_mprotect_charges_a_private_mapping_made_writable() -> None:
    def charged(was_writable: bool, shared: bool, accounted: bool, writable: bool) -> bool:
        return mprotect_is_charged(
            was_writable=was_writable, shared=shared, accounted=accounted, writable=writable
        )

    assert charged(False, False, False, True)
    assert not charged(False, False, True, True)  # already charged
    assert not charged(True, False, False, True)  # already writable
    assert not charged(False, True, False, True)  # shared
    assert not charged(False, False, False, False)  # not made writable
