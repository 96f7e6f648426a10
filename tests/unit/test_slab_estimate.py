"""Objects and pages per slab, worked out by hand from mm/slab.c of 2.6.24.

The formulas (cache_estimate, on-slab):
    nr   = (PAGE_SIZE << order - sizeof(struct slab)) // (buffer_size + 4)
    mgmt = ALIGN(sizeof(struct slab) + nr * 4, align)        # bufctls are 4 bytes
    nr  -= 1 if mgmt + nr * buffer_size > slab bytes
    left_over = slab bytes - nr * buffer_size - mgmt
off-slab: nr = slab bytes // buffer_size, left_over = slab bytes - nr * buffer_size.
sizeof(struct slab) = 4 words + 4 + 4 + 2, padded: 28 on 32-bit, 48 on 64-bit.
"""

from __future__ import annotations

import pytest

from memsim.profiles.loader import load_profile
from memsim.services.slab import flags as f
from memsim.services.slab.errors import BadRequest
from memsim.services.slab.estimate import (
    SlabArch,
    cache_estimate,
    calculate_slab_order,
    cpucache_tunables,
    kmem_cache_layout,
)

I386 = SlabArch(
    page_size=4096, word_bytes=4, ull_align=8, cache_line=64, break_order=1, cpus=2, node_cpus=2
)
X86_64 = SlabArch(
    page_size=4096, word_bytes=8, ull_align=8, cache_line=128, break_order=1, cpus=2, node_cpus=2
)
HW = f.SLAB_HWCACHE_ALIGN


def test_struct_slab_is_28_bytes_on_32_bit_and_48_on_64_bit() -> None:
    # list_head (2 words) + colouroff + s_mem + inuse (4) + free (4) + nodeid (2)
    assert I386.slab_struct_bytes == 28  # 16 + 10 = 26 -> 28
    assert X86_64.slab_struct_bytes == 48  # 32 + 10 = 42 -> 48


def test_profiles_give_the_slab_constants() -> None:
    arch = SlabArch.from_profile(load_profile("x86_32"))
    assert (arch.word_bytes, arch.cache_line, arch.break_order, arch.cpus) == (4, 64, 1, 2)
    assert arch.node_cpus == 2
    # 8 MiB is not more than 32 MiB: slab_break_gfp_order stays 0.
    assert SlabArch.from_profile(load_profile("nommu")).break_order == 0
    # Two nodes of two CPUs each: num_possible_cpus 4, nr_cpus_node 2.
    numa = SlabArch.from_profile(load_profile("numa"))
    assert (numa.cpus, numa.node_cpus) == (4, 2)


@pytest.mark.parametrize(
    ("name", "arch", "size", "align", "flags", "expect"),
    [
        # size-32 on i386: HWCACHE 64 -> 32 (32 <= 32), align 32. 4068 // 36 = 113;
        # mgmt ALIGN(28 + 452, 32) = 480; 480 + 113*32 = 4096 fits; left 0.
        ("size-32", I386, 32, 8, HW, (32, 113, 1, False, 0, 0)),
        # size-192, line 64: 192 > 32 so align 64. 4068 // 196 = 20; mgmt
        # ALIGN(28 + 80, 64) = 128; 128 + 3840 = 3968; left 128 = 2 colours of 64.
        ("size-192", I386, 192, 8, HW, (192, 20, 1, False, 128, 2)),
        # vm_area_struct 88, word aligned: 4068 // 92 = 44; mgmt 28 + 176 = 204;
        # 204 + 3872 = 4076; left 20, less than a colour.
        ("vm_area_struct", I386, 88, 0, 0, (88, 44, 1, False, 20, 0)),
        # task_struct 1280 >= 4096/8: off-slab. 4096 // 1280 = 3, left 256;
        # 256*8 = 2048 <= 4096 accepts order 0. Management ALIGN(3*4 + 28, 16)
        # = 48 fits in 256: back on-slab, left 208 = 3 colours of 64.
        ("task_struct", I386, 1280, 16, 0, (1280, 3, 1, False, 208, 3)),
        # size-512: off-slab, 8 objects, left 0; management ALIGN(8*4 + 28, 64)
        # = 64 does not fit: stays off-slab.
        ("size-512", I386, 512, 8, HW, (512, 8, 1, True, 0, 0)),
        # size-8192: order 0 holds none; order 1 holds one, left 0.
        ("size-8192", I386, 8192, 8, HW, (8192, 1, 2, True, 0, 0)),
        # 1100 bytes, no flags: order 0 holds 3, left 796; 796*8 > 4096 and
        # order 0 < slab_break_gfp_order 1, so try order 1: 8192 // 1100 = 7,
        # left 492; stop at the break order. ALIGN(7*4 + 28, 4) = 56 fits: on-slab,
        # left 436 = 6 colours of 64.
        ("odd", I386, 1100, 0, 0, (1100, 7, 2, False, 436, 6)),
        # mm_struct 896 on x86_64, HWCACHE 128: off-slab; 4 per page, left 512;
        # 512*8 = 4096 <= 4096. ALIGN(4*4 + 48, 128) = 128 fits: on-slab, left
        # 384 = 3 colours of 128.
        ("mm_struct", X86_64, 896, 0, HW, (896, 4, 1, False, 384, 3)),
        # dentry 208 on x86_64: 4048 // 212 = 19; mgmt ALIGN(48 + 76, 8) = 128;
        # 128 + 3952 = 4080; left 16.
        ("dentry", X86_64, 208, 8, f.SLAB_RECLAIM_ACCOUNT, (208, 19, 1, False, 16, 0)),
        # size-32 on x86_64, line 128 -> 64 -> 32: 4048 // 36 = 112; mgmt
        # ALIGN(48 + 448, 32) = 512; 512 + 3584 = 4096.
        ("size-32", X86_64, 32, 8, HW, (32, 112, 1, False, 0, 0)),
        # task_struct 1888 on x86_64: 2 per page, left 320 (320*8 <= 4096); ALIGN(2*4
        # + 48, 16) = 64 fits: on-slab, left 256 = 2 colours of 128.
        ("task_struct", X86_64, 1888, 16, 0, (1888, 2, 1, False, 256, 2)),
    ],
)
def test_worked_examples(
    name: str,
    arch: SlabArch,
    size: int,
    align: int,
    flags: int,
    expect: tuple[int, int, int, bool, int, int],
) -> None:
    layout = kmem_cache_layout(arch, name, size, align, flags)
    got = (
        layout.buffer_size,
        layout.num,
        layout.pages_per_slab,
        layout.off_slab,
        layout.left_over,
        layout.colour,
    )
    assert got == expect


