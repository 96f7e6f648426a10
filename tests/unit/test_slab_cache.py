"""One kmem cache: slab lists, addresses, colouring, constructors, contents,
free_limit, shrink and reap (mm/slab.c of 2.6.24)."""

from __future__ import annotations

import pytest

from memsim.services.slab import flags as f
from memsim.services.slab.cache import FREE, FULL, PARTIAL, KmemCache, SlabEnv
from memsim.services.slab.errors import BadAddress, BadRequest, NoMemory
from memsim.services.slab.estimate import SlabArch
from memsim.services.zone import gfp as g

PAGE_OFFSET = 0xC0000000


def env(cpus: int = 2, max_pfn: int | None = 229376) -> SlabEnv:
    arch = SlabArch(
        page_size=4096, word_bytes=4, ull_align=8, cache_line=64, cpus=cpus, node_cpus=cpus
    )
    return SlabEnv(arch=arch, page_offset=PAGE_OFFSET, max_pfn=max_pfn)


def lists(cache: KmemCache) -> tuple[list[int], list[int], list[int]]:
    full, partial, free = (list(lst) for lst in cache.lists)
    return full, partial, free


def test_objects_are_addressed_in_the_direct_map_after_the_slab_descriptor() -> None:
    # vm_area_struct, 88 bytes: 44 per slab, management 28 + 44*4 = 204 bytes
    # on the slab, colour range 20 // 64 = 0.
    cache = KmemCache(env(), "vm_area_struct", 88)
    assert cache.slabs_needed(3) == 1
    result = cache.alloc(3, [0x1000, 0x1001])
    base = PAGE_OFFSET + 0x1000 * 4096
    assert result.addresses == [base + 204, base + 204 + 88, base + 204 + 176]
    assert result.unused_pfns == [0x1001]
    assert cache.env.pagemap[0x1000].cache is cache


def test_slabs_move_between_the_free_partial_and_full_lists() -> None:
    cache = KmemCache(env(), "c", 1024)  # off-slab 1024: 4 per page
    assert cache.num == 4
    a = cache.alloc(4, [10]).addresses
    assert lists(cache) == ([10], [], [])
    b = cache.alloc(2, [11]).addresses
    assert lists(cache) == ([10], [11], [])
    cache.free(a[:1])
    # On the array cache: its slab still counts it as in use.
    assert lists(cache) == ([10], [11], [])
    assert cache.array_avail == 1
    assert cache.drain_array() == []
    # free_block: a slab still in use goes to the tail of slabs_partial.
    assert lists(cache) == ([], [11, 10], [])
    cache.free(b)
    assert cache.drain_array() == []
    # Empty, and free_objects 1 + 4 = 5 <= free_limit: kept on slabs_free.
    assert lists(cache) == ([], [10], [11])
    assert cache.free_objects == 5
    # Partial slabs are used before free ones.
    assert cache.alloc(1, []).addresses == a[:1]
    assert lists(cache) == ([10], [], [11])
    info = cache.info()
    assert (info.active_objs, info.num_objs, info.active_slabs, info.num_slabs) == (4, 8, 1, 2)
    assert {s.list for s in cache.env.pagemap.values()} == {FULL, FREE}
    assert PARTIAL not in {s.list for s in cache.lists[FULL].values()}


def test_a_freed_object_is_handed_out_again_first() -> None:
    cache = KmemCache(env(), "lifo", 64)
    first = cache.alloc(5, [7]).addresses
    cache.free([first[2]])
    assert cache.alloc(1, []).addresses == [first[2]]


