"""A task's cpuset as the page allocator sees it: its mems_allowed, and
cpuset_zone_allowed_softwall / _hardwall of 2.6.24's kernel/cpuset.c.

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
from memsim.services.zone.machine import Zone


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

    def constrains(self, zonelist: Iterable[Zone], gfp_mask: int) -> tuple[int, ...]:
        """constrained_alloc's CONSTRAINT_CPUSET: the nodes the OOM killer is
        told of, () when the cpuset lets the request use the whole zonelist."""
        if self.nodes is None or all(self.softwall(z, gfp_mask) for z in zonelist):
            return ()
        return tuple(sorted(self.nodes))


EVERY_NODE = MemsAllowed(None)
