"""The slab allocator: boot caches, kmalloc, kfree, ksize, reclaim and the
meminfo counters."""

from __future__ import annotations

import pytest

from memsim.profiles.loader import load_profile
from memsim.services.slab import flags as f
from memsim.services.slab.core import PagePlan, SlabAllocator
from memsim.services.slab.errors import BadRequest, NotAllocated, WrongCache
from memsim.services.slab.flags import format_slab_flags, parse_slab_flags
from memsim.services.slab.klog import KernelLog
from memsim.services.zone import gfp as g

BOOT = ["inode_cache", "dentry", "names_cache", "buffer_head", "mm_struct", "vm_area_struct"]


def allocator(profile: str = "x86_32") -> SlabAllocator:
    return SlabAllocator(load_profile(profile))


def test_the_chain_lists_the_newest_cache_first_and_kmalloc_last() -> None:
    a = allocator()
    names = [c.name for c in a.chain()]
    assert names[:7] == [*BOOT, "task_struct"]
    # kmem_cache_init made size-32 (arraycache_init, 24 bytes) and size-64
    # (kmem_list3, 56 bytes) first, then each size-N(DMA) after its size-N.
    assert names[-6:] == [
        "size-128(DMA)",
        "size-128",
        "size-64(DMA)",
        "size-32(DMA)",
        "size-64",
        "size-32",
    ]
    assert names[7:9] == ["size-4194304(DMA)", "size-4194304"]
    # 64-bit: kmem_list3 is 104 bytes, so size-128 is the second cache made.
    assert [c.name for c in allocator("x86_64").chain()][-3:] == [
        "size-32(DMA)",
        "size-128",
        "size-32",
    ]


def test_no_dma_caches_without_zone_dma() -> None:
    a = allocator("nommu")
    assert not any(name.endswith("(DMA)") for name in a.caches)
    assert a.kmalloc_cache(100, g.GFP_KERNEL | g.GFP_DMA).name == "size-128"
    assert "size-96" in a.caches


@pytest.mark.parametrize(
    ("name", "objsize", "per_slab", "pages"),
    [
        # Worked out in test_slab_estimate: i386 sizes, 64-byte lines.
        ("task_struct", 1280, 3, 1),
        ("vm_area_struct", 88, 44, 1),
        # mm_struct 416, HWCACHE 64: ALIGN(416, 64) = 448; 4068 // 452 = 9;
        # management ALIGN(28 + 36, 64) = 64; 64 + 9*448 = 4096 just fits.
        ("mm_struct", 448, 9, 1),
        # dentry 124, word aligned: 4068 // 128 = 31; 28 + 124 + 31*124 = 3996.
        ("dentry", 124, 31, 1),
        # inode_cache 308: 4068 // 312 = 13; 28 + 52 + 13*308 = 4084.
        ("inode_cache", 308, 13, 1),
        # buffer_head 48: 4068 // 52 = 78; 28 + 312 + 78*48 = 4084.
        ("buffer_head", 48, 78, 1),
        ("names_cache", 4096, 1, 1),
        ("size-192", 192, 20, 1),
        ("size-131072", 131072, 1, 32),
    ],
)
def test_boot_caches_on_i386(name: str, objsize: int, per_slab: int, pages: int) -> None:
    cache = allocator().cache(name)
    assert (cache.buffer_size, cache.num, 1 << cache.gfporder) == (objsize, per_slab, pages)


def test_boot_cache_flags() -> None:
    a = allocator()
    assert a.cache("dentry").reclaimable
    assert a.cache("inode_cache").reclaimable
    assert not a.cache("task_struct").reclaimable
    assert a.cache("inode_cache").ctor is not None
    assert a.cache("size-64(DMA)").gfpflags == g.GFP_DMA


def test_kmalloc_picks_the_size_class_and_dma_caches() -> None:
    a = allocator()
    plan = a.plan_kmalloc(100, 3)
    assert plan == PagePlan(1, 0, g.GFP_KERNEL, "size-128")
    result = a.kmalloc(100, 3, [500])
    assert len(result.addresses) == 3
    assert a.ksize(result.addresses[0]) == 128
    dma = a.plan_kmalloc(100, 1, g.GFP_KERNEL | g.GFP_DMA)
    assert dma == PagePlan(1, 0, g.GFP_KERNEL | g.GFP_DMA, "size-128(DMA)")
    (addr,) = a.kmalloc(100, 1, [10], g.GFP_KERNEL | g.GFP_DMA).addresses
    assert a.env.pagemap[10].cache.name == "size-128(DMA)"
    assert a.kfree([addr, *result.addresses]) == []
    # Free for kmalloc's callers; on the array cache, so still active for slabinfo.
    assert a.cache("size-128").in_use == 0
    assert a.cache("size-128").active_objs == a.cache("size-128").array_avail == 3


def test_kmalloc_larger_than_a_page_takes_higher_orders() -> None:
    a = allocator()
    assert a.plan_kmalloc(5000, 2) == PagePlan(2, 1, g.GFP_KERNEL, "size-8192")