def test_small_machines_do_not_go_past_order_0() -> None:
    # The 1100-byte cache on a machine of 32 MiB or less: slab_break_gfp_order
    # 0 stops at order 0 with 3 objects; management ALIGN(3*4 + 28, 4) = 40
    # fits in 796: left 756 = 11 colours of 64.
    small = SlabArch(page_size=4096, word_bytes=4, cache_line=64, break_order=0)
    layout = kmem_cache_layout(small, "odd", 1100, 0, 0)
    assert (layout.num, layout.gfporder, layout.left_over, layout.colour) == (3, 0, 756, 11)


def test_reclaimable_caches_stay_at_the_first_order_that_fits() -> None:
    # SLAB_RECLAIM_ACCOUNT breaks out at order 0 even with 796 bytes wasted.
    layout = kmem_cache_layout(I386, "odd", 1100, 0, f.SLAB_RECLAIM_ACCOUNT)
    assert (layout.num, layout.gfporder) == (3, 0)


def test_cache_estimate_drops_the_object_the_padding_has_no_room_for() -> None:
    # 8-byte buffers aligned to 16: (4096 - 28) // 12 = 339, but the management
    # ALIGN(28 + 339*4, 16) = 1392 and 1392 + 339*8 = 4104 > 4096: 338, with
    # ALIGN(28 + 1352, 16) = 1392 of management and 4096 - 2704 - 1392 = 0 left.
    assert cache_estimate(I386, 0, 8, 16, 0) == (338, 0)
    # Off-slab: only the objects count.
    assert cache_estimate(I386, 0, 1100, 4, f.CFLGS_OFF_SLAB) == (3, 796)
    assert cache_estimate(I386, 2, 1100, 4, f.CFLGS_OFF_SLAB) == (14, 16384 - 15400)


def test_offslab_limit_bounds_objects_per_slab() -> None:
    # 600-byte objects off-slab: at most (600 - 28) // 4 = 143 per slab. With a
    # 128 KiB page... pages are 4 KiB here, so the limit is far: 6 per page.
    order = calculate_slab_order(I386, 600, 4, f.CFLGS_OFF_SLAB)
    assert (order.num, order.gfporder, order.left_over) == (6, 0, 496)
    # A 40-byte object forced off-slab would fit 102 per page, over its limit
    # of (40 - 28) // 4 = 3: no order is acceptable.
    assert calculate_slab_order(I386, 40, 4, f.CFLGS_OFF_SLAB).num == 0


