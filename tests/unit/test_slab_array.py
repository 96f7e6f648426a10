"""The per-CPU array cache (struct array_cache of mm/slab.c, 2.6.24): frees go
onto it and allocations come from it, most recently freed first; a full array
flushes its batchcount oldest objects to free_block; shrink, destroy, drain
and reclaim empty it, and cache_reap drains part of an untouched one."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from memsim.profiles.loader import load_profile
from memsim.services.slab import flags as f
from memsim.services.slab.cache import FREE, FULL, KmemCache, SlabEnv
from memsim.services.slab.core import SlabAllocator
from memsim.services.slab.errors import CacheBusy, DoubleFree
from memsim.services.slab.estimate import SlabArch
from memsim.services.slab.service import SlabService

PAGE_OFFSET = 0xC0000000


def env() -> SlabEnv:
    arch = SlabArch(page_size=4096, word_bytes=4, ull_align=8, cache_line=64, cpus=1, node_cpus=1)
    return SlabEnv(arch=arch, page_offset=PAGE_OFFSET, max_pfn=229376)


def on_array(cache: KmemCache) -> list[int]:
    """ac->entry[0:avail], the oldest first."""
    return [addr for addr, _, _ in cache.ac]


class CountingPages:
    """A page port that hands out fresh blocks and counts the calls."""

    def __init__(self, first_pfn: int = 0x1000) -> None:
        self.next_pfn = first_pfn
        self.alloc_calls = 0
        self.handed_out: set[tuple[int, int]] = set()
        self.given_back: list[tuple[int, int]] = []

    async def alloc(self, gfp_mask: int, order: int, count: int) -> list[int]:
        self.alloc_calls += 1
        span = 1 << order
        self.next_pfn = -(-self.next_pfn // span) * span
        pfns = [self.next_pfn + i * span for i in range(count)]
        self.next_pfn += count * span
        self.handed_out.update((pfn, order) for pfn in pfns)
        return pfns

    async def free(self, blocks: Sequence[tuple[int, int]]) -> None:
        self.given_back += blocks

    @property
    def held(self) -> set[tuple[int, int]]:
        return self.handed_out - set(self.given_back)


def test_a_free_goes_onto_the_array_and_its_slab_still_counts_it() -> None:
    cache = KmemCache(env(), "c", 1024)  # 4 per slab; limit 54, batchcount 27
    objs = cache.alloc(3, [10]).addresses
    assert cache.free(objs[:2]) == []
    assert on_array(cache) == objs[:2]
    # Free for the caller, in use for the slab.
    assert cache.objects() == objs[2:]
    assert cache.in_use == 1
    slab = cache.env.pagemap[10]
    assert slab.inuse == 3
    assert list(slab.free) == [3]
    assert not slab.active[0]
    assert not slab.active[1]
    info = cache.info()
    assert (info.active_objs, info.array_avail, info.in_use) == (3, 2, 1)
    assert cache.free_objects == 1


def test_a_free_past_the_limit_flushes_the_batchcount_oldest() -> None:
    # 65536 bytes: one object per order-4 slab; limit 8, batchcount 4, and
    # free_limit (1 + 1) * 4 + 1 = 9.
    cache = KmemCache(env(), "big", 65536)
    assert (cache.tunables.limit, cache.tunables.batchcount) == (8, 4)
    pfns = [16 * i for i in range(1, 10)]
    objs = cache.alloc(9, pfns).addresses
    assert cache.free(objs[:8]) == []
    assert on_array(cache) == objs[:8]
    assert len(cache.lists[FULL]) == 9  # every slab still counts its object
    assert cache.free(objs[8:]) == []
    # The 4 oldest went to free_block; the new one is on top.
    assert on_array(cache) == objs[4:9]
    assert list(cache.lists[FREE]) == pfns[3::-1]  # list_add: newest at the head
    assert cache.free_objects == 4
    assert cache.stats.frees == 9


def test_allocation_takes_the_most_recently_freed_object_first() -> None:
    cache = KmemCache(env(), "lifo", 64)
    objs = cache.alloc(5, [7]).addresses
    cache.free([objs[0], objs[3], objs[1]])
    assert cache.slabs_needed(3 + cache.free_objects) == 0
    assert cache.alloc(2, []).addresses == [objs[1], objs[3]]
    # The array's last object, then the slab's next free one.
    assert cache.alloc(2, []).addresses == [objs[0], objs[4] + 64]
    assert cache.array_avail == 0
    assert cache.ac_touched


def test_the_array_counts_when_planning_new_slabs() -> None:
    cache = KmemCache(env(), "plan", 1024)  # 4 per slab
    objs = cache.alloc(4, [10]).addresses
    cache.free(objs)
    assert cache.free_objects == 0
    assert cache.array_avail == 4
    assert cache.slabs_needed(4) == 0
    assert cache.slabs_needed(5) == 1
    result = cache.alloc(5, [11])
    assert result.addresses[:4] == objs[::-1]
    assert result.unused_pfns == []


async def test_a_kmalloc_kfree_cycle_reaches_a_steady_state_without_the_zone() -> None:
    slab = SlabAllocator(load_profile("x86_64"))
    pages = CountingPages()
    service = SlabService(slab, pages)
    cache = slab.kmalloc_cache(32)
    await service.shrink_cache(cache.name)
    first = await service.kmalloc(32, 256, 0)
    assert first.cache == cache.name
    await service.kfree(first.addresses)
    calls = pages.alloc_calls
    assert calls == 1
    grown = cache.stats.grown
    for _ in range(10):
        allocated = await service.kmalloc(32, 256, 0)
        assert await service.kfree(allocated.addresses) == 0
    assert pages.alloc_calls == calls
    assert pages.given_back == []
    assert cache.stats.grown == grown
    assert cache.stats.destroyed == 0


def test_a_second_free_of_an_object_on_the_array_is_a_double_free() -> None:
    a = SlabAllocator(load_profile("x86_32"))
    cache = a.create_cache("df", 64)
    x, y = a.cache_alloc("df", 2, [0x1000]).addresses
    a.cache_free("df", [x])
    with pytest.raises(DoubleFree, match="double free detected in cache 'df'"):
        a.cache_free("df", [x])
    with pytest.raises(DoubleFree):
        a.cache_free("df", [y, x])
    # Refused calls change nothing.
    assert on_array(cache) == [x]
    assert cache.objects() == [y]
    (k,) = a.kmalloc(32, 1, [0x1001]).addresses
    a.kfree([k])
    with pytest.raises(DoubleFree):
        a.kfree([k])


def test_a_write_after_free_is_found_when_the_array_hands_the_object_out() -> None:
    a = SlabAllocator(load_profile("x86_32"))
    cache = a.create_cache("uaf", 32, 0, f.SLAB_POISON | f.SLAB_RED_ZONE)
    obj, _ = a.cache_alloc("uaf", 2, [0x1000]).addresses
    a.cache_free("uaf", [obj])
    assert on_array(cache) == [obj]
    assert a.read(obj, 32) == b"\x6b" * 31 + b"\xa5"  # poisoned at the free
    a.write(obj + 7, b"\x00")
    a.write(obj + 32, b"\x00")  # and the second red zone
    assert a.log.total == 0
    assert a.cache_alloc("uaf", 1).addresses == [obj]
    log = a.log.since(0)
    assert log[0].startswith("Slab corruption: uaf start=")
    assert "000: 6b 6b 6b 6b 6b 6b 6b 00 6b 6b 6b 6b 6b 6b 6b 6b" in log
    assert any("redzone" in line for line in log), log
    assert cache.stats.errors == 2
    assert a.read(obj, 32) == b"\x5a" * 31 + b"\xa5"  # poisoned again for its user


def test_shrink_drains_the_array_and_releases_every_slab() -> None:
    cache = KmemCache(env(), "s", 1024)
    objs = cache.alloc(8, [10, 11]).addresses
    cache.free(objs)
    assert cache.array_avail == 8
    assert cache.num_slabs == 2
    assert sorted(cache.shrink()) == [(10, 0), (11, 0)]
    assert (cache.array_avail, cache.num_slabs, cache.free_objects) == (0, 0, 0)
    assert cache.env.pagemap == {}


def test_destroy_drains_the_array_but_is_refused_while_a_caller_holds_an_object() -> None:
    a = SlabAllocator(load_profile("x86_32"))
    cache = a.create_cache("gone", 1024)
    objs = a.cache_alloc("gone", 5, [0x1000, 0x1001]).addresses
    a.cache_free("gone", objs[1:])
    with pytest.raises(CacheBusy, match=r"Can't free all objects \(1 in use\)"):
        a.destroy_cache("gone")
    assert cache.array_avail == 4  # a refusal changes nothing
    a.cache_free("gone", objs[:1])
    assert cache.in_use == 0
    assert cache.active_objs == 5
    assert sorted(a.destroy_cache("gone")) == [(0x1000, 0), (0x1001, 0)]
    assert "gone" not in a.caches
    assert not any(s.cache is cache for s in a.env.pagemap.values())


async def test_drain_and_reclaim_empty_the_arrays_back_to_boot() -> None:
    slab = SlabAllocator(load_profile("x86_32"))
    pages = CountingPages()
    service = SlabService(slab, pages)
    await service.drain()
    boot = [(c.name, c.num_slabs) for c in slab.chain()]
    allocated = await service.kmalloc(64, 300, 0)
    dentries = await service.cache_alloc("dentry", 50, 0)
    await service.kfree(allocated.addresses)
    await service.cache_free("dentry", dentries)
    assert slab.cache(allocated.cache).array_avail > 0
    assert slab.cache("dentry").array_avail == 50
    await service.drain()
    assert all(c.array_avail == 0 for c in slab.chain())
    assert [(c.name, c.num_slabs) for c in slab.chain()] == boot
    assert pages.held == set()
    # Reclaim (shrink_slab) drains them too, before freeing free slabs.
    more = await service.cache_alloc("dentry", 100, 0)
    await service.cache_free("dentry", more[50:])
    scanned, freed = await service.reclaim(1)
    assert scanned == 50  # the objects callers still held
    assert all(c.array_avail == 0 for c in slab.chain())
    assert [(c.name, c.num_slabs) for c in slab.chain()] == boot
    assert pages.held == set()
    assert freed > 0


def test_reap_drains_a_fifth_of_an_untouched_array() -> None:
    cache = KmemCache(env(), "r", 64)  # limit 120, batchcount 60
    assert cache.tunables.limit == 120
    objs = cache.alloc(100, [20, 21]).addresses
    cache.free(objs)
    assert on_array(cache) == objs
    # The allocation touched the array: this reap only clears ac->touched.
    cache.reap()
    assert cache.array_avail == 100
    assert not cache.ac_touched
    # Untouched: (limit + 4) / 5 = 24 of the oldest go back to their slabs.
    cache.reap()
    assert on_array(cache) == objs[24:]
    cache.reap()
    assert on_array(cache) == objs[48:]
    # An allocation touches it again: the next reap leaves it alone.
    (again,) = cache.alloc(1, []).addresses
    assert again == objs[-1]
    cache.reap()
    assert on_array(cache) == objs[48:99]
    # Fewer than 24 left: half of them, rounded up, go.
    cache.reap()
    cache.reap()
    assert on_array(cache) == objs[96:99]
    cache.reap()
    assert on_array(cache) == objs[98:99]
    cache.reap()
    assert on_array(cache) == []
