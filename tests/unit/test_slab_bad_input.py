"""Bad input to the slab core: a clear error, and nothing changed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from memsim.profiles.loader import load_profile
from memsim.services.slab import flags as f
from memsim.services.slab.core import SlabAllocator
from memsim.services.slab.errors import (
    BadAddress,
    BadRequest,
    CacheBusy,
    DoubleFree,
    DuplicateCache,
    NoMemory,
    NotAllocated,
    SlabError,
    UnknownArea,
    UnknownCache,
    WrongCache,
)
from memsim.services.zone import gfp as g


def state(a: SlabAllocator) -> Any:
    """Everything a refused call must leave as it was."""
    caches = []
    for c in a.chain():
        slabs = [
            (s.pfn, s.list, tuple(s.free), bytes(s.active), s.inuse, bytes(s.mem))
            for lst in c.lists
            for s in lst.values()
        ]
        caches.append(
            (c.name, c.info(), tuple(c.live.items()), slabs, c.colour_next, c.free_objects)
        )
    areas = [(v.addr, v.size, tuple(v.pfns), v.caller) for v in a.vm.areas]
    return caches, a.log.total, sorted(a.env.pagemap), areas, sorted(a.vm.pfns)


@pytest.fixture
def busy() -> SlabAllocator:
    """A machine with objects in several caches and a vmalloc area."""
    a = SlabAllocator(load_profile("x86_32"))
    a.create_cache("mine", 64, 0, f.SLAB_POISON | f.SLAB_RED_ZONE, "serial")
    a.cache_alloc("mine", 3, [100])
    a.cache_alloc("task_struct", 2, [101])
    a.kmalloc(100, 2, [102])
    a.vmalloc(10000, [200, 201, 202], "loader+0x10/0x40")
    return a


def objects(a: SlabAllocator, name: str) -> list[int]:
    return a.cache(name).objects()


CASES: list[tuple[str, Callable[[SlabAllocator], object], type[SlabError], str]] = [
    ("kmalloc 0", lambda a: a.kmalloc(0, 1, [300]), BadRequest, "not positive"),
    ("kmalloc -5", lambda a: a.kmalloc(-5, 1, [300]), BadRequest, "not positive"),
    (
        "kmalloc too big",
        lambda a: a.plan_kmalloc((4 << 20) + 1),
        BadRequest,
        "larger than the largest size class",
    ),
    ("kmalloc highmem", lambda a: a.kmalloc(64, 1, [300], g.GFP_HIGHUSER), BadRequest, "HIGHMEM"),
    ("kmalloc no pages", lambda a: a.kmalloc(4000, 1, []), NoMemory, "needs 1 new slab"),
    ("kmalloc count 0", lambda a: a.kmalloc(64, 0, []), BadRequest, "count of objects"),
    ("unknown cache", lambda a: a.cache_alloc("nope", 1, [300]), UnknownCache, "'nope'"),
    ("unknown plan", lambda a: a.plan_cache_alloc("nope", 1), UnknownCache, "'nope'"),
    ("destroy unknown", lambda a: a.destroy_cache("nope"), UnknownCache, "'nope'"),
    (
        "duplicate",
        lambda a: a.create_cache("mine", 32),
        DuplicateCache,
        "duplicate cache mine",
    ),
    (
        "duplicate boot",
        lambda a: a.create_cache("size-32", 32),
        DuplicateCache,
        "duplicate cache size-32",
    ),
    ("bad size", lambda a: a.create_cache("x", 2), BadRequest, "outside 4..4194304"),
    ("bad flags", lambda a: a.create_cache("x", 64, 0, 1 << 31), BadRequest, "CREATE_MASK"),
    ("bad name", lambda a: a.create_cache("a b", 64), BadRequest, "without blanks"),
    (
        "destroy busy",
        lambda a: a.destroy_cache("mine"),
        CacheBusy,
        "Can't free all objects",
    ),
    ("destroy boot", lambda a: a.destroy_cache("dentry"), CacheBusy, "kernel's own"),
    (
        "double free",
        lambda a: a.cache_free("mine", [objects(a, "mine")[0]] * 2),
        DoubleFree,
        "twice in one batch",
    ),
    (
        "wrong cache",
        lambda a: a.cache_free("mine", [objects(a, "task_struct")[0]]),
        WrongCache,
        "object of cache task_struct",
    ),
    (
        "free of a non-object",
        lambda a: a.cache_free("mine", [objects(a, "mine")[0] + 4]),
        NotAllocated,
        "not the start of an object",
    ),
    (
        "free of nothing",
        lambda a: a.cache_free("mine", [0xDEAD0000]),
        NotAllocated,
        "in no slab",
    ),
    (
        "good then bad free",
        lambda a: a.cache_free("mine", [*objects(a, "mine")[:2], 0xDEAD0000]),
        NotAllocated,
        "in no slab",
    ),
    (
        "kfree of a cache object",
        lambda a: a.kfree([objects(a, "size-128")[0], objects(a, "mine")[0]]),
        WrongCache,
        "not from kmalloc",
    ),
    (
        "kfree twice",
        lambda a: a.kfree([objects(a, "size-128")[0]] * 2),
        DoubleFree,
        "twice in one batch",
    ),
    ("kfree empty", lambda a: a.kfree([]), BadRequest, "count of objects"),
    (
        "pfn in use",
        lambda a: a.cache_alloc("mine", 100, [100, 300]),
        BadRequest,
        "already in use",
    ),
    (
        "pfn of vmalloc",
        lambda a: a.cache_alloc("dentry", 1, [200]),
        BadRequest,
        "already in use",
    ),
    ("highmem pfn", lambda a: a.kmalloc(64, 1, [240000]), BadRequest, "direct map"),
    (
        "read outside",
        lambda a: a.read(0xC0000000 + 400 * 4096, 4),
        BadAddress,
        "not in any slab",
    ),
    ("write past", lambda a: a.write(objects(a, "mine")[0], b"x" * 5000), BadAddress, "past"),
    ("shrink -1", lambda a: a.shrink(-1), BadRequest, "nr_to_scan"),
    ("vmalloc 0", lambda a: a.plan_vmalloc(0), BadRequest, "positive"),
    ("vmalloc huge", lambda a: a.plan_vmalloc(2 << 30), BadRequest, "num_physpages"),
    ("vmalloc short", lambda a: a.vmalloc(9000, [300, 301]), NoMemory, "needs 3 pages"),
    ("vmalloc slab pfn", lambda a: a.vmalloc(100, [100]), BadRequest, "already in use"),
    ("vmalloc dup pfn", lambda a: a.vmalloc(5000, [300, 300]), BadRequest, "already in use"),
    ("vfree unaligned", lambda a: a.vfree(0xF8800010), BadRequest, "bad address"),
    ("vfree unknown", lambda a: a.vfree(0xF8900000), UnknownArea, "nonexistent vm area"),
]


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_refused_calls_change_nothing(
    busy: SlabAllocator,
    call: Callable[[SlabAllocator], object],
    error: type[SlabError],
    message: str,
) -> None:
    before = state(busy)
    with pytest.raises(error, match=message):
        call(busy)
    assert state(busy) == before


def test_a_refused_call_leaves_the_allocator_usable(busy: SlabAllocator) -> None:
    with pytest.raises(NoMemory):
        busy.kmalloc(4000, 1, [])
    assert len(busy.kmalloc(4000, 1, [300]).addresses) == 1
