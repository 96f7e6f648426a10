"""Reads a machine profile and lays its zones out in page frames.

A profile names its zones in address order, each ending at a byte boundary
(the last one at the end of memory). Memory is split evenly between the
profile's nodes by address, and each node gets the parts of the zones its
addresses fall in. The options of `memsim up` (--mem, --page-size,
--max-order) override the file's values.
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
    # Spanned pages of every populated zone, by node then address.
    zones: tuple[ZoneSpan, ...]
    # Zone types the kernel is configured with, in the kernel's order.
    zone_types: tuple[str, ...] = ("DMA", "Normal", "HighMem", "Movable")
    nodes: int = 1
    # SLIT distances, distances[from][to].
    distances: tuple[tuple[int, ...], ...] = ((10,),)
    struct_page_bytes: int = 32
    kernel_start: int = 1 << 20
    kernel_reserved: int = 4 << 20
    # The MMU's view: page-table levels (0 without an MMU), bytes per entry,
    # the top of user space and where executables are loaded.
    pt_levels: int = 2
    pte_bytes: int = 4
    task_size: int = 3 << 30
    exe_base: int = 0x08048000
    # The slab allocator's and vmalloc's view (mm/slab.c, mm/vmalloc.c):
    # sizeof(void *) (BYTES_PER_WORD), gcc's __alignof__(unsigned long long)
    # (REDZONE_ALIGN, ARCH_KMALLOC_MINALIGN), L1_CACHE_BYTES, byte order of
    # the red zone words, PAGE_OFFSET (start of the direct map) and the
    # vmalloc range [VMALLOC_START, VMALLOC_END). Defaults: x86_32's.
    arch: str = "i386"
    word_bytes: int = 4
    ull_align: int = 8
    cache_line_bytes: int = 64
    big_endian: bool = False
    page_offset: int = 0xC0000000
    vmalloc_start: int = 0xF8800000
    vmalloc_end: int = 0xFF7FE000

    def cpu_node(self, cpu: int) -> int:
        """CPUs are spread evenly over the nodes, in order."""
        return cpu * self.nodes // self.cpus

    def node_cpus(self, node: int) -> list[int]:
        return [cpu for cpu in range(self.cpus) if self.cpu_node(cpu) == node]

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


def _address(value: Any, what: str) -> int:
    """An address written as a TOML integer or as a string ("0xc0000000")."""
    try:
        return value if isinstance(value, int) else int(str(value), 0)
    except ValueError:
        raise ProfileError(f"{what}: {value!r} is not an address") from None


def _power_of_two(value: int, lo: int, hi: int, what: str) -> int:
    if not lo <= value <= hi or value & (value - 1):
        raise ProfileError(f"{what} {value} is not a power of two in {lo}..{hi}")
    return value


def _vmalloc_range(data: dict[str, Any], page_offset: int, lowmem_bytes: int) -> tuple[int, int]:
    """[VMALLOC_START, VMALLOC_END) of the profile.

    With vmalloc_offset (32-bit x86) the range starts past the direct map as
    include/asm-x86/pgtable_32.h puts it: VMALLOC_START = (high_memory +
    2*VMALLOC_OFFSET - 1) & ~(VMALLOC_OFFSET - 1), so it moves with --mem.
    """
    end = _address(data.get("vmalloc_end", 0), "vmalloc_end")
    if "vmalloc_offset" in data:
        offset = _size(data["vmalloc_offset"], "vmalloc_offset")
        _power_of_two(offset, 1 << 12, 1 << 30, "vmalloc_offset")
        high_memory = page_offset + lowmem_bytes
        start = (high_memory + 2 * offset - 1) & ~(offset - 1)
    else:
        start = _address(data.get("vmalloc_start", 0), "vmalloc_start")
    if start > end:
        raise ProfileError(f"vmalloc range {start:#x}-{end:#x} is empty or reversed")
    return start, end


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
    nodes = int(data.get("nodes", 1))
    cpus = int(data.get("cpus", 1))
    if not 1 <= nodes <= 64 or cpus < nodes:
        raise ProfileError(f"{nodes} nodes with {cpus} CPUs: every node needs a CPU")
    distances = tuple(tuple(int(d) for d in row) for row in data.get("distances", [[10]]))
    if len(distances) != nodes or any(len(row) != nodes for row in distances):
        raise ProfileError(f"distances must be a {nodes}x{nodes} table")
    zone_types = tuple(data.get("zone_types", ("DMA", "Normal", "HighMem", "Movable")))
    zones: list[ZoneSpan] = []
    for node in range(nodes):
        node_start = total_pages * node // nodes
        node_end = total_pages * (node + 1) // nodes
        start = 0
        for zone in data["zones"]:
            if zone["name"] not in zone_types:
                raise ProfileError(f"zone {zone['name']} is not one of {zone_types}")
            end = _size(zone["end"], zone["name"]) // page if "end" in zone else total_pages
            lo, hi = max(start, node_start), min(end, node_end)
            if hi > lo:  # a zone outside this node's addresses is not populated here
                zones.append(ZoneSpan(node, zone["name"], lo, hi - lo))
            start = max(start, end)
    # The direct map ends where the zones the kernel maps permanently end.
    lowmem_pfn = max(
        (z.start_pfn + z.pages for z in zones if z.name not in ("HighMem", "Movable")), default=0
    )
    page_offset = _address(data.get("page_offset", 0xC0000000), "page_offset")
    vmalloc_start, vmalloc_end = _vmalloc_range(data, page_offset, lowmem_pfn * page)
    word_bytes = int(data.get("word_bytes", data.get("pte_bytes", 4)))
    if word_bytes not in (4, 8):
        raise ProfileError(f"word_bytes {word_bytes} is not 4 or 8")
    return MachineProfile(
        name=data["name"],
        description=data.get("description", ""),
        mem_bytes=mem_bytes,
        page_size=page,
        max_order=order,
        cpus=cpus,
        mmu=bool(data.get("mmu", True)),
        zones=tuple(zones),
        zone_types=zone_types,
        nodes=nodes,
        distances=distances,
        struct_page_bytes=int(data.get("struct_page_bytes", 32)),
        kernel_start=_size(data.get("kernel_start", "1M"), "kernel_start"),
        kernel_reserved=_size(data.get("kernel_reserved", "4M"), "kernel_reserved"),
        pt_levels=int(data.get("pt_levels", 2)),
        pte_bytes=int(data.get("pte_bytes", 4)),
        task_size=_size(data.get("task_size", "3G"), "task_size"),
        exe_base=int(data.get("exe_base", 0x08048000)),
        arch=str(data.get("arch", "i386")),
        word_bytes=word_bytes,
        ull_align=_power_of_two(int(data.get("ull_align", 8)), 1, 16, "ull_align"),
        cache_line_bytes=_power_of_two(
            int(data.get("cache_line_bytes", 64)), 8, 512, "cache_line_bytes"
        ),
        big_endian=bool(data.get("big_endian", False)),
        page_offset=page_offset,
        vmalloc_start=vmalloc_start,
        vmalloc_end=vmalloc_end,
    )
