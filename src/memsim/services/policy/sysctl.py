"""The vm.* sysctls the policy service owns, validated as the kernel validates
them, and sysctl(8)'s text: `-a`, `-n`, `-w name=value` and `-p FILE`.

Handlers and ranges follow kernel/sysctl.c of 2.6.24 where that kernel had the
sysctl; where 2.6.24 took any integer and a later kernel added a range (e.g.
panic_on_oom and overcommit_memory: proc_dointvec in 2.6.24, 0..2 since
2.6.39), the later range is used, so that a value the code cannot act on is
refused. The modern sysctls (overcommit_kbytes 3.14, admin_reserve_kbytes and
user_reserve_kbytes 3.10) follow Linux 4.19's mm/util.c. vm.oom_policy is
memsim's own: which kernel's OOM killer and commit check the service runs.
Messages are procps-ng sysctl(8)'s.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from memsim.services.policy.errors import BadValue, NotPermitted, UnknownSysctl
from memsim.services.zone.watermarks import default_lowmem_reserve_ratio, default_min_free_kbytes

POLICY_2_6_24 = "2.6.24"
POLICY_MODERN = "modern"
POLICIES = (POLICY_2_6_24, POLICY_MODERN)

# include/linux/mman.h
OVERCOMMIT_GUESS = 0
OVERCOMMIT_ALWAYS = 1
OVERCOMMIT_NEVER = 2

INT_MIN = -(1 << 31)
INT_MAX = (1 << 31) - 1
ULONG_MAX = (1 << 64) - 1

# mm/util.c (3.10): the reserves' caps, in KiB.
ADMIN_RESERVE_CAP_KB = 1 << 13  # 8 MiB
USER_RESERVE_CAP_KB = 1 << 17  # 128 MiB

_SPACE = " \t\n\v\f\r"  # C isspace()

Value = int | tuple[int, ...] | str


@dataclass(frozen=True)
class Spec:
    """One /proc/sys/vm file: what its handler accepts."""

    name: str
    kind: str  # "int" (proc_dointvec[_minmax]), "ulong" (proc_doulongvec_minmax),
    # "intvec" (an int array), "choice" (memsim's string sysctl)
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[str, ...] = ()
    follows: str = ""


SPECS: dict[str, Spec] = {
    s.name: s
    for s in (
        Spec("vm.admin_reserve_kbytes", "ulong", follows="4.19 proc_doulongvec_minmax"),
        Spec(
            "vm.lowmem_reserve_ratio",
            "intvec",
            minimum=1,
            # 2.6.24 divides present pages by each ratio: 0 would oops.
            follows="2.6.24 lowmem_reserve_ratio_sysctl_handler, minimum 1",
        ),
        Spec(
            "vm.min_free_kbytes",
            "int",
            minimum=0,
            follows="2.6.24 min_free_kbytes_sysctl_handler, extra1 = &zero enforced",
        ),
        Spec("vm.oom_dump_tasks", "int", follows="2.6.25 proc_dointvec (non-zero: on)"),
        Spec("vm.oom_kill_allocating_task", "int", follows="2.6.24 proc_dointvec (non-zero: on)"),
        Spec("vm.oom_policy", "choice", choices=POLICIES, follows="memsim"),
        Spec("vm.overcommit_kbytes", "ulong", follows="4.19 overcommit_kbytes_handler"),
        Spec("vm.overcommit_memory", "int", 0, 2, follows="2.6.39 proc_dointvec_minmax 0..2"),
        Spec(
            "vm.overcommit_ratio",
            "int",
            minimum=0,
            # 2.6.24 takes any int; a negative ratio wraps in its unsigned maths.
            follows="2.6.24 proc_dointvec, negative refused",
        ),
        Spec("vm.panic_on_oom", "int", 0, 2, follows="2.6.39 proc_dointvec_minmax 0..2"),
        Spec("vm.swappiness", "int", 0, 100, follows="2.6.24 proc_dointvec_minmax 0..100"),
        Spec("vm.user_reserve_kbytes", "ulong", follows="4.19 proc_doulongvec_minmax"),
    )
}

# Writing one of these zeroes the other (4.19 overcommit_{ratio,kbytes}_handler).
_EXCLUSIVE = {
    "vm.overcommit_ratio": "vm.overcommit_kbytes",
    "vm.overcommit_kbytes": "vm.overcommit_ratio",
}


@dataclass(frozen=True)
class Change:
    """A sysctl written: what watchers are told and what `sysctl -w` prints."""

    name: str
    value: Value

    @property
    def text(self) -> str:
        return value_text(self.value)

    @property
    def line(self) -> str:
        return format_line(self.name, self.text)


def value_text(value: Value) -> str:
    """The file's contents without the newline: proc_dointvec separates the
    elements of a vector with tabs."""
    if isinstance(value, tuple):
        return "\t".join(str(v) for v in value)
    return str(value)


def format_line(name: str, text: str) -> str:
    """One line of `sysctl -a` or `sysctl -w`."""
    return f"{name} = {text}"


def normalize_name(name: str) -> str:
    """sysctl(8) takes vm.x and vm/x alike."""
    return name.strip().replace("/", ".")


def parse_assignment(arg: str) -> tuple[str, str]:
    """`sysctl -w name=value`'s argument."""
    name, eq, value = arg.partition("=")
    if not eq or not name.strip():
        raise BadValue(f'sysctl: "{arg}" must be of the form name=value')
    return normalize_name(name), value.strip()


