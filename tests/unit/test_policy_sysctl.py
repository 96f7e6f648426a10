"""The vm.* sysctls: defaults, the kernel's validation, sysctl(8)'s text and
`sysctl -p`; every refused write leaves every value as it was."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memsim.services.policy.errors import BadValue, NotPermitted, UnknownSysctl
from memsim.services.policy.sysctl import (
    Change,
    Sysctls,
    parse_assignment,
    parse_conf,
)


def fresh() -> Sysctls:
    # 1 GiB of lowmem on x86_32: isqrt(1048576 * 16) = 4096; 512 MiB free at boot
    return Sysctls.for_machine(1 << 20, ["DMA", "Normal", "HighMem"], free_kbytes=512 << 10)


def test_defaults_and_sysctl_a() -> None:
    s = fresh()
    assert s.lines() == [
        "vm.admin_reserve_kbytes = 8192",  # min(512 MiB / 32, 8 MiB)
        "vm.lowmem_reserve_ratio = 256\t32",
        "vm.min_free_kbytes = 4096",
        "vm.oom_dump_tasks = 1",
        "vm.oom_kill_allocating_task = 0",
        "vm.oom_policy = 2.6.24",
        "vm.overcommit_kbytes = 0",
        "vm.overcommit_memory = 0",
        "vm.overcommit_ratio = 50",
        "vm.panic_on_oom = 0",
        "vm.swappiness = 60",
        "vm.user_reserve_kbytes = 16384",  # min(16 MiB, 128 MiB)
    ]
    small = Sysctls(min_free_kbytes=128, lowmem_reserve_ratio=[256], free_kbytes=64 << 10)
    # 3% of 64 MiB: 2048 kB for both
    assert (small.admin_reserve_kbytes, small.user_reserve_kbytes) == (2048, 2048)


def test_get_n_and_names() -> None:
    s = fresh()
    assert s.text("vm.swappiness") == "60"
    assert s.text("vm/swappiness") == "60"
    assert s.line("vm.panic_on_oom") == "vm.panic_on_oom = 0"
    with pytest.raises(UnknownSysctl, match=r"cannot stat /proc/sys/vm/nonesuch"):
        s.get("vm.nonesuch")
    with pytest.raises(UnknownSysctl):
        s.set("kernel.panic", "1", admin=True)


def test_set_returns_what_sysctl_w_prints() -> None:
    s = fresh()
    changes = s.set("vm.swappiness", "10", admin=True)
    assert changes == [Change("vm.swappiness", 10)]
    assert changes[0].line == "vm.swappiness = 10"
    assert s.swappiness == 10


def test_writing_needs_the_admin_credential() -> None:
    s = fresh()
    with pytest.raises(NotPermitted, match=r"permission denied on key 'vm\.swappiness'"):
        s.set("vm.swappiness", "10", admin=False)
    with pytest.raises(NotPermitted):
        s.apply_conf("vm.swappiness = 10\n", admin=False)
    assert s.swappiness == 60


@pytest.mark.parametrize(
    ("name", "good", "bad"),
    [
        ("vm.overcommit_memory", ["0", "1", "2"], ["3", "-1"]),
        ("vm.panic_on_oom", ["0", "1", "2"], ["3", "-1"]),
        ("vm.swappiness", ["0", "100"], ["101", "-1"]),
        ("vm.overcommit_ratio", ["0", "50", "150"], ["-1"]),
        ("vm.min_free_kbytes", ["0", "65536", "1000000"], ["-1"]),
        ("vm.oom_kill_allocating_task", ["0", "1", "-5", "2147483647"], ["2147483648"]),
        ("vm.oom_dump_tasks", ["0", "7", "-2147483648"], ["-2147483649"]),
        ("vm.overcommit_kbytes", ["0", str((1 << 64) - 1)], ["-1", str(1 << 64)]),
        ("vm.admin_reserve_kbytes", ["0", "4096"], ["-4096"]),
        ("vm.user_reserve_kbytes", ["0", "4096"], ["-1"]),
        ("vm.oom_policy", ["modern", " 2.6.24\n"], ["2.6.32", "", "Modern"]),
    ],
)
def test_ranges_as_the_kernel_checks_them(name: str, good: list[str], bad: list[str]) -> None:
    s = fresh()
    for text in good:
        s.set(name, text, admin=True)
    before = s.snapshot()
    for text in bad:
        with pytest.raises(BadValue, match=f'setting key "{name}": Invalid argument'):
            s.set(name, text, admin=True)
    assert s.snapshot() == before


@pytest.mark.parametrize(
    ("text", "value"),
    [("2", 2), ("0x2", 2), ("02", 2), (" 1\n", 1), ("0", 0), ("00", 0), ("0x", None)],
)
def test_numbers_are_read_as_c_reads_them(text: str, value: int | None) -> None:
    s = fresh()
    if value is None:
        with pytest.raises(BadValue):
            s.set("vm.overcommit_memory", text, admin=True)
    else:
        s.set("vm.overcommit_memory", text, admin=True)
        assert s.overcommit_memory == value


@pytest.mark.parametrize("text", ["", "  ", "1 2", "1x", "08", "+1", "one", "1.5", "- 1", "٣"])
def test_malformed_numbers_change_nothing(text: str) -> None:
    s = fresh()
    before = s.snapshot()
    with pytest.raises(BadValue):
        s.set("vm.swappiness", text, admin=True)
    assert s.snapshot() == before
    assert s.generation == 0


def test_lowmem_reserve_ratio_vector() -> None:
    s = Sysctls.for_machine(1 << 20, ["DMA", "DMA32", "Normal", "Movable"], free_kbytes=1 << 20)
    assert s.text("vm.lowmem_reserve_ratio") == "256\t256\t32"
    s.set("vm.lowmem_reserve_ratio", "128 64 16", admin=True)
    assert s.lowmem_reserve_ratio == (128, 64, 16)
    # fewer values write the first ones only
    s.set("vm.lowmem_reserve_ratio", "8", admin=True)
    assert s.lowmem_reserve_ratio == (8, 64, 16)
    # tabs, as the file itself prints them, read back
    s.set("vm.lowmem_reserve_ratio", "256\t256\t32", admin=True)
    assert s.lowmem_reserve_ratio == (256, 256, 32)
    for bad in ["1 2 3 4", "0 1 1", "256 -1 32", ""]:
        with pytest.raises(BadValue):
            s.set("vm.lowmem_reserve_ratio", bad, admin=True)
    assert s.lowmem_reserve_ratio == (256, 256, 32)


def test_overcommit_ratio_and_kbytes_exclude_each_other() -> None:
    s = fresh()
    changes = s.set("vm.overcommit_kbytes", "1048576", admin=True)
    assert [c.line for c in changes] == [
        "vm.overcommit_kbytes = 1048576",
        "vm.overcommit_ratio = 0",
    ]
    assert (s.overcommit_kbytes, s.overcommit_ratio) == (1048576, 0)
    s.set("vm.overcommit_ratio", "80", admin=True)
    assert (s.overcommit_kbytes, s.overcommit_ratio) == (0, 80)


def test_parse_assignment() -> None:
    assert parse_assignment("vm.swappiness=10") == ("vm.swappiness", "10")
    assert parse_assignment(" vm/swappiness = 10 ") == ("vm.swappiness", "10")
    with pytest.raises(BadValue, match="must be of the form name=value"):
        parse_assignment("vm.swappiness")


CONF = """\
# memsim test file
; a comment too

