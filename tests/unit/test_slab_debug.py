"""SLAB_POISON, SLAB_RED_ZONE and SLAB_STORE_USER: corruption found as
CONFIG_DEBUG_SLAB of 2.6.24 finds it, reported in its words."""

from __future__ import annotations

import pytest

from memsim.profiles.loader import load_profile
from memsim.services.slab import flags as f
from memsim.services.slab.core import SlabAllocator
from memsim.services.slab.debug import RED_ACTIVE, RED_INACTIVE
from memsim.services.slab.errors import DoubleFree

PFN = 0x1000
BASE = 0xC0000000 + PFN * 4096  # 0xc1000000


def allocator(profile: str = "x86_32") -> SlabAllocator:
    return SlabAllocator(load_profile(profile))


def new_lines(a: SlabAllocator, since: int) -> list[str]:
    return a.log.since(since)


def test_use_after_free_is_reported_at_the_next_allocation() -> None:
    a = allocator()
    # 32 bytes, word aligned: 113 per slab behind 28 + 113*4 = 480 bytes of
    # management, so object 0 is at 0x1e0 and object 1 at 0x200.
    cache = a.create_cache("uaf", 32, 0, f.SLAB_POISON)
    obj0, obj1 = a.cache_alloc("uaf", 2, [PFN]).addresses
    assert (obj0, obj1) == (BASE + 0x1E0, BASE + 0x200)
    # Allocated objects are refilled with POISON_INUSE, ending in POISON_END.
    assert a.read(obj0, 32) == b"\x5a" * 31 + b"\xa5"
    a.cache_free("uaf", [obj0])
    assert a.read(obj0, 32) == b"\x6b" * 31 + b"\xa5"
    a.write(obj0 + 5, b"\x00")
    assert a.log.total == 0
    assert a.cache_alloc("uaf", 1).addresses == [obj0]
    assert new_lines(a, 0) == [
        "Slab corruption: uaf start=c10001e0, len=32",
        "000: 6b 6b 6b 6b 6b 00 6b 6b 6b 6b 6b 6b 6b 6b 6b 6b",
        "Next obj: start=c1000200, len=32",
        "000: 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a",
        "010: 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a a5",
    ]
    assert cache.stats.errors == 1
    # The object was poisoned again for its new user.
    assert a.read(obj0, 32) == b"\x5a" * 31 + b"\xa5"


def test_a_single_flipped_bit_suggests_bad_ram() -> None:
    a = allocator()
    a.create_cache("bit", 32, 0, f.SLAB_POISON)
    obj0, _ = a.cache_alloc("bit", 2, [PFN]).addresses
    a.cache_free("bit", [obj0])
    a.write(obj0 + 3, bytes([0x6B ^ 0x10]))
    a.cache_alloc("bit", 1)
    assert new_lines(a, 0)[1:4] == [
        "000: 6b 6b 6b 7b 6b 6b 6b 6b 6b 6b 6b 6b 6b 6b 6b 6b",
        "Single bit error detected. Probably bad RAM.",
        "Run memtest86+ or a similar memory test tool.",
    ]


def report(lines: list[str]) -> list[str]:
    """The lines check_poison_obj prints for the damaged object itself."""
    out: list[str] = []
    for line in lines[1:]:
        if line.startswith(("Prev obj", "Next obj")):
            break
        out.append(line[:4])
    return out


@pytest.mark.parametrize(
    ("second_damage", "dumped"),
    [
        # check_poison_obj dumps the damaged line, adds 16, then its loop adds
        # 1: byte 16 is never looked at, byte 17 is.
        (16, ["000:"]),
        (17, ["000:", "010:"]),
        (33, ["000:", "020:"]),
    ],
)
def test_the_poison_check_skips_the_byte_after_a_damaged_line(
    second_damage: int, dumped: list[str]
) -> None:
    a = allocator()
    a.create_cache("skip", 48, 0, f.SLAB_POISON)
    obj, _ = a.cache_alloc("skip", 2, [PFN]).addresses
    a.cache_free("skip", [obj])
    a.write(obj + 3, b"\x00")
    a.write(obj + second_damage, b"\x00")
    a.cache_alloc("skip", 1)
    assert report(a.log.since(0)) == dumped


def test_a_write_past_the_end_hits_the_red_zone() -> None:
    a = allocator()
    # 24 bytes, red zoned: red zone 1 (8), object (24), red zone 2 (8) = 40,
    # aligned to 8. 4068 // 44 = 92 per slab; management ALIGN(28 + 368, 8) =
    # 400 = 0x190: buffer 0 at 0x190, the object at 0x198.
    cache = a.create_cache("rz", 24, 0, f.SLAB_RED_ZONE)
    (obj,) = a.cache_alloc("rz", 1, [PFN]).addresses
    assert obj == BASE + 0x198
    assert a.read(obj - 8, 8) == RED_ACTIVE.to_bytes(8, "little")
    a.write(obj + 24, b"!")  # one byte past the end
    a.cache_free("rz", [obj])
    assert new_lines(a, 0) == [
        "slab error in verify_redzone_free(): cache `rz': memory outside object was overwritten",
        "c1000190: redzone 1:0xd84156c5635688c0, redzone 2:0xd84156c563568821.",
    ]
    assert cache.stats.errors == 1
    # The free went through; both words now say "free".
    assert a.read(obj - 8, 8) == RED_INACTIVE.to_bytes(8, "little")
    assert cache.in_use == 0
    assert cache.array_avail == 1