def test_debug_layout_adds_red_zones_and_the_user_word() -> None:
    # 100 bytes with SLAB_RED_ZONE | SLAB_STORE_USER on i386: word-aligned 100,
    # red zoning aligns to REDZONE_ALIGN 8: 104 (obj_size), + 2*8 red zone =
    # 120, + 8 for the user word (REDZONE_ALIGN when red zoned) = 128.
    layout = kmem_cache_layout(I386, "dbg", 100, 0, f.SLAB_RED_ZONE | f.SLAB_STORE_USER)
    assert (layout.obj_size, layout.obj_offset, layout.buffer_size, layout.align) == (
        104,
        8,
        128,
        8,
    )
    # Red zone 1 just before the object, red zone 2 before the REDZONE_ALIGN
    # bytes that end with the user word.
    assert (layout.redzone1, layout.redzone2, layout.userword) == (0, 112, 124)
    # 4068 // 132 = 30; mgmt ALIGN(28 + 120, 8) = 152; 152 + 3840 = 3992.
    assert (layout.num, layout.left_over, layout.colour) == (30, 104, 1)


def test_store_user_alone_adds_a_word() -> None:
    layout = kmem_cache_layout(I386, "u", 100, 0, f.SLAB_STORE_USER)
    assert (layout.obj_size, layout.obj_offset, layout.buffer_size) == (100, 0, 104)
    assert layout.userword == 100


def test_red_zone_overrides_hwcache_align_but_not_a_larger_caller_alignment() -> None:
    kept = kmem_cache_layout(I386, "a", 100, 0, f.SLAB_RED_ZONE | HW)
    assert kept.flags & f.SLAB_RED_ZONE
    assert kept.align == 8
    # align 16 > __alignof__(unsigned long long) 8: debugging is dropped.
    dropped = kmem_cache_layout(I386, "b", 100, 16, f.SLAB_RED_ZONE | f.SLAB_STORE_USER)
    assert not dropped.flags & (f.SLAB_RED_ZONE | f.SLAB_STORE_USER)
    # The size was still rounded to REDZONE_ALIGN first: 104, then to 16: 112.
    assert (dropped.obj_size, dropped.buffer_size, dropped.obj_offset) == (104, 112, 0)


def test_hwcache_alignment_halves_for_small_objects() -> None:
    # Line 64: 20 bytes <= 32 halves it to 32; 20 <= 16 is false: align 32.
    layout = kmem_cache_layout(I386, "small", 20, 0, HW)
    assert (layout.align, layout.buffer_size) == (32, 32)
    # 10 bytes are 12 word-aligned: 64 -> 32 -> 16 (12 <= 16); 12 <= 8 fails.
    layout = kmem_cache_layout(I386, "tiny", 10, 0, HW)
    assert (layout.align, layout.buffer_size) == (16, 16)
    # Without HWCACHE_ALIGN: BYTES_PER_WORD.
    assert kmem_cache_layout(I386, "w", 21, 0, 0).buffer_size == 24
    assert kmem_cache_layout(X86_64, "w", 21, 0, 0).buffer_size == 24


@pytest.mark.parametrize(
    ("size", "align", "flags", "message"),
    [
        (3, 0, 0, "outside 4..4194304"),
        (0, 0, 0, "outside"),
        (-8, 0, 0, "outside"),
        ((4 << 20) + 1, 0, 0, "outside"),
        (64, 3, 0, "not 0 or a power of two"),
        (64, 8192, 0, "not 0 or a power of two"),
        (64, 0, 0x1, "outside CREATE_MASK"),
        (64, 0, f.SLAB_POISON | f.SLAB_DESTROY_BY_RCU, "SLAB_DESTROY_BY_RCU"),
        # The largest size with red zones no longer fits the largest slab.
        (4 << 20, 0, f.SLAB_RED_ZONE, "couldn't create cache"),
    ],
)
def test_kmem_cache_create_refuses(size: int, align: int, flags: int, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        kmem_cache_layout(I386, "bad", size, align, flags)


@pytest.mark.parametrize(
    ("buffer_size", "num", "expect"),
    [
        # enable_cpucache: limit by size, batchcount (limit + 1) / 2, shared 8 on
        # SMP up to a page; free_limit = (1 + CPUs) * batchcount + num.
        (32, 113, (120, 60, 8, 3 * 60 + 113)),
        (512, 8, (54, 27, 8, 3 * 27 + 8)),
        (2048, 2, (24, 12, 8, 3 * 12 + 2)),
        (8192, 1, (8, 4, 0, 3 * 4 + 1)),
        (262144, 1, (1, 1, 0, 3 * 1 + 1)),
    ],
)
def test_tunables(buffer_size: int, num: int, expect: tuple[int, int, int, int]) -> None:
    t = cpucache_tunables(I386, buffer_size, num)
    assert (t.limit, t.batchcount, t.shared, t.free_limit) == expect
    assert cpucache_tunables(SlabArch(cpus=1), 32, 113).shared == 0
