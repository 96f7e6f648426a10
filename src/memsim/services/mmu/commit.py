"""What the MMU's commit accounting reads of the rest of the machine.

2.6.24's __vm_enough_memory reads global counters that other parts of the
kernel keep: nr_free_pages, totalreserve_pages (page_alloc.c) and
NR_SLAB_RECLAIMABLE (the slab). In memsim those belong to the zone and slab
services. The MMU keeps a copy that the service refreshes in the background,
so that the check itself runs locally and costs no call: the kernel too reads
approximate per-CPU counters, so a value a moment old is faithful. Swap, which
the MMU owns, is read live.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from memsim.services.policy.overcommit import CommitCheck
from memsim.services.policy.sysctl import OVERCOMMIT_NEVER
from memsim.services.zone.machine import Machine


@dataclass(frozen=True)
class ZoneReserve:
    """Of one zone, what calculate_totalreserve_pages reads."""

    present_pages: int
    high_pages: int
    lowmem_reserve_pages: Sequence[int]


def totalreserve_pages(zones: Iterable[ZoneReserve]) -> int:
    """calculate_totalreserve_pages: each zone's highest lowmem_reserve plus
    its high watermark, at most its present pages."""
    total = 0
    for zone in zones:
        reserve = max(zone.lowmem_reserve_pages, default=0) + zone.high_pages
        total += min(reserve, zone.present_pages)
    return total


@dataclass
class MemCounters:
    """The zone's and the slab's counters, as last refreshed (pages)."""

    totalram_pages: int
    nr_free_pages: int
    totalreserve_pages: int
    nr_slab_reclaimable: int = 0
    # How many refreshes reached this copy (0: still the boot values).
    refreshes: int = 0

    @classmethod
    def at_boot(cls, machine: Machine) -> MemCounters:
        """Every managed page free, the boot watermarks' reserve, an empty slab."""
        zones = machine.zones.values()
        return cls(
            totalram_pages=sum(z.managed for z in zones),
            nr_free_pages=sum(z.free_pages for z in zones),
            totalreserve_pages=totalreserve_pages(
                ZoneReserve(z.present, z.marks.high, z.lowmem_reserve) for z in zones
            ),
        )

    def update(
        self,
        *,
        nr_free_pages: int | None = None,
        totalreserve_pages: int | None = None,
        nr_slab_reclaimable: int | None = None,
    ) -> None:
        """A refresh: what was read replaces the old value, the rest stays."""
        if nr_free_pages is not None:
            self.nr_free_pages = nr_free_pages
        if totalreserve_pages is not None:
            self.totalreserve_pages = totalreserve_pages
        if nr_slab_reclaimable is not None:
            self.nr_slab_reclaimable = nr_slab_reclaimable
        self.refreshes += 1


def refusal_message(what: str, check: CommitCheck) -> str:
    """Why security_vm_enough_memory said no, in the figures it used."""
    if check.mode == OVERCOMMIT_NEVER:
        detail = (
            f"Committed_AS {check.committed} + {check.pages} >= limit {check.bound}"
            if check.bound is not None
            else check.reason
        )
    else:
        detail = f"{check.reason}: {check.bound} pages could be freed"
    return f"{what}: {check.pages} pages not allowed: {detail} (vm.overcommit_memory={check.mode})"
