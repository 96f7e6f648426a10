"""Zonelists (build_zonelists of 2.6.24): where an allocation may look, in order."""

from __future__ import annotations

from collections.abc import Sequence

ZONELIST_ORDER_NODE = "node"
ZONELIST_ORDER_ZONE = "zone"


def node_order(local: int, distances: Sequence[Sequence[int]]) -> list[int]:
    """find_next_best_node: the local node, then the others nearest first (on a
    tie, a node numbered above the local one goes first)."""
    others = [n for n in range(len(distances)) if n != local]
    return [local, *sorted(others, key=lambda n: (distances[local][n] + (n < local), n))]


def default_zonelist_order(
    present: dict[tuple[int, str], int], nodes: int, zone_types: Sequence[str]
) -> str:
    """default_zonelist_order: by zone type when DMA is small, else by node."""
    if nodes == 1:
        return ZONELIST_ORDER_ZONE
    low_types = set(zone_types[: zone_types.index("Normal")]) if "Normal" in zone_types else set()
    low = sum(p for (_, t), p in present.items() if t in low_types)
    total = sum(present.values())
    if not low or low > total // 2:
        return ZONELIST_ORDER_NODE
    for node in range(nodes):
        node_low = sum(p for (n, t), p in present.items() if n == node and t in low_types)
        node_total = sum(p for (n, _), p in present.items() if n == node)
        if node_low and node_low > node_total * 70 // 100:
            return ZONELIST_ORDER_NODE
    return ZONELIST_ORDER_ZONE


def build_zonelist(
    local: int,
    highest: str,
    zone_types: Sequence[str],
    populated: set[tuple[int, str]],
    distances: Sequence[Sequence[int]],
    order: str,
    this_node_only: bool = False,
) -> list[tuple[int, str]]:
    """(node, zone type) pairs an allocation whose highest zone is `highest` tries."""
    types = list(reversed(zone_types[: zone_types.index(highest) + 1]))
    nodes = [local] if this_node_only else node_order(local, distances)
    if order == ZONELIST_ORDER_NODE:
        pairs = [(n, t) for n in nodes for t in types]
    else:
        pairs = [(n, t) for t in types for n in nodes]
    return [pair for pair in pairs if pair in populated]