vm.swappiness = 10
   vm.panic_on_oom=1
vm.lowmem_reserve_ratio = 128 32
vm.overcommit_memory =2
"""


def test_sysctl_p() -> None:
    s = fresh()
    changes = s.apply_conf(CONF, admin=True)
    assert [c.line for c in changes] == [
        "vm.swappiness = 10",
        "vm.panic_on_oom = 1",
        "vm.lowmem_reserve_ratio = 128\t32",
        "vm.overcommit_memory = 2",
    ]
    assert s.generation == 1
    assert [e.line for e in parse_conf(CONF)] == [4, 5, 6, 7]


@pytest.mark.parametrize(
    ("line", "error", "message"),
    [
        ("vm.swappiness", BadValue, r"/etc/sysctl.conf\(3\): invalid syntax"),
        ("= 5", BadValue, r"/etc/sysctl.conf\(3\): invalid syntax"),
        ("vm.swappiness =", BadValue, r"/etc/sysctl.conf\(3\): invalid syntax"),
        ("vm.swappiness = 200", BadValue, r"\(3\): sysctl: setting key \"vm.swappiness\""),
        ("vm.swappiness = 10 # no inline comments", BadValue, r"\(3\)"),
        ("vm.nonesuch = 1", UnknownSysctl, r"\(3\): sysctl: cannot stat /proc/sys/vm/nonesuch"),
    ],
)
def test_sysctl_p_errors_name_the_line_and_change_nothing(
    line: str, error: type[Exception], message: str
) -> None:
    s = fresh()
    text = f"vm.panic_on_oom = 2\n\n{line}\nvm.swappiness = 1\n"
    with pytest.raises(error, match=message) as info:
        s.apply_conf(text, admin=True)
    assert getattr(info.value, "line", None) == 3
    assert s.panic_on_oom == 0
    assert s.swappiness == 60
    assert s.generation == 0


def test_sysctl_p_skips_failing_keys_marked_with_a_dash() -> None:
    s = fresh()
    changes = s.apply_conf("-vm.nonesuch = 1\n-vm.swappiness = 500\n-vm.panic_on_oom = 1\n", True)
    assert [c.line for c in changes] == ["vm.panic_on_oom = 1"]


def test_reset_restores_boot_values() -> None:
    s = fresh()
    s.apply_conf(CONF, admin=True)
    s.reset()
    assert s.snapshot() == s.defaults
    assert s.generation == 2


@given(st.text(max_size=12))
def test_any_text_is_a_value_or_a_clean_refusal(text: str) -> None:
    s = fresh()
    before = s.snapshot()
    try:
        s.set("vm.swappiness", text, admin=True)
    except BadValue:
        assert s.snapshot() == before
    else:
        assert 0 <= s.swappiness <= 100
        assert c_number(text.strip()) == s.swappiness


def c_number(word: str) -> int:
    """strtol with base 0, the test's own way."""
    sign = -1 if word.startswith("-") else 1
    body = word.lstrip("-")
    if body[:2] in ("0x", "0X"):
        return sign * int(body[2:], 16)
    return sign * (int(body, 8) if body.startswith("0") else int(body))
