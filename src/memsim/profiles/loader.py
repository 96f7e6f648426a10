"""Reads a machine profile and lays its zones out in page frames.

A profile names its zones in address order, each ending at a byte boundary
(the last one at the end of memory). The options of `memsim up` (--mem,
--page-size, --max-order) override the file's values.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from typing import Any

from memsim.profiles.sizes import format_size, parse_size

PAGE_SIZES = (4 << 10, 8 << 10, 16 << 10, 64 << 10)
MIN_MEM = 1 << 20
MAX_MEM = 1 << 50


class ProfileError(ValueError):
    """The profile or an option given with it cannot describe a machine."""


@dataclass(frozen=True)
class ZoneSpan:
    node: int
    name: str
    start_pfn: int
    pages: int


@dataclass(frozen=True)
class MachineProfile:
    name: str
    description: str
    mem_bytes: int
    page_size: int
    max_order: int
    cpus: int
    mmu: bool
    zones: tuple[ZoneSpan, ...]

    @property
    def summary(self) -> str:
        return (
            f"{self.name} ({format_size(self.mem_bytes)}, "
            f"{format_size(self.page_size)} pages, MAX_ORDER {self.max_order})"
        )


def available_profiles() -> list[str]:
    return sorted(
        p.name.removesuffix(".toml")
        for p in resources.files("memsim.profiles").iterdir()
        if p.name.endswith(".toml")
    )


def _read(name: str) -> dict[str, Any]:
    path = resources.files("memsim.profiles") / f"{name}.toml"
    if not path.is_file():
        raise ProfileError(f"no profile {name!r} (profiles: {', '.join(available_profiles())})")
    return tomllib.loads(path.read_text())


def _size(value: Any, what: str) -> int:
    try:
        return parse_size(str(value))
    except ValueError as exc:
        raise ProfileError(f"{what}: {exc}") from None


def load_profile(
    name: str = "x86_32",
    *,
    mem: str | None = None,
    page_size: str | None = None,
    max_order: int | None = None,
) -> MachineProfile:
    data = _read(name)
    mem_bytes = _size(mem or data["mem"], "memory size")
    page = _size(page_size or data["page_size"], "page size")
    order = max_order if max_order is not None else int(data["max_order"])
    if page not in PAGE_SIZES:
        raise ProfileError(
            f"page size {format_size(page)} is not one of "
            f"{', '.join(format_size(p) for p in PAGE_SIZES)}"
        )
    if not MIN_MEM <= mem_bytes <= MAX_MEM:
        raise ProfileError(
            f"memory size {format_size(mem_bytes)} is outside "
            f"{format_size(MIN_MEM)}..{format_size(MAX_MEM)}"
        )
    if not 1 <= order <= 20:
        raise ProfileError(f"MAX_ORDER {order} is outside 1..20")
    total_pages = mem_bytes // page
    zones: list[ZoneSpan] = []
    start = 0
    for zone in data["zones"]:
        end = min(
            total_pages, _size(zone["end"], zone["name"]) // page if "end" in zone else total_pages
        )
        if end > start:  # a zone past the end of memory is simply not populated
            zones.append(ZoneSpan(0, zone["name"], start, end - start))
            start = end
    return MachineProfile(
        name=data["name"],
        description=data.get("description", ""),
        mem_bytes=mem_bytes,
        page_size=page,
        max_order=order,
        cpus=int(data.get("cpus", 1)),
        mmu=bool(data.get("mmu", True)),
        zones=tuple(zones),
    )