def strtoul(s: str, pos: int) -> tuple[int, int]:
    """simple_strtoul(s + pos, &end, 0): the value and where it stopped. A
    leading 0 means octal and 0x hexadecimal, as in C."""
    base = 10
    if s[pos] == "0":
        base = 8
        pos += 1
        if pos + 1 < len(s) and s[pos] in "xX" and s[pos + 1] in "0123456789abcdefABCDEF":
            base = 16
            pos += 1
    value = 0
    while pos < len(s):
        digit = int(s[pos], 16) if s[pos] in "0123456789abcdefABCDEF" else base
        if digit >= base:
            break
        value = value * base + digit
        pos += 1
    return value, pos


def parse_ints(text: str, name: str, most: int) -> list[int]:
    """The integers __do_proc_dointvec reads: separated by white space, each
    an optional '-' and a C number (base 0) that white space or the end must
    follow. Unlike the kernel, memsim refuses more values than the file holds
    rather than ignoring them."""
    values: list[int] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos] in _SPACE:
            pos += 1
        if pos == len(text):
            break
        neg = text[pos] == "-" and pos + 1 < len(text)
        if neg:
            pos += 1
        if not text[pos].isdigit() or not text[pos].isascii():
            raise _invalid(name)
        value, pos = strtoul(text, pos)
        if pos < len(text) and text[pos] not in _SPACE:
            raise _invalid(name)
        values.append(-value if neg else value)
    if not values or len(values) > most:
        raise _invalid(name)
    return values


def _invalid(name: str) -> BadValue:
    return BadValue(f'sysctl: setting key "{name}": Invalid argument')


def _unknown(name: str) -> UnknownSysctl:
    path = "/proc/sys/" + name.replace(".", "/")
    return UnknownSysctl(f"sysctl: cannot stat {path}: No such file or directory")


def parse_value(spec: Spec, text: str, current: Value) -> Value:
    """The value a write of `text` leaves in the file, or BadValue."""
    if spec.kind == "choice":
        choice = text.strip()
        if choice not in spec.choices:
            raise _invalid(spec.name)
        return choice
    if spec.kind == "intvec":
        assert isinstance(current, tuple)
        values = parse_ints(text, spec.name, len(current))
        for v in values:
            if not INT_MIN <= v <= INT_MAX or (spec.minimum is not None and v < spec.minimum):
                raise _invalid(spec.name)
        # Fewer values than the array holds write the first ones only.
        return tuple(values) + current[len(values) :]
    (value,) = parse_ints(text, spec.name, 1)
    low, high = (0, ULONG_MAX) if spec.kind == "ulong" else (INT_MIN, INT_MAX)
    if spec.minimum is not None:
        low = max(low, spec.minimum)
    if spec.maximum is not None:
        high = min(high, spec.maximum)
    if not low <= value <= high:
        raise _invalid(spec.name)
    return value


