"""Per-zone active and inactive lists of anonymous pages (2.6's two-list LRU).

Each list is a dict from frame to the page that maps it: insertion order is
age, so the first entry is the oldest, and the value is the reverse map
reclaim needs to find the pte (the process is the one whose pte at that page
maps the frame). Frames mapped by several processes also have an owner list,
(pid, page) packed in one integer each, kept by the MMU core.
"""

from __future__ import annotations

from dataclasses import dataclass, field

OWNER_SHIFT = 40  # vpns of 128 TiB of 4 KiB pages fit in 35 bits


def owner(pid: int, vpn: int) -> int:
    return (pid << OWNER_SHIFT) | vpn


def owner_vpn(value: int) -> int:
    return value & ((1 << OWNER_SHIFT) - 1)


@dataclass
class ZoneLru:
    active: dict[int, int] = field(default_factory=dict)
    inactive: dict[int, int] = field(default_factory=dict)

    def add_active(self, pfn: int, who: int) -> None:
        """lru_cache_add_active: a new anonymous page starts active."""
        self.active[pfn] = who

    def remove(self, pfn: int) -> None:
        if self.active.pop(pfn, None) is None:
            self.inactive.pop(pfn, None)

    def set_owner(self, pfn: int, who: int) -> None:
        if pfn in self.active:
            self.active[pfn] = who
        elif pfn in self.inactive:
            self.inactive[pfn] = who
