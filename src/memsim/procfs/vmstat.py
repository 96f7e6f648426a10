"""/proc/vmstat: one "name value" line per counter, in the kernel's order."""

from __future__ import annotations

from collections.abc import Iterable


def format_vmstat(items: Iterable[tuple[str, int]]) -> str:
    return "".join(f"{name} {value}\n" for name, value in items)
