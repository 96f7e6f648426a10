"""vmalloc areas: guard pages, first fit, VmallocTotal/Used/Chunk and
/proc/vmallocinfo (mm/vmalloc.c, fs/proc/mmu.c)."""

from __future__ import annotations

import pytest

from memsim.procfs.meminfo import MemInfo, format_meminfo
from memsim.procfs.vmallocinfo import VmallocEntry, format_vmallocinfo
from memsim.profiles.loader import load_profile
from memsim.services.slab.core import PagePlan, SlabAllocator
from memsim.services.slab.errors import NoMemory
from memsim.services.slab.vmalloc import VM_ALLOC, VMALLOC_GFP, VmallocSpace
from memsim.services.zone import gfp as g

START = 0xF8800000  # 1 GiB i386: (0xF8000000 + 16 MiB - 1) & ~(8 MiB - 1)
END = 0xFF7FE000


def allocator(profile: str = "x86_32") -> SlabAllocator:
    return SlabAllocator(load_profile(profile))


def entries(a: SlabAllocator) -> list[VmallocEntry]:
    return [
        VmallocEntry(v.addr, v.size, v.flags, v.nr_pages, v.caller, 0, tuple(a.vm.node_counts(v)))
        for v in a.vm_areas()
    ]


def test_areas_take_the_first_gap_with_room_for_a_guard_page() -> None:
    a = allocator()
    assert a.plan_vmalloc(1) == PagePlan(1, 0, g.GFP_KERNEL | g.__GFP_HIGHMEM)
    one = a.vmalloc(1, [500, 600], "a")
    assert (one.addr, one.unused_pfns) == (START, [600])
    two = a.vmalloc(4097, [501, 502], "b")  # 2 pages + guard = 12 KiB
    three = a.vmalloc(4096, [503], "c")
    assert (two.addr, three.addr) == (START + 0x2000, START + 0x5000)
    assert a.vfree(two.addr) == [(501, 0), (502, 0)]
    # 8 KiB + guard fits the 12 KiB hole exactly; 12 KiB + guard does not.
    assert a.vmalloc(8192, [504, 505]).addr == START + 0x2000
    assert a.vmalloc(12288, [506, 507, 508]).addr == START + 0x7000


def test_vmalloc_info_counts_guard_pages_and_the_largest_gap() -> None:
    a = allocator()
    empty = a.vmalloc_info()
    # VMALLOC_END - VMALLOC_START = 0x6FFE000: 114680 kB, what 1 GiB i386
    # boxes of the time show.
    assert (empty.total, empty.used, empty.largest_chunk) == (0x6FFE000, 0, 0x6FFE000)
    first = a.vmalloc(4096, [1])
    a.vmalloc(3 * 4096, [2, 3, 4])
    a.vfree(first.addr)
    info = a.vmalloc_info()
    # One area of 3 pages + guard at START + 8 KiB; the gap before it is 8 KiB.
    assert info.used == 4 * 4096
    assert info.largest_chunk == END - (START + 0x2000 + 0x4000)
    text = format_meminfo(
        MemInfo(
            mem_total_kb=1 << 20,
            mem_free_kb=0,
            vmalloc_total_kb=info.total >> 10,
            vmalloc_used_kb=info.used >> 10,
            vmalloc_chunk_kb=info.largest_chunk >> 10,
        )
    )
    assert "VmallocTotal:   114680 kB\nVmallocUsed:        16 kB\n" in text


def test_x86_64_vmalloc_total_is_the_famous_number() -> None:
    assert allocator("x86_64").vmalloc_info().total >> 10 == 34359738367


def test_vmalloc_start_follows_the_direct_map_on_i386() -> None:
    # 256 MiB: high_memory 0xD0000000, VMALLOC_START 8 MiB past it.
    a = SlabAllocator(load_profile("x86_32", mem="256M"))
    assert a.vmalloc(1, [1]).addr == 0xD0800000


def test_running_out_of_vmalloc_space() -> None:
    space = VmallocSpace(0x100000, 0x100000 + 4 * 4096, 4096, 100)
    space.vmalloc(4096, [1])
    space.vmalloc(4096, [2])
    assert space.info().largest_chunk == 0
    with pytest.raises(NoMemory, match="out of vmalloc space - use vmalloc=<size>"):
        space.plan(1)
    with pytest.raises(NoMemory, match="out of vmalloc space"):
        space.vmalloc(1, [3])
    assert space.pfns == {1, 2}


def test_vmallocinfo_lines() -> None:
    a = allocator()
    a.vmalloc(10000, [7, 8, 9], "module_alloc+0x48/0x60")
    a.vmalloc(4096, [10])
    assert format_vmallocinfo(entries(a), 4) == (
        "0xf8800000-0xf8804000   16384 module_alloc+0x48/0x60 pages=3 vmalloc\n"
        "0xf8804000-0xf8806000    8192 pages=1 vmalloc\n"
    )
    b = allocator("x86_64")
    b.vmalloc(1, [5])
    assert format_vmallocinfo(entries(b), 8) == (
        "0xffffc20000000000-0xffffc20000002000    8192 pages=1 vmalloc\n"
    )


def test_vmallocinfo_on_numa_shows_pages_per_node() -> None:
    a = allocator("numa")
    node1 = (4 << 30) // 4096  # node 1 starts half way through 8 GiB
    a.vmalloc(3 * 4096, [10, node1 + 1, node1 + 2])
    (entry,) = entries(a)
    assert entry.nodes == ((0, 1), (1, 2))
    assert format_vmallocinfo([entry], 8).endswith(" pages=3 vmalloc N0=1 N1=2\n")


def test_vmallocinfo_other_flags() -> None:
    line = format_vmallocinfo([VmallocEntry(0x1000, 0x3000, 0x1 | 0x8, 0, "", 0xFE000)], 4)
    assert line == "0x00001000-0x00004000   12288 phys=fe000 ioremap user\n"
    assert VM_ALLOC == 2
    assert VMALLOC_GFP == g.GFP_HIGHUSER & ~g.__GFP_HARDWALL


def test_without_an_mmu_vmalloc_is_kmalloc() -> None:
    a = allocator("nommu")
    # size-128 on the nommu board; kmem_getpages adds __GFP_COMP.
    assert a.plan_vmalloc(100) == PagePlan(1, 0, g.GFP_KERNEL | g.__GFP_COMP, "size-128")
    result = a.vmalloc(100, [300])
    assert a.ksize(result.addr) == 128
    assert a.vm_areas() == []
    info = a.vmalloc_info()
    assert (info.total, info.used, info.largest_chunk) == (0, 0, 0)
    assert a.vfree(result.addr) == []
    assert a.cache("size-128").in_use == 0
    assert a.cache("size-128").array_avail == 1