def test_both_red_zones_reading_free_on_a_free_is_a_double_free() -> None:
    a = allocator()
    a.create_cache("rz", 24, 0, f.SLAB_RED_ZONE)
    (obj,) = a.cache_alloc("rz", 1, [PFN]).addresses
    inactive = RED_INACTIVE.to_bytes(8, "little")
    a.write(obj - 8, inactive)
    a.write(obj + 24, inactive)
    a.cache_free("rz", [obj])
    assert new_lines(a, 0)[0] == (
        "slab error in verify_redzone_free(): cache `rz': double free detected"
    )


def test_a_real_double_free_is_refused_without_touching_anything() -> None:
    a = allocator()
    a.create_cache("rz", 24, 0, f.SLAB_RED_ZONE)
    (obj,) = a.cache_alloc("rz", 1, [PFN]).addresses
    a.cache_free("rz", [obj])
    before = a.read(obj - 8, 40)
    with pytest.raises(DoubleFree, match="double free detected in cache 'rz', objp c1000190"):
        a.cache_free("rz", [obj])
    assert a.read(obj - 8, 40) == before
    assert a.log.total == 0


def test_a_red_zone_damaged_while_free_is_reported_at_allocation() -> None:
    a = allocator()
    a.create_cache("rz", 24, 0, f.SLAB_RED_ZONE)
    (obj0,) = a.cache_alloc("rz", 1, [PFN]).addresses
    # Object 0 overruns into object 1's first red zone, which is free.
    a.write(obj0 + 24 + 8, b"\xff")
    a.cache_alloc("rz", 1)
    assert new_lines(a, 0) == [
        "slab error in cache_alloc_debugcheck_after(): cache `rz': "
        "double free, or memory outside object was overwritten",
        "c10001b8: redzone 1:0x9f911029d74e3ff, redzone 2:0x9f911029d74e35b",
    ]


def test_shrinking_checks_the_free_objects_it_destroys() -> None:
    a = allocator()
    cache = a.create_cache("both", 24, 0, f.SLAB_POISON | f.SLAB_RED_ZONE)
    (obj,) = a.cache_alloc("both", 1, [PFN]).addresses
    a.cache_free("both", [obj])
    a.write(obj + 2, b"\x00")  # poison damaged
    a.write(obj + 24, b"\x00")  # second red zone damaged
    assert a.shrink_cache("both") == [(PFN, 0)]
    lines = new_lines(a, 0)
    assert lines[0] == "Slab corruption: both start=c1000198, len=24"
    assert lines[1] == "Redzone: 0x9f911029d74e35b/0x9f911029d74e300."
    assert lines[2] == "000: 6b 6b 00 6b 6b 6b 6b 6b 6b 6b 6b 6b 6b 6b 6b 6b"
    assert lines[-1] == (
        "slab error in slab_destroy_objs(): cache `both': end of a freed object was overwritten"
    )
    assert cache.stats.errors == 2


def test_poisoned_caches_run_the_constructor_at_every_allocation() -> None:
    a = allocator()
    cache = a.create_cache("pc", 32, 0, f.SLAB_POISON, "serial")
    (obj,) = a.cache_alloc("pc", 1, [PFN]).addresses
    # Not at slab creation (the poison would undo it): once, at allocation.
    assert cache.stats.ctor_calls == 1
    assert a.read(obj, 4) == (1).to_bytes(4, "little")
    a.cache_free("pc", [obj])
    a.cache_alloc("pc", 1)
    assert cache.stats.ctor_calls == 2
    assert a.read(obj, 8) == (2).to_bytes(4, "little") + bytes(4)


def test_store_user_keeps_the_last_caller() -> None:
    a = allocator()
    a.create_cache("su", 32, 0, f.SLAB_STORE_USER)
    (obj,) = a.cache_alloc("su", 1, [PFN], caller=0xC0101234).addresses
    # The user word is the buffer's last word: 32 bytes of object, then it.
    assert a.read(obj + 32, 4) == (0xC0101234).to_bytes(4, "little")
    a.cache_free("su", [obj], caller=0xC0105678)
    assert a.read(obj + 32, 4) == (0xC0105678).to_bytes(4, "little")


def test_clean_use_logs_nothing() -> None:
    a = allocator()
    a.create_cache("clean", 40, 0, f.SLAB_POISON | f.SLAB_RED_ZONE | f.SLAB_STORE_USER)
    objs = a.cache_alloc("clean", 50, [PFN, PFN + 1]).addresses
    for obj in objs:
        a.write(obj, b"x" * 40)
    a.cache_free("clean", objs)
    a.cache_alloc("clean", 50)
    assert a.log.total == 0


def test_big_endian_machines_store_the_red_zone_words_big_end_first() -> None:
    a = allocator("ppc")
    a.create_cache("be", 24, 0, f.SLAB_RED_ZONE | f.SLAB_POISON)
    (obj,) = a.cache_alloc("be", 1, [PFN]).addresses
    assert a.read(obj - 8, 8) == RED_ACTIVE.to_bytes(8, "big")
    a.cache_free("be", [obj])
    a.write(obj + 1, bytes([0x6B ^ 0x01]))
    a.cache_alloc("be", 1)
    lines = new_lines(a, 0)
    # %p is 16 hex digits on a 64-bit kernel; no memtest86+ advice off x86.
    assert lines[0] == f"Slab corruption: be start={obj:016x}, len=24"
    assert "Run a memory test tool." in lines
