"""/proc/PID/maps, /proc/PID/status, /proc/meminfo and free: exact text, written by hand."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from memsim.procfs.free import format_free, human_size, scale
from memsim.procfs.maps import MapsEntry, format_maps
from memsim.procfs.meminfo import MemInfo, format_meminfo
from memsim.procfs.status import ProcessStatus, format_bitmap, format_status

# --- /proc/PID/maps ---------------------------------------------------------


def test_maps_32_bit_names_start_in_column_49() -> None:
    entries = [
        MapsEntry(0x08048000, 0x08053000, "r-xp", 0, 3, 1, 12345, "/bin/cat"),
        MapsEntry(0x08053000, 0x08054000, "rw-p", 0xB000, 3, 1, 12345, "/bin/cat"),
        MapsEntry(0x08054000, 0x08075000, "rw-p", 0x08054000, 0, 0, 0, "[heap]"),
        MapsEntry(0xB7E5F000, 0xB7E60000, "rw-p", 0xB7E5F000, 0, 0, 0, ""),
        MapsEntry(0xB7E60000, 0xB7F9A000, "r-xp", 0, 3, 1, 245864, "/lib/libc-2.7.so"),
        MapsEntry(0xBFD8A000, 0xBFD9F000, "rw-p", 0xBFFEB000, 0, 0, 0, "[stack]"),
        MapsEntry(0xFFFFE000, 0xFFFFF000, "r-xp", 0, 0, 0, 0, "[vdso]"),
    ]
    assert format_maps(entries) == (
        "08048000-08053000 r-xp 00000000 03:01 12345      /bin/cat\n"
        "08053000-08054000 rw-p 0000b000 03:01 12345      /bin/cat\n"
        "08054000-08075000 rw-p 08054000 00:00 0          [heap]\n"
        "b7e5f000-b7e60000 rw-p b7e5f000 00:00 0 \n"
        "b7e60000-b7f9a000 r-xp 00000000 03:01 245864     /lib/libc-2.7.so\n"
        "bfd8a000-bfd9f000 rw-p bffeb000 00:00 0          [stack]\n"
        "ffffe000-fffff000 r-xp 00000000 00:00 0          [vdso]\n"
    )
    for line in format_maps(entries).splitlines():
        if not line.endswith(" "):
            assert line[48] == " "
            assert line[49] in "/["


def test_maps_64_bit_addresses_grow_past_8_digits_and_names_start_in_column_73() -> None:
    entries = [
        MapsEntry(0x00400000, 0x0040B000, "r-xp", 0, 8, 1, 1234567, "/bin/cat"),
        MapsEntry(0x7FFF5C1E9000, 0x7FFF5C1FE000, "rw-p", 0x7FFFFFFEA000, 0, 0, 0, "[stack]"),
        MapsEntry(
            0x7F3A1C000000, 0x7F3A1C021000, "rw-s", 0, 0, 4, 32769, "/SYSV00000000 (deleted)"
        ),
    ]
    assert format_maps(entries, bits=64) == (
        "00400000-0040b000 r-xp 00000000 08:01 1234567"
        "                            /bin/cat\n"
        "7fff5c1e9000-7fff5c1fe000 rw-p 7ffffffea000 00:00 0"
        "                      [stack]\n"
        "7f3a1c000000-7f3a1c021000 rw-s 00000000 00:04 32769"
        "                      /SYSV00000000 (deleted)\n"
    )
    for line in format_maps(entries, bits=64).splitlines():
        assert line[72] == " "
        assert line[73] in "/["


def test_maps_padding_is_at_least_one_space_and_paths_escape_newlines() -> None:
    # 49 characters before the name: the kernel's pad would be 0, it prints 1.
    wide = MapsEntry(0xB7000000, 0xB7001000, "r--s", 0x12345000, 0xFE, 0xFF, 4294967295, "/x")
    assert format_maps([wide]) == "b7000000-b7001000 r--s 12345000 fe:ff 4294967295  /x\n"
    odd = MapsEntry(0x1000, 0x2000, "r--p", 0, 0, 1, 7, "/tmp/a\nb")
    assert format_maps([odd]) == ("00001000-00002000 r--p 00000000 00:01 7          /tmp/a\\012b\n")


@pytest.mark.parametrize(
    ("entry", "bits", "message"),
    [
        (MapsEntry(0x2000, 0x1000, "r--p", 0, 0, 0, 0, ""), 32, "bad range"),
        (MapsEntry(0x1000, 0x100000000, "r--p", 0, 0, 0, 0, ""), 32, "bad range"),
        (MapsEntry(0x1000, 0x2000, "rwx", 0, 0, 0, 0, ""), 32, "bad perms"),
        (MapsEntry(0x1000, 0x2000, "r-xq", 0, 0, 0, 0, ""), 32, "bad perms"),
        (MapsEntry(0x1000, 0x2000, "r--p", -1, 0, 0, 0, ""), 64, "unsigned"),
        (MapsEntry(0x1000, 0x2000, "r--p", 0, 0, 0, 0, ""), 16, "32 or 64"),
    ],
)
def test_maps_refuses_what_the_kernel_cannot_print(
    entry: MapsEntry, bits: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        format_maps([entry], bits)


# --- /proc/PID/status -------------------------------------------------------


_CAT = ProcessStatus(
    name="cat",
    state="R",
    pid=1234,
    ppid=1000,
    tgid=1234,
    uid=1000,
    gid=100,
    vm_peak_kb=3000,
    vm_size_kb=2948,
    vm_lck_kb=0,
    vm_hwm_kb=404,
    vm_rss_kb=404,
    vm_data_kb=160,
    vm_stk_kb=84,
    vm_exe_kb=16,
    vm_lib_kb=1408,
    vm_pte_kb=12,
    vm_swap_kb=0,
    threads=1,
    cap_inh=0,
    cap_prm=0,
    cap_eff=0,
    cpus_allowed=0x3,
    mems_allowed=0x1,
    groups=(100, 1000),
    sigq_limit=8192,
)


def test_status_every_line_in_2_6_24_order_plus_vmswap() -> None:
    assert format_status(_CAT) == (
        "Name:\tcat\n"
        "State:\tR (running)\n"
        "Tgid:\t1234\n"
        "Pid:\t1234\n"
        "PPid:\t1000\n"
        "TracerPid:\t0\n"
        "Uid:\t1000\t1000\t1000\t1000\n"
        "Gid:\t100\t100\t100\t100\n"
        "FDSize:\t32\n"
        "Groups:\t100 1000 \n"
        "VmPeak:\t    3000 kB\n"
        "VmSize:\t    2948 kB\n"
        "VmLck:\t       0 kB\n"
        "VmHWM:\t     404 kB\n"
        "VmRSS:\t     404 kB\n"
        "VmData:\t     160 kB\n"
        "VmStk:\t      84 kB\n"
        "VmExe:\t      16 kB\n"
        "VmLib:\t    1408 kB\n"
        "VmPTE:\t      12 kB\n"
        "VmSwap:\t       0 kB\n"
        "Threads:\t1\n"
        "SigQ:\t0/8192\n"
        "SigPnd:\t0000000000000000\n"
        "ShdPnd:\t0000000000000000\n"
        "SigBlk:\t0000000000000000\n"
        "SigIgn:\t0000000000000000\n"
        "SigCgt:\t0000000000000000\n"
        "CapInh:\t0000000000000000\n"
        "CapPrm:\t0000000000000000\n"
        "CapEff:\t0000000000000000\n"
        "Cpus_allowed:\t03\n"
        "Mems_allowed:\t1\n"
        "voluntary_ctxt_switches:\t0\n"
        "nonvoluntary_ctxt_switches:\t0\n"
    )


def test_status_of_a_traced_setuid_root_daemon_on_a_numa_box() -> None:
    status = replace(
        _CAT,
        name="a\\b\nc-with-a-long-name",
        state="T (tracing stop)",
        pid=4321,
        tgid=4300,
        tracer_pid=999,
        uid=1000,
        euid=0,
        suid=0,
        fsuid=0,
        gid=100,
        egid=0,
        sgid=0,
        fsgid=0,
        groups=(),
        fd_size=256,
        vm_peak_kb=123456789,
        vm_swap_kb=2048,
        threads=12,
        sigq_queued=3,
        sig_pnd=1 << (10 - 1),  # SIGUSR1
        shd_pnd=0,
        sig_blk=(1 << (2 - 1)) | (1 << (15 - 1)),  # SIGINT, SIGTERM
        sig_ign=1 << (13 - 1),  # SIGPIPE
        sig_cgt=(1 << (17 - 1)) | (1 << (64 - 1)),  # SIGCHLD, SIGRTMAX
        cap_inh=0,
        cap_prm=0xFFFFFEFF,
        cap_eff=0xFFFFFEFF,
        cpus_allowed=0xF0000000F,
        nr_cpus=64,
        mems_allowed=0x3,
        max_numnodes=64,
        voluntary_ctxt_switches=17,
        nonvoluntary_ctxt_switches=4,
    )
    lines = format_status(status).splitlines()
    assert lines[:10] == [
        "Name:\ta\\\\b\\nc-with-a-lo",
        "State:\tT (tracing stop)",
        "Tgid:\t4300",
        "Pid:\t4321",
        "PPid:\t1000",
        "TracerPid:\t999",
        "Uid:\t1000\t0\t0\t0",
        "Gid:\t100\t0\t0\t0",
        "FDSize:\t256",
        "Groups:\t",
    ]
    assert lines[10] == "VmPeak:\t123456789 kB"
    assert lines[20] == "VmSwap:\t    2048 kB"
    assert lines[21:] == [
        "Threads:\t12",
        "SigQ:\t3/8192",
        "SigPnd:\t0000000000000200",
        "ShdPnd:\t0000000000000000",
        "SigBlk:\t0000000000004002",
        "SigIgn:\t0000000000001000",
        "SigCgt:\t8000000000010000",
        "CapInh:\t0000000000000000",
        "CapPrm:\t00000000fffffeff",
        "CapEff:\t00000000fffffeff",
        "Cpus_allowed:\t0000000f,0000000f",
        "Mems_allowed:\t00000000,00000003",
        "voluntary_ctxt_switches:\t17",
        "nonvoluntary_ctxt_switches:\t4",
    ]


def test_status_of_a_kernel_thread_has_no_vm_lines() -> None:
    text = format_status(replace(_CAT, name="kswapd0", state="S", has_mm=False, ppid=2, tgid=1234))
    assert "Vm" not in text
    assert "FDSize:\t32\nGroups:\t100 1000 \nThreads:\t1\n" in text
    assert text.startswith("Name:\tkswapd0\nState:\tS (sleeping)\n")


def test_bitmaps_as_bitmap_scnprintf_prints_them() -> None:
    assert format_bitmap(1, 1) == "1"
    assert format_bitmap(0xFF, 8) == "ff"
    assert format_bitmap(0x3, 32) == "00000003"
    assert format_bitmap(0xF00000001, 36) == "f,00000001"
    assert format_bitmap(0, 128) == "00000000,00000000,00000000,00000000"
    with pytest.raises(ValueError, match="does not fit in 8 bits"):
        format_bitmap(0x100, 8)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"state": "Q"}, "unknown task state"),
        ({"cap_eff": 1 << 32}, "32-bit kernel_cap_t"),
        ({"sig_blk": 1 << 64}, "64 signals"),
        ({"vm_rss_kb": -4}, "VmRSS is unsigned"),
        ({"cpus_allowed": 0x1FF}, "does not fit in 8 bits"),
    ],
)
def test_status_refuses_what_2_6_24_cannot_print(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        format_status(replace(_CAT, **changes))


# --- /proc/meminfo ----------------------------------------------------------

_COMMON = MemInfo(
    mem_total_kb=0,
    mem_free_kb=0,
    buffers_kb=20000,
    cached_kb=300000,
    swap_cached_kb=0,
    active_kb=250000,
    inactive_kb=150000,
    swap_total_kb=2097148,
    swap_free_kb=2097148,
    dirty_kb=40,
    writeback_kb=0,
    anon_pages_kb=80000,
    mapped_kb=30000,
    s_reclaimable_kb=9000,
    s_unreclaim_kb=7000,
    page_tables_kb=1200,
    nfs_unstable_kb=0,
    bounce_kb=0,
    commit_limit_kb=2614488,
    committed_as_kb=190000,
)


def test_meminfo_without_highmem_x86_64() -> None:
    info = replace(
        _COMMON,
        mem_total_kb=2059516,
        mem_free_kb=1500000,
        vmalloc_total_kb=34359738367,
        vmalloc_used_kb=5000,
        vmalloc_chunk_kb=34359733000,
        hugepagesize_kb=2048,
    )
    assert format_meminfo(info) == (
        "MemTotal:      2059516 kB\n"
        "MemFree:       1500000 kB\n"
        "Buffers:         20000 kB\n"
        "Cached:         300000 kB\n"
        "SwapCached:          0 kB\n"
        "Active:         250000 kB\n"
        "Inactive:       150000 kB\n"
        "SwapTotal:     2097148 kB\n"
        "SwapFree:      2097148 kB\n"
        "Dirty:              40 kB\n"
        "Writeback:           0 kB\n"
        "AnonPages:       80000 kB\n"
        "Mapped:          30000 kB\n"
        "Slab:            16000 kB\n"
        "SReclaimable:     9000 kB\n"
        "SUnreclaim:       7000 kB\n"
        "PageTables:       1200 kB\n"
        "NFS_Unstable:        0 kB\n"
        "Bounce:              0 kB\n"
        "CommitLimit:   2614488 kB\n"
        "Committed_AS:   190000 kB\n"
        "VmallocTotal: 34359738367 kB\n"
        "VmallocUsed:      5000 kB\n"
        "VmallocChunk: 34359733000 kB\n"
        "HugePages_Total:     0\n"
        "HugePages_Free:      0\n"
        "HugePages_Rsvd:      0\n"
        "HugePages_Surp:      0\n"
        "Hugepagesize:     2048 kB\n"
    )


def test_meminfo_with_highmem_x86_32_1g() -> None:
    info = replace(
        _COMMON,
        mem_total_kb=1034680,
        mem_free_kb=500000,
        high_total_kb=131008,
        high_free_kb=20000,
        vmalloc_total_kb=118776,
        vmalloc_used_kb=5076,
        vmalloc_chunk_kb=113500,
        hugepages_total=10,
        hugepages_free=8,
        hugepages_rsvd=1,
        hugepages_surp=0,
        highmem=True,
    )
    assert format_meminfo(info) == (
        "MemTotal:      1034680 kB\n"
        "MemFree:        500000 kB\n"
        "Buffers:         20000 kB\n"
        "Cached:         300000 kB\n"
        "SwapCached:          0 kB\n"
        "Active:         250000 kB\n"
        "Inactive:       150000 kB\n"
        "HighTotal:      131008 kB\n"
        "HighFree:        20000 kB\n"
        "LowTotal:       903672 kB\n"
        "LowFree:        480000 kB\n"
        "SwapTotal:     2097148 kB\n"
        "SwapFree:      2097148 kB\n"
        "Dirty:              40 kB\n"
        "Writeback:           0 kB\n"
        "AnonPages:       80000 kB\n"
        "Mapped:          30000 kB\n"
        "Slab:            16000 kB\n"
        "SReclaimable:     9000 kB\n"
        "SUnreclaim:       7000 kB\n"
        "PageTables:       1200 kB\n"
        "NFS_Unstable:        0 kB\n"
        "Bounce:              0 kB\n"
        "CommitLimit:   2614488 kB\n"
        "Committed_AS:   190000 kB\n"
        "VmallocTotal:   118776 kB\n"
        "VmallocUsed:      5076 kB\n"
        "VmallocChunk:   113500 kB\n"
        "HugePages_Total:    10\n"
        "HugePages_Free:      8\n"
        "HugePages_Rsvd:      1\n"
        "HugePages_Surp:      0\n"
        "Hugepagesize:     4096 kB\n"
    )


def test_meminfo_without_hugetlb_ends_at_vmallocchunk() -> None:
    text = format_meminfo(MemInfo(mem_total_kb=16384, mem_free_kb=8192, hugetlb=False))
    assert text.endswith("VmallocChunk:        0 kB\n")
    assert "Huge" not in text
    assert "High" not in text
    with pytest.raises(ValueError, match="LowFree is unsigned"):
        format_meminfo(MemInfo(mem_total_kb=16, mem_free_kb=8, high_free_kb=9, highmem=True))


# --- free -------------------------------------------------------------------

_HEADER = "             total       used       free     shared    buffers     cached\n"
# total, free, swap total, swap free, buffers, cached (kB)
_MACHINE = (1034680, 500000, 2097148, 2097148, 20000, 300000)


def test_free_default_is_kilobytes_as_before() -> None:
    expected = (
        _HEADER + "Mem:       1034680     534680     500000          0      20000     300000\n"
        "-/+ buffers/cache:     214680     820000\n"
        "Swap:      2097148          0    2097148\n"
    )
    assert format_free(*_MACHINE) == expected
    assert format_free(*_MACHINE, unit="k") == expected
    # what `memsim free` calls: total and free only
    assert format_free(1034680, 1000000) == (
        _HEADER + "Mem:       1034680      34680    1000000          0          0          0\n"
        "-/+ buffers/cache:      34680    1000000\n"
        "Swap:            0          0          0\n"
    )


def test_free_bytes_widen_past_the_column() -> None:
    assert format_free(*_MACHINE, unit="b") == (
        _HEADER + "Mem:    1059512320  547512320  512000000          0   20480000  307200000\n"
        "-/+ buffers/cache:  219832320  839680000\n"
        "Swap:   2147479552          0 2147479552\n"
    )


def test_free_megabytes_and_gigabytes_truncate() -> None:
    assert format_free(*_MACHINE, unit="m") == (
        _HEADER + "Mem:          1010        522        488          0         19        292\n"
        "-/+ buffers/cache:        209        800\n"
        "Swap:         2047          0       2047\n"
    )
    assert format_free(*_MACHINE, unit="g") == (
        _HEADER + "Mem:             0          0          0          0          0          0\n"
        "-/+ buffers/cache:          0          0\n"
        "Swap:            1          0          1\n"
    )


def test_free_human_readable() -> None:
    assert format_free(*_MACHINE, unit="h") == (
        _HEADER + "Mem:          1.0G       522M       488M         0B        19M       292M\n"
        "-/+ buffers/cache:       209M       800M\n"
        "Swap:         2.0G         0B       2.0G\n"
    )
    assert [human_size(kb) for kb in (0, 1, 3, 999, 1000, 5120, 524288, 1048576)] == [
        "0B",
        "1K",
        "3K",
        "999K",
        "1.0M",
        "5.0M",
        "512M",
        "1.0G",
    ]
    assert human_size(10 * 1024 * 1024) == "10G"
    assert human_size(3 << 30) == "3.0T"
    assert human_size(5000 << 30) == "5000T"


def test_free_refuses_unknown_units_and_negative_values() -> None:
    with pytest.raises(ValueError, match="unit must be one of b, k, m, g, h"):
        scale(1, "t")
    with pytest.raises(ValueError, match="unsigned"):
        format_free(100, 200)
