"""Which frames the zone service holds: the pages on its per-CPU lists."""

from __future__ import annotations

from memsim.services.frames import Range, pfn_ranges
from memsim.services.zone.machine import Zone


def pcp_ranges(zone: Zone) -> list[Range]:
    """Every page on the zone's pcp lists (each CPU's hot and cold) as ranges."""
    return pfn_ranges(pfn for lists in zone.pcp for pcp in lists for pfn in pcp.pages)
