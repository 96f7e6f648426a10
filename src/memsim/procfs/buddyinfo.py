"""/proc/buddyinfo (mm/vmstat.c, frag_show_print)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def zone_prefix(node: int, zone: str) -> str:
    # seq_printf(m, "Node %d, zone %8s ", pgdat->node_id, zone->name)
    return f"Node {node}, zone {zone:>8} "


def format_buddyinfo(zones: Iterable[tuple[int, str, Sequence[int]]]) -> str:
    """One line per populated zone: (node, zone name, nr_free by order)."""
    # seq_printf(m, "%6lu ", zone->free_area[order].nr_free) for each order
    return "".join(
        zone_prefix(node, zone) + "".join(f"{n:6d} " for n in nr_free) + "\n"
        for node, zone, nr_free in zones
    )