def test_kfree_only_frees_kmalloc_objects() -> None:
    a = allocator()
    (task,) = a.cache_alloc("task_struct", 1, [600]).addresses
    with pytest.raises(WrongCache, match="object of cache task_struct, not from kmalloc"):
        a.kfree([task])
    with pytest.raises(NotAllocated, match="not an object from kmalloc"):
        a.kfree([0xC0000000 + 601 * 4096])
    with pytest.raises(NotAllocated, match="not a slab object"):
        a.ksize(0x1234)
    # ksize works for any cache's object, as the kernel's does.
    assert a.ksize(task) == 1280


def test_objects_of_another_cache_are_refused_by_kmem_cache_free() -> None:
    a = allocator()
    (vma,) = a.cache_alloc("vm_area_struct", 1, [700]).addresses
    with pytest.raises(WrongCache, match="object of cache vm_area_struct, not of mm_struct"):
        a.cache_free("mm_struct", [vma])


def test_destroy_gives_back_the_free_slabs() -> None:
    a = allocator()
    a.create_cache("mine", 200, 0, f.SLAB_HWCACHE_ALIGN)
    objs = a.cache_alloc("mine", 5, [800]).addresses
    a.cache_free("mine", objs)
    assert a.destroy_cache("mine") == [(800, 0)]
    assert "mine" not in a.caches
    assert a.env.pagemap == {}


def test_meminfo_slab_counters() -> None:
    a = allocator()
    a.cache_alloc("dentry", 32, [900, 901])  # 31 per slab: 2 slabs
    a.cache_alloc("task_struct", 3, [902])
    a.kmalloc(5000, 1, [904])  # size-8192: 2 pages
    pages = a.slab_pages()
    assert (pages.reclaimable, pages.unreclaimable, pages.total) == (2, 3, 5)


def test_shrink_frees_free_slabs_then_the_oldest_reclaimable_objects() -> None:
    a = allocator()
    dentries = a.cache_alloc("dentry", 31, [1000]).addresses  # one full slab
    inodes = a.cache_alloc("inode_cache", 13, [1001]).addresses  # one full slab
    more = a.cache_alloc("dentry", 2, [1002]).addresses
    tasks = a.cache_alloc("task_struct", 3, [1003]).addresses
    a.cache_free("task_struct", tasks)  # an empty task_struct slab is kept
    assert a.reclaimable_objects() == 31 + 13 + 2
    result = a.shrink(33)
    # The free task_struct slab goes first; then the 31 dentries and the
    # first two inodes, oldest first, which empties the first dentry slab.
    assert result.objects == dentries + inodes[:2]
    assert sorted(result.pages) == [(1000, 0), (1003, 0)]
    assert result.nr_pages == 2
    assert a.cache("dentry").objects() == more
    assert a.cache("inode_cache").objects() == inodes[2:]
    assert a.slab_pages().reclaimable == 2
    # nr_to_scan 0 only releases free slabs.
    assert a.shrink(0).objects == []


def test_reap_releases_free_slabs_a_few_at_a_time() -> None:
    a = allocator()
    objs = a.kmalloc(60000, 10, [16 * i for i in range(100, 110)]).addresses
    a.kfree(objs)
    a.reap()  # the growth touched slabs_free: skipped once
    released = a.reap()
    # size-65536: free_limit (1 + 2) * 4 + 1 = 13; (13 + 4) // 5 = 3 a pass.
    assert len(released) == 3
    assert all(order == 4 for _, order in released)


def test_create_cache_with_a_constructor_and_flags() -> None:
    a = allocator()
    cache = a.create_cache("objs", 100, 16, f.SLAB_RECLAIM_ACCOUNT, "pattern")
    assert a.chain()[0] is cache
    info = cache.info()
    assert (info.obj_size, info.buffer_size, info.align, info.ctor) == (100, 112, 16, "pattern")
    assert info.reclaimable
    assert info.num_slabs == 0


def test_slab_flags_parse_and_format() -> None:
    mask = parse_slab_flags("SLAB_HWCACHE_ALIGN|SLAB_POISON")
    assert mask == f.SLAB_HWCACHE_ALIGN | f.SLAB_POISON == 0x2800
    assert parse_slab_flags("0x20000") == f.SLAB_RECLAIM_ACCOUNT
    assert parse_slab_flags("") == 0
    assert format_slab_flags(mask | f.CFLGS_OFF_SLAB) == (
        "SLAB_POISON|SLAB_HWCACHE_ALIGN|CFLGS_OFF_SLAB"
    )
    with pytest.raises(BadRequest, match="unknown slab flag 'SLAB_NOPE'"):
        parse_slab_flags("SLAB_NOPE")


def test_the_kernel_log_is_a_ring_that_counts_every_line() -> None:
    log = KernelLog(max_lines=3)
    for i in range(5):
        log.printk(f"line {i}")
    assert log.total == 5
    assert list(log.lines) == ["line 2", "line 3", "line 4"]
    assert log.since(4) == ["line 4"]
    assert log.since(0) == ["line 2", "line 3", "line 4"]
    assert log.since(5) == []