def test_colour_offsets_cycle_through_the_colour_range() -> None:
    # task_struct on i386: left over 208 = 3 colours of 64 bytes; management
    # ALIGN(3*4 + 28, 16) = 48 on the slab. Slab n starts its objects at
    # (n % 3) * 64 + 48.
    cache = KmemCache(env(), "task_struct", 1280, 16)
    assert (cache.layout.colour, cache.layout.colour_off) == (3, 64)
    pfns = [100, 101, 102, 103]
    addrs = cache.alloc(12, pfns).addresses
    starts = [addrs[i] - (PAGE_OFFSET + pfns[i // 3] * 4096) for i in range(0, 12, 3)]
    assert starts == [48, 64 + 48, 128 + 48, 48]


def test_higher_order_slabs_take_aligned_blocks_and_map_every_page() -> None:
    cache = KmemCache(env(), "size-8192", 8192, 8, f.SLAB_HWCACHE_ALIGN)
    assert cache.gfporder == 1
    with pytest.raises(BadRequest, match="does not start an order-1 block"):
        cache.alloc(1, [5])
    [addr] = cache.alloc(1, [6]).addresses
    assert addr == PAGE_OFFSET + 6 * 4096
    assert cache.env.pagemap[6] is cache.env.pagemap[7]


def test_constructor_runs_only_on_new_slabs() -> None:
    cache = KmemCache(env(), "ctor", 64, 0, 0, "serial")
    # 4068 // 68 = 59; management 28 + 59*4 = 264; 264 + 59*64 = 4040 fits.
    assert cache.num == 59
    objs = cache.alloc(2, [20]).addresses
    # Every object of the new slab was constructed, in index order.
    assert cache.stats.ctor_calls == cache.num
    assert cache.read(objs[0], 4) == (1).to_bytes(4, "little")
    assert cache.read(objs[1], 4) == (2).to_bytes(4, "little")
    cache.write(objs[0], b"left as it was")
    cache.free([objs[0]])
    again = cache.alloc(1, []).addresses
    assert again == [objs[0]]
    # Not constructed again: the bytes are the last user's.
    assert cache.read(objs[0], 14) == b"left as it was"
    assert cache.stats.ctor_calls == cache.num
    # 57 objects are left in the first slab; the 58th and 59th come from a
    # second slab, whose objects are all constructed, serials from num + 1.
    more = cache.alloc(cache.num, [21]).addresses
    assert cache.stats.ctor_calls == 2 * cache.num
    assert cache.read(more[57], 4) == (cache.num + 1).to_bytes(4, "little")
    assert cache.read(more[58], 4) == (cache.num + 2).to_bytes(4, "little")


@pytest.mark.parametrize(
    ("ctor", "head"),
    [
        ("zero", bytes(8)),
        ("pattern", bytes.fromhex("deadbeefdeadbeef")),
    ],
)
def test_named_constructors_fill_the_object(ctor: str, head: bytes) -> None:
    cache = KmemCache(env(), "c", 32, 0, 0, ctor)
    [addr] = cache.alloc(1, [30]).addresses
    assert cache.read(addr, 8) == head


def test_list_head_constructor_points_the_first_two_words_at_the_object() -> None:
    cache = KmemCache(env(), "c", 32, 0, 0, "list_head")
    [addr] = cache.alloc(1, [31]).addresses
    word = addr.to_bytes(4, "little")
    assert cache.read(addr, 12) == word + word + bytes(4)


def test_unknown_constructor_is_refused() -> None:
    with pytest.raises(BadRequest, match="unknown constructor 'bogus'"):
        KmemCache(env(), "c", 32, 0, 0, "bogus")


def test_gfp_zero_clears_the_object() -> None:
    cache = KmemCache(env(), "z", 32, 0, 0, "pattern")
    [addr] = cache.alloc(1, [40], g.GFP_KERNEL | g.__GFP_ZERO).addresses
    assert cache.read(addr, 32) == bytes(32)


def test_reads_and_writes_stay_inside_one_slab() -> None:
    cache = KmemCache(env(), "rw", 64)
    [addr] = cache.alloc(1, [50]).addresses
    slab_end = PAGE_OFFSET + 51 * 4096
    cache.write(slab_end - 4, b"tail")
    assert cache.read(slab_end - 4, 4) == b"tail"
    with pytest.raises(BadAddress, match="run past the end of its slab"):
        cache.write(slab_end - 3, b"tail")
    with pytest.raises(BadAddress, match="not in a slab of rw"):
        cache.read(slab_end, 1)
    with pytest.raises(BadRequest, match="not a byte count"):
        cache.read(addr, -1)


def test_empty_slabs_beyond_free_limit_go_back_at_once() -> None:
    # 65536-byte objects: limit 8, batchcount 4; with 2 CPUs free_limit =
    # (1 + 2) * 4 + 1 = 13 free objects, one per 16-page slab.
    cache = KmemCache(env(), "big", 65536)
    assert (cache.num, cache.gfporder, cache.tunables.free_limit) == (1, 4, 13)
    pfns = [16 * i for i in range(1, 21)]
    addrs = cache.alloc(20, pfns).addresses
    # The array takes 8; the 9th, 13th and 17th frees each flush the 4
    # oldest to free_block first: 12 empty slabs, 8 objects on the array.
    assert cache.free(addrs) == []
    assert len(cache.lists[FREE]) == 12
    assert cache.array_avail == 8
    released = cache.drain_array()
    # The first 13 empty slabs are kept; the 14th to 20th go back.
    assert released == [(pfn, 4) for pfn in pfns[13:]]
    assert len(cache.lists[FREE]) == 13
    assert cache.free_objects == 13
    # kmem_cache_shrink releases the rest, from the tail of slabs_free.
    assert sorted(cache.shrink()) == [(pfn, 4) for pfn in pfns[:13]]
    assert cache.num_slabs == 0
    assert cache.env.pagemap == {}
    assert cache.stats.destroyed == 20


def test_reap_skips_a_recently_touched_free_list_then_frees_a_fifth() -> None:
    cache = KmemCache(env(), "r", 65536)
    addrs = cache.alloc(10, [16 * i for i in range(1, 11)]).addresses
    cache.free(addrs)
    cache.drain_array()
    assert len(cache.lists[FREE]) == 10
    # The allocation that grew went past an empty partial list: touched.
    assert cache.reap() == []
    # (free_limit + 5*num - 1) // (5*num) = (13 + 4) // 5 = 3 slabs a pass.
    assert len(cache.reap()) == 3
    assert len(cache.lists[FREE]) == 7


def test_not_enough_pages_is_refused_and_nothing_changes() -> None:
    cache = KmemCache(env(), "n", 1024)
    with pytest.raises(NoMemory, match="needs 2 new slab"):
        cache.alloc(5, [60])
    assert cache.num_slabs == 0
    assert cache.env.pagemap == {}
    assert cache.stats.allocations == 0


@pytest.mark.parametrize(
    ("pfns", "message"),
    [
        ([229376], "not in the direct map"),  # highmem on a 1 GiB i386 box
        ([-1], "does not start"),
        ([70, 70], "already in use"),
    ],
)
def test_bad_pfns_are_refused(pfns: list[int], message: str) -> None:
    cache = KmemCache(env(), "p", 64)
    with pytest.raises(BadRequest, match=message):
        cache.alloc(1, pfns)
    assert cache.env.pagemap == {}


def test_a_pfn_already_in_a_slab_is_refused() -> None:
    shared = env()
    one = KmemCache(shared, "one", 64)
    two = KmemCache(shared, "two", 64)
    one.alloc(1, [80])
    with pytest.raises(BadRequest, match="pfn 0x50 is already in use"):
        two.alloc(1, [80])


def test_page_gfp_adds_the_caches_own_flags() -> None:
    e = env()
    dentry = KmemCache(e, "dentry", 124, 4, f.SLAB_RECLAIM_ACCOUNT)
    assert dentry.page_gfp(g.GFP_KERNEL) == g.GFP_KERNEL | g.__GFP_RECLAIMABLE
    dma = KmemCache(e, "size-32(DMA)", 32, 8, f.SLAB_CACHE_DMA | f.SLAB_HWCACHE_ALIGN)
    assert dma.page_gfp(g.GFP_KERNEL | g.GFP_DMA) == g.GFP_KERNEL | g.GFP_DMA
    # __GFP_ZERO is for the object, not the pages.
    assert dentry.page_gfp(g.GFP_KERNEL | g.__GFP_ZERO) == g.GFP_KERNEL | g.__GFP_RECLAIMABLE
    nommu = SlabEnv(nommu=True)
    assert KmemCache(nommu, "n", 64).page_gfp(g.GFP_KERNEL) == g.GFP_KERNEL | g.__GFP_COMP


@pytest.mark.parametrize(
    ("gfp", "message"),
    [
        (g.GFP_HIGHUSER, "__GFP_HIGHMEM"),
        (g.GFP_DMA32, "__GFP_DMA32"),
        (1 << 30, "within __GFP_BITS_MASK"),
        (g.GFP_KERNEL | g.GFP_DMA, "disagree on GFP_DMA"),
    ],
)
def test_gfp_masks_slab_cannot_use_are_refused(gfp: int, message: str) -> None:
    cache = KmemCache(env(), "gfp", 64)
    with pytest.raises(BadRequest, match=message):
        cache.alloc(1, [90], gfp)
    assert cache.num_slabs == 0


@pytest.mark.parametrize("name", ["", "has space", "tab\tname", "x" * 65, "naïve"])
def test_cache_names_that_would_break_slabinfo_are_refused(name: str) -> None:
    with pytest.raises(BadRequest, match="cache name"):
        KmemCache(env(), name, 64)


@pytest.mark.parametrize("count", [0, -1, 1 << 17])
def test_batch_counts_are_bounded(count: int) -> None:
    with pytest.raises(BadRequest, match="count of objects"):
        KmemCache(env(), "c", 64).alloc(count, [])
