"""The buddy service's domain: every arena of the machine, by (node, zone)."""

from __future__ import annotations

from memsim.services.buddy.arena import Arena, ArenaSpec
from memsim.services.buddy.audit import AuditReport, audit_arena
from memsim.services.buddy.errors import (
    ArenaConflict,
    ArenaExists,
    ArenaNotFound,
    InvalidRequest,
)

# 2^MAX_ORDER pages must still be addressable; 2.6 configs go up to about 18
# (ARCH_FORCE_MAX_ORDER on large-page machines).
MAX_ORDER_LIMIT = 20
# 2^52 pages of 4 KiB is 16 EiB: far beyond any profile, small enough for uint64.
MAX_PFN = 1 << 52


class BuddyAllocator:
    def __init__(self) -> None:
        self.arenas: dict[tuple[int, str], Arena] = {}

    def create_arena(self, spec: ArenaSpec) -> Arena:
        if not spec.zone:
            raise InvalidRequest("the zone name is empty")
        if spec.node < 0:
            raise InvalidRequest(f"node {spec.node} is negative")
        if spec.pages <= 0:
            raise InvalidRequest(f"an arena needs at least one page, not {spec.pages}")
        if spec.start_pfn < 0 or spec.end_pfn > MAX_PFN:
            raise InvalidRequest(
                f"pfns [{spec.start_pfn}, {spec.end_pfn}) are outside [0, {MAX_PFN})"
            )
        if not 1 <= spec.max_order <= MAX_ORDER_LIMIT:
            raise InvalidRequest(f"MAX_ORDER {spec.max_order} is outside 1..{MAX_ORDER_LIMIT}")
        key = (spec.node, spec.zone)
        if key in self.arenas:
            raise ArenaExists(f"{spec.name} already has an arena")
        for other in self.arenas.values():
            o = other.spec
            if spec.start_pfn < o.end_pfn and o.start_pfn < spec.end_pfn:
                raise ArenaConflict(
                    f"pfns [{spec.start_pfn}, {spec.end_pfn}) overlap {o.name} "
                    f"[{o.start_pfn}, {o.end_pfn})"
                )
        arena = Arena(spec)
        self.arenas[key] = arena
        return arena

    def arena(self, node: int, zone: str) -> Arena:
        try:
            return self.arenas[(node, zone)]
        except KeyError:
            known = ", ".join(a.spec.name for a in self.arenas.values()) or "none"
            raise ArenaNotFound(
                f"no arena for node {node} zone {zone!r} (arenas: {known})"
            ) from None

    def select(self, node: int | None, zone: str | None) -> list[Arena]:
        """One arena when named, else all of them in (node, start pfn) order."""
        if zone is not None and node is not None:
            return [self.arena(node, zone)]
        return sorted(self.arenas.values(), key=lambda a: (a.spec.node, a.spec.start_pfn))

    def audit(self) -> list[AuditReport]:
        return [audit_arena(a) for a in self.select(None, None)]
