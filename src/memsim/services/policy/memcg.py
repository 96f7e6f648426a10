"""Memory cgroups: limits and charges as 2.6.25's mm/memcontrol.c and
kernel/res_counter.c keep them.

A charge that would take usage past the limit fails (and counts in
failcnt); the service then reclaims inside the group and retries, up to
MEM_CGROUP_RECLAIM_RETRIES times, before it calls the OOM killer with
CONSTRAINT_MEMCG. Groups are named by path ("/", "/batch", "/batch/a");
2.6.25 had no hierarchy: a group's limit covers its own tasks only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from memsim.services.policy.errors import (
    BadUncharge,
    BadValue,
    GroupBusy,
    GroupExists,
    NoSuchGroup,
)
from memsim.services.policy.sysctl import strtoul

ROOT = "/"
# RESOURCE_MAX: the limit of a group nobody limited.
RESOURCE_MAX = (1 << 64) - 1
MEM_CGROUP_RECLAIM_RETRIES = 5


def memparse(text: str) -> int:
    """lib/cmdline.c memparse: a C number (base 0) and an optional K, M or G."""
    if not text or not text[0].isdigit() or not text[0].isascii():
        raise BadValue(f"{text!r}: Invalid argument")
    value, end = strtoul(text, 0)
    rest = text[end:]
    shift = {"": 0, "k": 10, "m": 20, "g": 30}.get(rest.lower())
    if shift is None:
        raise BadValue(f"{text!r}: Invalid argument")
    return value << shift


def parse_limit(text: str, page_size: int) -> int:
    """memory.limit_in_bytes as 2.6.25's mem_cgroup_write_strategy takes it,
    rounded up to a page; "-1" (later kernels' spelling) is unlimited."""
    word = text.strip()
    if word == "-1":
        return RESOURCE_MAX
    value = memparse(word)
    if value >= RESOURCE_MAX:
        return RESOURCE_MAX
    return -(-value // page_size) * page_size


def _check_name(name: str) -> None:
    parts = name.split("/")
    if not name.startswith("/") or (name != ROOT and any(p in ("", ".", "..") for p in parts[1:])):
        raise BadValue(f"bad memory cgroup name {name!r}: want /a/b")


def _parent(name: str) -> str:
    return name.rsplit("/", 1)[0] or ROOT


@dataclass
class MemCgroup:
    """One group's res_counter and its tasks."""

    name: str
    limit_bytes: int = RESOURCE_MAX
    usage_bytes: int = 0
    max_usage_bytes: int = 0
    failcnt: int = 0
    tasks: set[int] = field(default_factory=set)

    @property
    def over_limit(self) -> bool:
        """Usage above the limit (the limit was lowered under it)."""
        return self.usage_bytes > self.limit_bytes


@dataclass(frozen=True)
class Charge:
    """The outcome of res_counter_charge."""

    ok: bool
    group: str
    bytes: int
    usage_bytes: int
    limit_bytes: int


class MemCgroups:
    """Every group of the machine; the root group always exists and is
    unlimited."""

    def __init__(self, page_size: int = 4096) -> None:
        self.page_size = page_size
        self.groups: dict[str, MemCgroup] = {}
        self.task_group: dict[int, str] = {}
        self.reset()

    def reset(self) -> None:
        self.groups = {ROOT: MemCgroup(ROOT)}
        self.task_group = {}

    def get(self, name: str) -> MemCgroup:
        group = self.groups.get(name)
        if group is None:
            raise NoSuchGroup(f"no memory cgroup {name}")
        return group

    def create(self, name: str, limit: str | None = None) -> MemCgroup:
        """mkdir, then an optional write of memory.limit_in_bytes."""
        _check_name(name)
        if name in self.groups:
            raise GroupExists(f"memory cgroup {name} exists")
        if _parent(name) not in self.groups:
            raise NoSuchGroup(f"no memory cgroup {_parent(name)}")
        limit_bytes = RESOURCE_MAX if limit is None else parse_limit(limit, self.page_size)
        group = MemCgroup(name, limit_bytes)
        self.groups[name] = group
        return group

    def remove(self, name: str) -> None:
        """rmdir: refused while the group has tasks, subgroups or charges."""
        group = self.get(name)
        if name == ROOT:
            raise GroupBusy("the root memory cgroup cannot be removed")
        prefix = name + "/"
        if group.tasks or group.usage_bytes or any(g.startswith(prefix) for g in self.groups):
            raise GroupBusy(f"memory cgroup {name} is busy")
        del self.groups[name]

    def set_limit(self, name: str, text: str) -> int:
        """Writes memory.limit_in_bytes; returns the limit in bytes. Usage
        may stay above it until the next charge fails (2.6.25 does not
        reclaim on the write)."""
        group = self.get(name)
        if name == ROOT:
            raise BadValue("the root memory cgroup has no limit")
        group.limit_bytes = parse_limit(text, self.page_size)
        return group.limit_bytes

    def attach(self, pid: int, name: str) -> None:
        """Moves pid into the group; its charges stay where they were made.
        The root group does not list its tasks (see sync_members)."""
        group = self.get(name)
        old = self.task_group.pop(pid, None)
        if old is not None:
            self.groups[old].tasks.discard(pid)
        if name != ROOT:
            group.tasks.add(pid)
            self.task_group[pid] = name

    def sync_members(self, members: Mapping[int, str]) -> None:
        """The membership as the MMU, which keeps it, reported it (pid ->
        group of every live task): forked children join their parent's
        group, the dead leave. Tasks of the root group are not listed (nor
        are those of a group this service no longer knows: it was
        rebooted)."""
        self.task_group = {
            pid: name for pid, name in members.items() if name != ROOT and name in self.groups
        }
        for group in self.groups.values():
            group.tasks = set()
        for pid, name in self.task_group.items():
            self.groups[name].tasks.add(pid)

    def detach(self, pid: int) -> None:
        """The task exited."""
        old = self.task_group.pop(pid, None)
        if old is not None:
            self.groups[old].tasks.discard(pid)

    def group_of(self, pid: int) -> str:
        return self.task_group.get(pid, ROOT)

    def try_charge(self, name: str, pages: int) -> Charge:
        """res_counter_charge of pages: fails (and counts in failcnt) when
        usage + size would pass the limit."""
        group = self.get(name)
        if pages < 0:
            raise BadValue(f"cannot charge {pages} pages")
        size = pages * self.page_size
        if group.usage_bytes + size > group.limit_bytes:
            group.failcnt += 1
            return Charge(False, name, size, group.usage_bytes, group.limit_bytes)
        group.usage_bytes += size
        group.max_usage_bytes = max(group.max_usage_bytes, group.usage_bytes)
        return Charge(True, name, size, group.usage_bytes, group.limit_bytes)

    def uncharge(self, name: str, pages: int) -> None:
        group = self.get(name)
        size = pages * self.page_size
        if pages < 0 or size > group.usage_bytes:
            raise BadUncharge(
                f"memory cgroup {name} holds {group.usage_bytes} bytes, cannot release {size}"
            )
        group.usage_bytes -= size

    def limit_pages(self, name: str) -> int:
        """The limit in pages (the modern killer's totalpages)."""
        return self.get(name).limit_bytes // self.page_size
