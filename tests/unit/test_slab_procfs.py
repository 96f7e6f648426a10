"""/proc/slabinfo in 2.6.24's version 2.1 format, and slabtop."""

from __future__ import annotations

import pytest

from memsim.procfs.slabinfo import SlabinfoRow, format_slabinfo, format_slabtop
from memsim.profiles.loader import load_profile
from memsim.services.slab.cache import CacheInfo
from memsim.services.slab.core import SlabAllocator

HEADER = (
    "slabinfo - version: 2.1\n"
    "# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab>"
    " : tunables <limit> <batchcount> <sharedfactor>"
    " : slabdata <active_slabs> <num_slabs> <sharedavail>\n"
)


def row(info: CacheInfo) -> SlabinfoRow:
    return SlabinfoRow(
        name=info.name,
        active_objs=info.active_objs,
        num_objs=info.num_objs,
        objsize=info.buffer_size,
        objperslab=info.num,
        pagesperslab=1 << info.gfporder,
        limit=info.limit,
        batchcount=info.batchcount,
        sharedfactor=info.shared,
        active_slabs=info.active_slabs,
        num_slabs=info.num_slabs,
    )


def test_the_header_and_a_line_are_the_kernels() -> None:
    text = format_slabinfo(
        [SlabinfoRow("size-4096", 4094, 4094, 4096, 1, 1, 24, 12, 0, 4094, 4094, 0)]
    )
    assert text == HEADER + (
        "size-4096           4094   4094   4096    1    1 : tunables   24   12    0"
        " : slabdata   4094   4094      0\n"
    )


def test_long_names_and_big_numbers_widen_their_fields() -> None:
    line = format_slabinfo(
        [SlabinfoRow("size-131072(DMA)x", 1234567, 1234567, 131072, 1, 32, 8, 4, 0, 7, 1234567, 0)]
    )
    assert line.splitlines()[2] == (
        "size-131072(DMA)x 1234567 1234567 131072    1   32 : tunables    8    4    0"
        " : slabdata      7 1234567      0"
    )


def test_slabinfo_of_a_booted_machine_moves_with_the_objects() -> None:
    a = SlabAllocator(load_profile("x86_32"))
    a.cache_alloc("task_struct", 4, [100, 101])
    a.cache_alloc("vm_area_struct", 45, [102, 103])
    lines = format_slabinfo(row(i) for i in a.infos()).splitlines()
    assert lines[0:2] == HEADER.splitlines()
    by_name = {line.split()[0]: line for line in lines[2:]}
    assert by_name["task_struct"] == (
        "task_struct            4      6   1280    3    1 : tunables   24   12    8"
        " : slabdata      2      2      0"
    )
    assert by_name["vm_area_struct"] == (
        "vm_area_struct        45     88     88   44    1 : tunables  120   60    8"
        " : slabdata      2      2      0"
    )
    assert by_name["size-4194304"] == (
        "size-4194304           0      0 4194304    1 1024 : tunables    1    1    0"
        " : slabdata      0      0      0"
    )
    # Newest first: inode_cache heads the list, size-32 ends it.
    assert lines[2].startswith("inode_cache ")
    assert lines[-1].startswith("size-32 ")


def test_slabtop_sorts_by_objects_and_totals_like_procps() -> None:
    rows = [
        SlabinfoRow("dentry", 30, 62, 124, 31, 1, 120, 60, 8, 2, 2),
        SlabinfoRow("task_struct", 3, 3, 1280, 3, 1, 24, 12, 8, 1, 1),
        SlabinfoRow("size-64", 0, 0, 64, 59, 1, 120, 60, 8, 0, 0),
    ]
    # Sizes: 62*124 + 3*1280 = 11528 bytes in all, 30*124 + 3840 = 7560
    # active (65.6%); average 11528 // 65 = 177 bytes.
    text = format_slabtop(rows, 4096)
    assert text == (
        " Active / Total Objects (% used)    : 33 / 65 (50.8%)\n"
        " Active / Total Slabs (% used)      : 3 / 3 (100.0%)\n"
        " Active / Total Caches (% used)     : 2 / 3 (66.7%)\n"
        " Active / Total Size (% used)       : 7.38K / 11.26K (65.6%)\n"
        " Minimum / Average / Maximum Object : 0.06K / 0.17K / 1.25K\n"
        "\n"
        "  OBJS ACTIVE  USE OBJ SIZE  SLABS OBJ/SLAB CACHE SIZE NAME                   \n"
        "    62     30  48%    0.12K      2       31         8K dentry                 \n"
        "     3      3 100%    1.25K      1        3         4K task_struct            \n"
        "     0      0   0%    0.06K      0       59         0K size-64                \n"
    )
    by_name = format_slabtop(rows, 4096, sort="n", limit=1).splitlines()
    assert by_name[-1].split()[-1] == "dentry"
    assert len(by_name) == 8


def test_slabtop_refuses_unknown_sort_keys() -> None:
    with pytest.raises(ValueError, match="unknown sort key"):
        format_slabtop([], 4096, sort="z")
    assert "0 / 0 (0.0%)" in format_slabtop([], 4096)
