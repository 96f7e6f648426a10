"""vmalloc and vfree: mm/vmalloc.c and fs/proc/mmu.c of 2.6.24.

An area is page-aligned virtual space in [VMALLOC_START, VMALLOC_END) backed
by order-0 pages that need not be contiguous. __get_vm_area_node always adds
a guard page after the area (vm_struct.size counts it), and takes the first
gap, in address order, that holds the area and its guard. VmallocUsed is the
sum of the areas' sizes, guards included; VmallocChunk the largest gap
(get_vmalloc_info).

Plan and apply, as for slabs: pages_needed(size) says how many order-0 pages
to get (with VMALLOC_GFP, GFP_KERNEL | __GFP_HIGHMEM), vmalloc(size, pfns,
caller) maps them and hands back any it did not use; vfree returns them.

Not modelled: the vm_struct and the pages[] array are themselves kmalloc'd
(or vmalloc'd, VM_VPAGES) in the kernel; here they take no slab objects. The
2.6.24 search can run past VMALLOC_END when the list is empty; here an area
always fits inside the range or the call fails.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from memsim.profiles.loader import MachineProfile
from memsim.services.slab.errors import BadRequest, NoMemory, UnknownArea
from memsim.services.zone import gfp as g

# include/linux/vmalloc.h
VM_IOREMAP = 0x01
VM_ALLOC = 0x02
VM_MAP = 0x04
VM_USERMAP = 0x08
VM_VPAGES = 0x10
# vmalloc(): __vmalloc(size, GFP_KERNEL | __GFP_HIGHMEM, PAGE_KERNEL).
VMALLOC_GFP = g.GFP_KERNEL | g.__GFP_HIGHMEM


@dataclass
class VmStruct:
    """struct vm_struct of a vmalloc'ed area."""

    addr: int
    size: int  # with the guard page
    flags: int
    pfns: list[int] = field(default_factory=list)
    caller: str = ""

    @property
    def nr_pages(self) -> int:
        return len(self.pfns)

    @property
    def end(self) -> int:
        return self.addr + self.size


@dataclass(frozen=True)
class VmallocInfo:
    """struct vmalloc_info and VMALLOC_TOTAL, in bytes (meminfo shows >> 10)."""

    total: int
    used: int
    largest_chunk: int


@dataclass(frozen=True)
class VmallocResult:
    addr: int
    unused_pfns: list[int]


