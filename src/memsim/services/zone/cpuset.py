"""A task's cpuset as the page allocator sees it: its mems_allowed, and
cpuset_zone_allowed_softwall / _hardwall of 2.6.24's kernel/cpuset.c; its
MPOL_BIND mempolicy (bind_zonelist and zonelist_policy of mm/mempolicy.c);
and constrained_alloc of mm/oom_kill.c, which tells the OOM killer which of
the two held the allocation in.

memsim keeps one level of cpusets: a process's nodes, under the top cpuset
(every node, mem_exclusive). So "the nearest mem_exclusive ancestor" that a
softwall check falls back to is the top cpuset: a kernel allocation
(no __GFP_HARDWALL) may leave the process's nodes, a user allocation
(GFP_USER, GFP_HIGHUSER*: __GFP_HARDWALL) may not. in_interrupt() and
TIF_MEMDIE have no counterpart here (a killed process gets no more pages).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from memsim.services.zone import gfp as g
from memsim.services.zone.errors import InvalidRequest
from memsim.services.zone.machine import Machine, Zone
from memsim.services.zone.ports import (
    CONSTRAINT_CPUSET,
    CONSTRAINT_MEMORY_POLICY,
    CONSTRAINT_NONE,
    Constraint,
)


@dataclass(frozen=True)
class MemsAllowed:
    # None: every node of the machine (the top cpuset), nothing is filtered.
    nodes: frozenset[int] | None = None

    @classmethod
    def of(cls, nodes: Iterable[int], machine_nodes: int) -> MemsAllowed:
        """A request's nodes (empty: every node); a node the machine does not
        have is refused."""
        wanted = frozenset(nodes)
        bad = sorted(n for n in wanted if not 0 <= n < machine_nodes)
        if bad:
            raise InvalidRequest(
                f"nodes {bad} are outside 0..{machine_nodes - 1}: "
                f"the machine has {machine_nodes} node(s)"
            )
        if not wanted or wanted == frozenset(range(machine_nodes)):
            return cls(None)
        return cls(wanted)

    def hardwall(self, zone: Zone, gfp_mask: int = g.GFP_KERNEL) -> bool:
        """cpuset_zone_allowed_hardwall: only the cpuset's own nodes."""
        return self.nodes is None or bool(gfp_mask & g.THISNODE) or zone.node in self.nodes

    def softwall(self, zone: Zone, gfp_mask: int) -> bool:
        """cpuset_zone_allowed_softwall: a __GFP_HARDWALL request keeps to
        the cpuset's nodes, any other may use the top cpuset's (every node)."""
        return self.hardwall(zone, gfp_mask) or not gfp_mask & g.HARDWALL


EVERY_NODE = MemsAllowed(None)


def memory_nodes(machine: Machine) -> frozenset[int]:
    """node_states[N_HIGH_MEMORY]: the nodes with a populated zone."""
    return frozenset(z.node for z in machine.zones.values() if z.present)


def policy_zone(machine: Machine) -> int:
    """mempolicy.c's policy_zone: the highest populated zone type other than
    Movable (check_highest_zone, as build_zonelists meets each zone). An
    allocation whose highest zone is below it gets no policy."""
    kinds = [z.type_idx for z in machine.zones.values() if z.present and z.name != g.ZONE_MOVABLE]
    return max(kinds, default=0)


def check_bind_nodes(nodes: Iterable[int], machine: Machine) -> frozenset[int] | None:
    """An allocation's MPOL_BIND nodes (empty: MPOL_DEFAULT, None); a node the
    machine lacks, or one with no memory (mpol_check_policy's
    N_HIGH_MEMORY), is refused."""
    wanted = frozenset(nodes)
    if not wanted:
        return None
    count = machine.profile.nodes
    bad = sorted(n for n in wanted if not 0 <= n < count)
    if bad:
        raise InvalidRequest(
            f"mempolicy nodes {bad} are outside 0..{count - 1}: the machine has {count} node(s)"
        )
    empty = sorted(wanted - memory_nodes(machine))
    if empty:
        raise InvalidRequest(f"mempolicy nodes {empty} have no memory (not in N_HIGH_MEMORY)")
    return wanted


def bind_zonelist(machine: Machine, nodes: Iterable[int], highest: str) -> list[Zone]:
    """bind_zonelist of 2.6.24: the highest zone type of every node of the
    mask (in node order), then the next lower type, and so on; empty zones
    left out. Zones above the request's highest are filtered out as
    get_page_from_freelist filters a policy zonelist
    (alloc_should_filter_zonelist)."""
    types = machine.zone_types[: machine.zone_types.index(highest) + 1]
    zones: list[Zone] = []
    for kind in reversed(types):
        for node in sorted(nodes):
            zone = machine.zones.get((node, kind))
            if zone is not None and zone.present:
                zones.append(zone)
    return zones


def constrained_alloc(
    zonelist: Iterable[Zone],
    gfp_mask: int,
    cpuset: MemsAllowed,
    with_memory: frozenset[int],
) -> tuple[Constraint, tuple[int, ...]]:
    """2.6.24 constrained_alloc, in its order: a zone of the zonelist that
    cpuset_zone_allowed_softwall refuses makes it CONSTRAINT_CPUSET (with the
    cpuset's nodes); else, if the zonelist leaves out a node with memory
    (an MPOL_BIND zonelist; also a __GFP_THISNODE or low-zone one on a NUMA
    machine, as in the kernel), CONSTRAINT_MEMORY_POLICY with the
    zonelist's nodes; else CONSTRAINT_NONE."""
    left = set(with_memory)
    seen: list[int] = []
    for zone in zonelist:
        if not cpuset.softwall(zone, gfp_mask):
            return CONSTRAINT_CPUSET, tuple(sorted(cpuset.nodes or ()))
        left.discard(zone.node)
        seen.append(zone.node)
    if left:
        return CONSTRAINT_MEMORY_POLICY, tuple(sorted(set(seen)))
    return CONSTRAINT_NONE, ()