@dataclass(frozen=True)
class ConfEntry:
    """One `key = value` line of a sysctl.conf file."""

    line: int
    name: str
    value: str
    ignore_errors: bool  # a leading '-' on the key: procps skips its failures


def parse_conf(text: str, filename: str = "/etc/sysctl.conf") -> list[ConfEntry]:
    """sysctl.conf as procps reads it: blank lines and lines starting with '#'
    or ';' are skipped; every other line is key = value."""
    entries = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        key, eq, value = line.partition("=")
        key, value = key.strip(), value.strip()
        ignore = key.startswith("-")
        key = key.lstrip("-").strip()
        if not eq or not key or not value:
            raise BadValue(f"sysctl: {filename}({number}): invalid syntax", line=number)
        entries.append(ConfEntry(number, normalize_name(key), value, ignore))
    return entries


class Sysctls:
    """The vm.* values of one machine. Every write is all or nothing: a
    refused write (or a refused line of a -p file) changes no value."""

    def __init__(
        self, *, min_free_kbytes: int, lowmem_reserve_ratio: Sequence[int], free_kbytes: int
    ) -> None:
        """min_free_kbytes and lowmem_reserve_ratio as the zone computes them
        at boot (init_per_zone_pages_min, sysctl_lowmem_reserve_ratio);
        free_kbytes is free memory at boot, from which 3.10's
        init_admin_reserve and init_user_reserve take 1/32."""
        if not lowmem_reserve_ratio:
            raise BadValue("lowmem_reserve_ratio needs one ratio per zone below the highest")
        self.defaults: dict[str, Value] = {
            "vm.admin_reserve_kbytes": min(free_kbytes // 32, ADMIN_RESERVE_CAP_KB),
            "vm.lowmem_reserve_ratio": tuple(lowmem_reserve_ratio),
            "vm.min_free_kbytes": min_free_kbytes,
            # 2.6.25 defaulted to 0; 1 is the issue's and later kernels' default.
            "vm.oom_dump_tasks": 1,
            "vm.oom_kill_allocating_task": 0,
            "vm.oom_policy": POLICY_2_6_24,
            "vm.overcommit_kbytes": 0,
            "vm.overcommit_memory": OVERCOMMIT_GUESS,
            "vm.overcommit_ratio": 50,
            "vm.panic_on_oom": 0,
            "vm.swappiness": 60,
            "vm.user_reserve_kbytes": min(free_kbytes // 32, USER_RESERVE_CAP_KB),
        }
        assert self.defaults.keys() == SPECS.keys()
        self._values = dict(self.defaults)
        # Bumped on every write: a watcher that saw generation g missed nothing
        # if the current one is g.
        self.generation = 0

    @classmethod
    def for_machine(
        cls, lowmem_kbytes: int, zone_types: Sequence[str], free_kbytes: int
    ) -> Sysctls:
        """Defaults by the zone service's 2.6.24 formulas."""
        return cls(
            min_free_kbytes=default_min_free_kbytes(lowmem_kbytes),
            lowmem_reserve_ratio=default_lowmem_reserve_ratio(zone_types),
            free_kbytes=free_kbytes,
        )

    # -- reading ----------------------------------------------------------------

    def names(self) -> list[str]:
        return sorted(self._values)

    def get(self, name: str) -> Value:
        name = normalize_name(name)
        if name not in self._values:
            raise _unknown(name)
        return self._values[name]

    def text(self, name: str) -> str:
        """What `sysctl -n name` prints."""
        return value_text(self.get(name))

    def line(self, name: str) -> str:
        """What `sysctl name` prints."""
        name = normalize_name(name)
        return format_line(name, self.text(name))

    def lines(self) -> list[str]:
        """`sysctl -a` for the vm.* table."""
        return [format_line(n, value_text(self._values[n])) for n in self.names()]

    def snapshot(self) -> dict[str, Value]:
        return dict(self._values)

    def _int(self, name: str) -> int:
        value = self._values[name]
        assert isinstance(value, int)
        return value

    @property
    def overcommit_memory(self) -> int:
        return self._int("vm.overcommit_memory")

    @property
    def overcommit_ratio(self) -> int:
        return self._int("vm.overcommit_ratio")

    @property
    def overcommit_kbytes(self) -> int:
        return self._int("vm.overcommit_kbytes")

    @property
    def admin_reserve_kbytes(self) -> int:
        return self._int("vm.admin_reserve_kbytes")

    @property
    def user_reserve_kbytes(self) -> int:
        return self._int("vm.user_reserve_kbytes")

    @property
    def panic_on_oom(self) -> int:
        return self._int("vm.panic_on_oom")

    @property
    def oom_kill_allocating_task(self) -> bool:
        return self._int("vm.oom_kill_allocating_task") != 0

    @property
    def oom_dump_tasks(self) -> bool:
        return self._int("vm.oom_dump_tasks") != 0

    @property
    def min_free_kbytes(self) -> int:
        return self._int("vm.min_free_kbytes")

    @property
    def swappiness(self) -> int:
        return self._int("vm.swappiness")

    @property
    def lowmem_reserve_ratio(self) -> tuple[int, ...]:
        value = self._values["vm.lowmem_reserve_ratio"]
        assert isinstance(value, tuple)
        return value

    @property
    def oom_policy(self) -> str:
        value = self._values["vm.oom_policy"]
        assert isinstance(value, str)
        return value

    @property
    def modern(self) -> bool:
        return self.oom_policy == POLICY_MODERN

    # -- writing ----------------------------------------------------------------

    def set(self, name: str, value_text: str, admin: bool) -> list[Change]:
        """`sysctl -w name=value`: the files written (a write of
        overcommit_ratio or overcommit_kbytes also zeroes the other)."""
        return self.set_many([(name, value_text)], admin)

    def set_many(self, assignments: Iterable[tuple[str, str]], admin: bool) -> list[Change]:
        """Several writes, in order, all or none."""
        items = list(assignments)
        if not admin:
            name = normalize_name(items[0][0]) if items else "vm"
            raise NotPermitted(f"sysctl: permission denied on key '{name}'")
        shadow = dict(self._values)
        changes: list[Change] = []
        for name, text in items:
            changes += _write(shadow, normalize_name(name), text)
        self._commit(shadow, changes)
        return changes

    def apply_conf(
        self, text: str, admin: bool, filename: str = "/etc/sysctl.conf"
    ) -> list[Change]:
        """`sysctl -p FILE`. All lines or none: the first bad line is raised,
        naming its number, and nothing is written. Keys written with a
        leading '-' that fail (unknown, bad value) are skipped, as procps
        does."""
        if not admin:
            raise NotPermitted(f"sysctl: permission denied on key '{filename}'")
        shadow = dict(self._values)
        changes: list[Change] = []
        for entry in parse_conf(text, filename):
            try:
                changes += _write(shadow, entry.name, entry.value)
            except (UnknownSysctl, BadValue) as e:
                if entry.ignore_errors:
                    continue
                raise type(e)(f"{filename}({entry.line}): {e}", line=entry.line) from None
        self._commit(shadow, changes)
        return changes

    def load_state(self, texts: Mapping[str, str]) -> None:
        """Another copy's values as they are (the policy service's, sent by
        its watch to the services that follow it): parsed, but without a
        write's side effects (overcommit_ratio and overcommit_kbytes zeroing
        each other). Names this copy does not know are left out."""
        shadow = dict(self._values)
        for name, text in texts.items():
            spec = SPECS.get(normalize_name(name))
            if spec is not None:
                shadow[spec.name] = parse_value(spec, text, shadow[spec.name])
        self._values = shadow
        self.generation += 1

    def reset(self) -> None:
        """Boot values again (memsim reboot)."""
        self._values = dict(self.defaults)
        self.generation += 1

    def _commit(self, shadow: dict[str, Value], changes: list[Change]) -> None:
        if changes:
            self._values = shadow
            self.generation += 1


def _write(values: dict[str, Value], name: str, text: str) -> list[Change]:
    """Writes one file into `values`; raises before changing it."""
    spec = SPECS.get(name)
    if spec is None:
        raise _unknown(name)
    value = parse_value(spec, text, values[name])
    values[name] = value
    changes = [Change(name, value)]
    other = _EXCLUSIVE.get(name)
    if other is not None:
        values[other] = 0
        changes.append(Change(other, 0))
    return changes
