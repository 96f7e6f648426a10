"""Random allocation and free sequences keep every slab invariant: the lists
hold the slabs their use says they should, in_use is what is allocated and
active_objs that and the array cache's objects, the array holds at most limit
freed objects that their slabs still count, free_objects and the page map
agree with the slabs, every page handed in is either in a slab or handed back
exactly once, and object bytes survive."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from memsim.profiles.loader import load_profile
from memsim.services.slab import flags as f
from memsim.services.slab.cache import FREE, FULL, PARTIAL, KmemCache
from memsim.services.slab.core import SlabAllocator

caches = st.sampled_from(
    [
        ("vm_area_struct", 0, 0, None),  # on-slab, 44 per page
        ("p", 100, f.SLAB_POISON | f.SLAB_RED_ZONE | f.SLAB_STORE_USER, "serial"),
        ("c", 700, f.SLAB_HWCACHE_ALIGN, "zero"),  # off-slab, coloured
        ("big", 20000, 0, None),  # order 3, one per slab, small free_limit
    ]
)
steps = st.lists(
    st.tuples(
        st.sampled_from(["alloc", "free", "shrink", "reap", "write"]),
        st.integers(1, 120),
        st.integers(0, 10_000),
    ),
    max_size=40,
)


def check(cache: KmemCache, allocated: set[int]) -> None:
    assert set(cache.live) == allocated
    assert cache.in_use == len(allocated)
    assert cache.active_objs == len(allocated) + cache.array_avail
    assert cache.array_avail <= cache.tunables.limit
    on_array: dict[int, set[int]] = {}
    for addr, slab, idx in cache.ac:
        assert addr not in allocated
        assert cache.env.slab_of(addr) is slab
        assert not slab.active[idx]
        assert idx not in on_array.setdefault(slab.pfn, set())
        on_array[slab.pfn].add(idx)
    free_objects = 0
    for kind, lst in zip((FULL, PARTIAL, FREE), cache.lists, strict=True):
        for pfn, slab in lst.items():
            assert slab.pfn == pfn
            assert slab.list == kind
            assert slab.cache is cache
            cached = on_array.get(pfn, set())
            assert slab.inuse == sum(slab.active) + len(cached) == cache.num - len(slab.free)
            assert sorted(slab.free) == [
                i for i in range(cache.num) if not slab.active[i] and i not in cached
            ]
            if kind == FULL:
                assert slab.inuse == cache.num
            elif kind == PARTIAL:
                assert 0 < slab.inuse < cache.num
            else:
                assert slab.inuse == 0
            free_objects += cache.num - slab.inuse
    assert cache.free_objects == free_objects
    pages = [
        p
        for lst in cache.lists
        for s in lst.values()
        for p in range(s.pfn, s.pfn + (1 << cache.gfporder))
    ]
    assert sorted(pages) == sorted(p for p, s in cache.env.pagemap.items() if s.cache is cache)
    info = cache.info()
    assert info.num_objs - info.active_objs == cache.free_objects


@settings(max_examples=60, deadline=None)
@given(which=caches, script=steps)
def test_random_sequences_keep_the_invariants(
    which: tuple[str, int, int, str | None], script: list[tuple[str, int, int]]
) -> None:
    a = SlabAllocator(load_profile("x86_32"))
    name, size, flags, ctor = which
    cache = a.cache(name) if not size else a.create_cache(name, size, 0, flags, ctor)
    span = 1 << cache.gfporder
    next_pfn = 4096
    handed_in: set[int] = set()
    handed_back: list[int] = []
    allocated: set[int] = set()
    written: dict[int, bytes] = {}
    for what, n, pick in script:
        if what == "alloc":
            blocks = cache.slabs_needed(n) + pick % 2  # sometimes one too many
            pfns = [next_pfn + i * span for i in range(blocks)]
            next_pfn += blocks * span
            handed_in.update(pfns)
            result = a.cache_alloc(name, n, pfns)
            assert len(result.addresses) == n
            assert not allocated & set(result.addresses)
            allocated.update(result.addresses)
            handed_back += result.unused_pfns
        elif what == "free" and allocated:
            ordered = sorted(allocated)
            victims = ordered[pick % len(ordered) :][:n]
            handed_back += [pfn for pfn, _ in a.cache_free(name, victims)]
            allocated.difference_update(victims)
            for v in victims:
                written.pop(v, None)
        elif what == "shrink":
            handed_back += [pfn for pfn, _ in a.shrink_cache(name)]
        elif what == "reap":
            handed_back += [pfn for pfn, _ in cache.reap()]
        elif what == "write" and allocated:
            obj = sorted(allocated)[pick % len(allocated)]
            data = bytes([n]) * min(n, cache.obj_size)
            a.write(obj, data)
            written[obj] = data
        check(cache, allocated)
        for obj, data in written.items():
            assert a.read(obj, len(data)) == data
    # Every block handed in is in a slab now or was handed back, never both.
    in_slabs = {s.pfn for lst in cache.lists for s in lst.values()}
    assert len(handed_back) == len(set(handed_back))
    assert in_slabs | set(handed_back) == handed_in
    assert not in_slabs & set(handed_back)
    assert a.log.total == 0
    # Free everything: the cache can then be emptied completely.
    if allocated:
        a.cache_free(name, sorted(allocated))
    a.shrink_cache(name)
    assert cache.num_slabs == 0
    assert cache.free_objects == 0
