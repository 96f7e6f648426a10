"""debugfs extfrag/unusable_index and extfrag/extfrag_index (mm/vmstat.c)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from memsim.procfs.buddyinfo import zone_prefix


def format_milli(value: int) -> str:
    """The kernel's "%d.%03d" of index / 1000, index % 1000, with C's division.

    C truncates towards zero and its remainder keeps the dividend's sign, so
    -1000 prints "-1.000" and -500 (which the formula yields when only blocks
    smaller than the request are free) prints "0.-500", as debugfs does.
    """
    whole = int(value / 1000)
    return f"{whole}.{value - whole * 1000:03d}"


def format_index_file(zones: Iterable[tuple[int, str, Sequence[int]]]) -> str:
    """(node, zone name, index in thousandths by order) per zone."""
    return "".join(
        zone_prefix(node, zone) + "".join(f"{format_milli(v)} " for v in values) + "\n"
        for node, zone, values in zones
    )
