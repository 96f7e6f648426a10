"""What the zone allocator needs from the outside, as protocols: buddy for
blocks, reclaimers for pages back. gRPC clients implement them in production;
in-process fakes in unit tests."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, NamedTuple, Protocol

# enum oom_constraint as the zone tells the OOM killer (the policy service's
# Constraint values): the allocation could use every node; its cpuset held
# it in; its zonelist left out a node with memory (an MPOL_BIND mempolicy).
Constraint = Literal["none", "cpuset", "mempolicy"]
CONSTRAINT_NONE: Constraint = "none"
CONSTRAINT_CPUSET: Constraint = "cpuset"
CONSTRAINT_MEMORY_POLICY: Constraint = "mempolicy"


class BuddyPort(Protocol):
    async def create_arena(
        self, node: int, zone: str, start_pfn: int, pages: int, max_order: int = 0
    ) -> object: ...

    async def alloc_bulk(self, node: int, zone: str, order: int, count: int) -> list[int]: ...

    async def free(self, node: int, zone: str, blocks: Iterable[tuple[int, int]]) -> int: ...

    async def free_bulk(self, node: int, zone: str, order: int, pfns: Iterable[int]) -> int: ...

    async def nr_free(self, node: int, zone: str) -> list[int]: ...


class ShrinkResult(NamedTuple):
    scanned: int
    reclaimed: int
    # The reclaimer's pages of that zone still on its LRU lists (NR_ACTIVE +
    # NR_INACTIVE): how much there is left to scan. None: not reported.
    lru_pages: int | None = None


class ReclaimerPort(Protocol):
    async def shrink_zone(
        self, node: int, zone: str, nr_to_reclaim: int, gfp_mask: int, priority: int, kswapd: bool
    ) -> ShrinkResult:
        """Frees up to nr_to_reclaim pages of the zone."""
        ...

    async def drain_cache(self) -> int:
        """Frees the pages it holds on lists of its own; how many."""
        ...


class OomVerdict(NamedTuple):
    """What the OOM killer did about one failed allocation."""

    # "killed": retry, memory is on its way back; "wait": an earlier victim
    # is still dying, retry; "panic": the machine is halted; "give_up": fail.
    decision: str
    # Every process it killed (they must not be served any more).
    killed: tuple[int, ...] = ()
    message: str = ""


class OomPort(Protocol):
    async def out_of_memory(
        self,
        gfp_mask: int,
        order: int,
        pid: int,
        nodes: tuple[int, ...],
        constraint: Constraint | None = None,
    ) -> OomVerdict:
        """One round of the OOM killer for an allocation that reclaim could
        not serve: pid asked (0: the kernel), restricted to nodes (empty: any).
        constraint: what restricted it (constrained_alloc): "cpuset" (nodes
        are the cpuset's), "mempolicy" (nodes are the MPOL_BIND zonelist's) or
        "none"; None, as callers before mempolicies passed it: "cpuset" when
        nodes leave out some node of the machine, else "none"."""
        ...


class NotConnected:
    """The buddy port before the service has dialled buddy: every call says so."""

    def __getattr__(self, name: str) -> object:
        raise RuntimeError(f"buddy is not connected yet (called {name})")


class PeerZonePort(Protocol):
    """The zone instance of another node, on a machine split by node."""

    async def alloc_from_node(
        self, gfp_mask: int, order: int, count: int, cpu: int, alloc_flags: int, pid: int = 0
    ) -> list[int]:
        """Up to count blocks of 2^order pages from that node's own zones,
        each one pass of get_page_from_freelist with alloc_flags: no reclaim,
        no OOM killer. Fewer (none included) when its zones are below the mark."""
        ...

    async def free(self, blocks: Iterable[tuple[int, int]], cpu: int, cold: bool = False) -> int:
        """Frees blocks that instance handed out; the pages freed."""
        ...