class VmallocSpace:
    def __init__(
        self,
        start: int,
        end: int,
        page_size: int,
        total_pages: int,
        taken: Callable[[int], bool] = lambda pfn: False,
        node_of: Callable[[int], int] | None = None,
    ) -> None:
        self.start = start  # VMALLOC_START
        self.end = end  # VMALLOC_END
        self.page_size = page_size
        self.total_pages = total_pages  # num_physpages: no area may be larger
        self.taken = taken  # pages someone else in the service holds (slabs)
        self.node_of = node_of  # CONFIG_NUMA kernels only: pfn -> node
        self.areas: list[VmStruct] = []  # vmlist, by address
        self.pfns: set[int] = set()

    @classmethod
    def from_profile(
        cls, profile: MachineProfile, taken: Callable[[int], bool] = lambda pfn: False
    ) -> VmallocSpace:
        spans = [(z.start_pfn, z.start_pfn + z.pages, z.node) for z in profile.zones]

        def node_of(pfn: int) -> int:
            return next((node for lo, hi, node in spans if lo <= pfn < hi), 0)

        return cls(
            profile.vmalloc_start,
            profile.vmalloc_end,
            profile.page_size,
            profile.mem_bytes // profile.page_size,
            taken,
            node_of if profile.nodes > 1 else None,
        )

    @property
    def total(self) -> int:
        """VMALLOC_TOTAL."""
        return self.end - self.start

    def pages_needed(self, size: int) -> int:
        """Pages vmalloc(size) takes; refuses what __vmalloc_node would fail on
        before looking for space (zero, or more pages than the machine has)."""
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise BadRequest(f"vmalloc size must be a positive number of bytes, not {size!r}")
        pages = -(-size // self.page_size)
        if pages > self.total_pages:
            raise BadRequest(
                f"vmalloc of {size} bytes is {pages} pages, more than the machine's "
                f"{self.total_pages} (num_physpages)"
            )
        return pages

    def find_area(self, size: int) -> int:
        """__get_vm_area_node's first fit for size bytes (guard included)."""
        addr = self.start
        for tmp in self.areas:
            if tmp.addr < addr:
                if tmp.end >= addr:
                    addr = tmp.end
                continue
            if addr + size <= tmp.addr:
                return addr
            addr = tmp.end
            if addr > self.end - size:
                break
        if addr + size <= self.end:
            return addr
        raise NoMemory(
            "allocation failed: out of vmalloc space - use vmalloc=<size> to increase size."
        )

    def plan(self, size: int) -> int:
        """pages_needed, after checking that an area of that size fits now."""
        pages = self.pages_needed(size)
        self.find_area((pages + 1) * self.page_size)
        return pages

    def vmalloc(self, size: int, pfns: Sequence[int], caller: str = "") -> VmallocResult:
        pages = self.pages_needed(size)
        if len(pfns) < pages:
            raise NoMemory(f"vmalloc of {size} bytes needs {pages} pages, got {len(pfns)}")
        used = list(pfns[:pages])
        self._check_pfns(pfns)
        addr = self.find_area((pages + 1) * self.page_size)
        area = VmStruct(addr, (pages + 1) * self.page_size, VM_ALLOC, used, caller)
        bisect.insort(self.areas, area, key=lambda a: a.addr)
        self.pfns.update(used)
        return VmallocResult(addr, list(pfns[pages:]))

    def _check_pfns(self, pfns: Sequence[int]) -> None:
        seen: set[int] = set()
        for pfn in pfns:
            if isinstance(pfn, bool) or not isinstance(pfn, int) or not 0 <= pfn < self.total_pages:
                raise BadRequest(f"pfn {pfn!r} is not a page of this machine")
            if pfn in seen or pfn in self.pfns or self.taken(pfn):
                raise BadRequest(f"pfn {pfn:#x} is already in use")
            seen.add(pfn)

    def area(self, addr: int) -> VmStruct:
        """__find_vm_area, with __vunmap's complaints for what is not one."""
        if isinstance(addr, bool) or not isinstance(addr, int) or addr & (self.page_size - 1):
            raise BadRequest(f"Trying to vfree() bad address ({addr!r})")
        i = bisect.bisect_left(self.areas, addr, key=lambda a: a.addr)
        if i == len(self.areas) or self.areas[i].addr != addr:
            raise UnknownArea(f"Trying to vfree() nonexistent vm area ({addr:#x})")
        return self.areas[i]

    def vfree(self, addr: int) -> list[tuple[int, int]]:
        """The area's pages, as (pfn, 0) blocks to give back."""
        area = self.area(addr)
        self.areas.remove(area)
        self.pfns.difference_update(area.pfns)
        return [(pfn, 0) for pfn in area.pfns]

    def info(self) -> VmallocInfo:
        """get_vmalloc_info: VmallocUsed counts the guard pages too."""
        if not self.areas:
            return VmallocInfo(self.total, 0, self.total)
        used = largest = 0
        prev_end = self.start
        for area in self.areas:
            if area.addr < self.start:
                continue
            if area.addr >= self.end:
                break
            used += area.size
            largest = max(largest, area.addr - prev_end)
            prev_end = area.end
        largest = max(largest, self.end - prev_end)
        return VmallocInfo(self.total, used, largest)

    def node_counts(self, area: VmStruct) -> list[tuple[int, int]]:
        """show_numa_info: pages of the area per node, by node; nothing on a
        kernel without CONFIG_NUMA (a profile with one node)."""
        if self.node_of is None:
            return []
        node_of = self.node_of
        return sorted(Counter(node_of(pfn) for pfn in area.pfns).items())
