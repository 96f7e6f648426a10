"""/proc/meminfo (fs/proc/proc_misc.c meminfo_read_proc of 2.6.24).

Every line is a literal label padded with spaces to 14 characters, then
"%8lu kB" ("MemTotal:     %8lu kB"): the value right-aligned in 8, wider
values just widen. HighTotal, HighFree, LowTotal and LowFree are compiled in
only with CONFIG_HIGHMEM. mm/hugetlb.c hugetlb_report_meminfo then adds,
with CONFIG_HUGETLB_PAGE, "HugePages_Total: %5lu" and its kin (counts, not
kB) and "Hugepagesize:    %5lu kB".

The kernel derives three lines: Slab is SReclaimable + SUnreclaim, LowTotal is
MemTotal - HighTotal, LowFree is MemFree - HighFree; so here they are
properties, not fields.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MemInfo:
    """Sizes in kB, huge page counts in pages.

    highmem: CONFIG_HIGHMEM (32-bit x86 with more than 896 MiB in mind);
    hugetlb: CONFIG_HUGETLB_PAGE. Hugepagesize is HPAGE_SIZE / 1024: 4096 on
    32-bit x86 without PAE, 2048 with PAE and on x86_64.
    """

    mem_total_kb: int
    mem_free_kb: int
    buffers_kb: int = 0
    cached_kb: int = 0
    swap_cached_kb: int = 0
    active_kb: int = 0
    inactive_kb: int = 0
    high_total_kb: int = 0
    high_free_kb: int = 0
    swap_total_kb: int = 0
    swap_free_kb: int = 0
    dirty_kb: int = 0
    writeback_kb: int = 0
    anon_pages_kb: int = 0
    mapped_kb: int = 0
    s_reclaimable_kb: int = 0
    s_unreclaim_kb: int = 0
    page_tables_kb: int = 0
    nfs_unstable_kb: int = 0
    bounce_kb: int = 0
    commit_limit_kb: int = 0
    committed_as_kb: int = 0
    vmalloc_total_kb: int = 0
    vmalloc_used_kb: int = 0
    vmalloc_chunk_kb: int = 0
    hugepages_total: int = 0
    hugepages_free: int = 0
    hugepages_rsvd: int = 0
    hugepages_surp: int = 0
    hugepagesize_kb: int = 4096
    highmem: bool = False
    hugetlb: bool = True

    @property
    def slab_kb(self) -> int:
        return self.s_reclaimable_kb + self.s_unreclaim_kb

    @property
    def low_total_kb(self) -> int:
        return self.mem_total_kb - self.high_total_kb

    @property
    def low_free_kb(self) -> int:
        return self.mem_free_kb - self.high_free_kb


def _line(label: str, value: int, column: int, width: int, unit: str) -> str:
    """label and colon padded to column characters, then "%{width}lu" and unit."""
    if value < 0:
        raise ValueError(f"{label} is unsigned, not {value}")
    return f"{label + ':':<{column}}{value:{width}d}{unit}"


def format_meminfo(m: MemInfo) -> str:
    kb: list[tuple[str, int]] = [
        ("MemTotal", m.mem_total_kb),
        ("MemFree", m.mem_free_kb),
        ("Buffers", m.buffers_kb),
        ("Cached", m.cached_kb),
        ("SwapCached", m.swap_cached_kb),
        ("Active", m.active_kb),
        ("Inactive", m.inactive_kb),
    ]
    if m.highmem:
        kb += [
            ("HighTotal", m.high_total_kb),
            ("HighFree", m.high_free_kb),
            ("LowTotal", m.low_total_kb),
            ("LowFree", m.low_free_kb),
        ]
    kb += [
        ("SwapTotal", m.swap_total_kb),
        ("SwapFree", m.swap_free_kb),
        ("Dirty", m.dirty_kb),
        ("Writeback", m.writeback_kb),
        ("AnonPages", m.anon_pages_kb),
        ("Mapped", m.mapped_kb),
        ("Slab", m.slab_kb),
        ("SReclaimable", m.s_reclaimable_kb),
        ("SUnreclaim", m.s_unreclaim_kb),
        ("PageTables", m.page_tables_kb),
        ("NFS_Unstable", m.nfs_unstable_kb),
        ("Bounce", m.bounce_kb),
        ("CommitLimit", m.commit_limit_kb),
        ("Committed_AS", m.committed_as_kb),
        ("VmallocTotal", m.vmalloc_total_kb),
        ("VmallocUsed", m.vmalloc_used_kb),
        ("VmallocChunk", m.vmalloc_chunk_kb),
    ]
    lines = [_line(label, value, 14, 8, " kB") for label, value in kb]
    if m.hugetlb:
        # "HugePages_Total: %5lu" ... "Hugepagesize:    %5lu kB": label and
        # colon padded to 17 characters.
        lines += [
            _line("HugePages_Total", m.hugepages_total, 17, 5, ""),
            _line("HugePages_Free", m.hugepages_free, 17, 5, ""),
            _line("HugePages_Rsvd", m.hugepages_rsvd, 17, 5, ""),
            _line("HugePages_Surp", m.hugepages_surp, 17, 5, ""),
            _line("Hugepagesize", m.hugepagesize_kb, 17, 5, " kB"),
        ]
    return "\n".join(lines) + "\n"
