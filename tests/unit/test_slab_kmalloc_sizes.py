"""kmalloc's size classes (include/linux/kmalloc_sizes.h of 2.6.24) per profile."""

from __future__ import annotations

import pytest

from memsim.profiles.loader import load_profile
from memsim.services.slab.errors import BadRequest
from memsim.services.slab.kmalloc_sizes import (
    KmallocSizes,
    kmalloc_max_order,
    kmalloc_max_size,
    kmalloc_sizes,
)

BIG = [1 << s for s in range(8, 23)]  # 256 .. 4194304


def classes(profile: str, **options: str) -> KmallocSizes:
    p = load_profile(profile, **options)  # type: ignore[arg-type]
    return KmallocSizes.for_machine(p.page_size, p.cache_line_bytes, p.max_order)


def test_kmalloc_max_size_is_max_order_pages_up_to_32_mib() -> None:
    # KMALLOC_SHIFT_HIGH = min(MAX_ORDER + PAGE_SHIFT - 1, 25)
    assert kmalloc_max_size(4096, 11) == 1 << 22  # 11 + 12 - 1 = 22: 4 MiB
    assert kmalloc_max_order(4096, 11) == 10
    assert kmalloc_max_size(65536, 11) == 1 << 25  # 11 + 16 - 1 = 26, capped at 25
    assert kmalloc_max_order(65536, 11) == 9


@pytest.mark.parametrize(
    ("profile", "line", "small"),
    [
        # L1_CACHE_BYTES 64: "#if L1_CACHE_BYTES < 128" admits 192, not 96.
        ("x86_32", 64, [32, 64, 128, 192]),
        ("numa", 64, [32, 64, 128, 192]),
        # 128: neither 96 nor 192.
        ("x86_64", 128, [32, 64, 128]),
        ("ppc", 128, [32, 64, 128]),
        # 32: both.
        ("nommu", 32, [32, 64, 96, 128, 192]),
    ],
)
def test_classes_follow_the_cache_line(profile: str, line: int, small: list[int]) -> None:
    sizes = classes(profile)
    assert load_profile(profile).cache_line_bytes == line
    assert list(sizes.sizes) == small + BIG


def test_no_size_32_without_4k_pages_and_more_classes_with_64k_pages() -> None:
    sizes = classes("x86_64", page_size="64K")
    assert sizes.sizes[0] == 64
    assert sizes.largest == 32 << 20


def test_a_small_max_order_stops_the_classes_early() -> None:
    # MAX_ORDER 5: KMALLOC_MAX_SIZE = 1 << (5 + 12 - 1) = 64 KiB.
    assert kmalloc_sizes(4096, 64, 5)[-1] == 65536


@pytest.mark.parametrize(
    ("request_size", "x86_32", "x86_64", "nommu"),
    [
        (1, 32, 32, 32),
        (8, 32, 32, 32),
        (32, 32, 32, 32),
        (33, 64, 64, 64),
        (64, 64, 64, 64),
        (65, 128, 128, 96),
        (96, 128, 128, 96),
        (97, 128, 128, 128),
        (129, 192, 256, 192),
        (192, 192, 256, 192),
        (193, 256, 256, 256),
        (4096, 4096, 4096, 4096),
        (4097, 8192, 8192, 8192),
        (131073, 262144, 262144, 262144),
        (4 << 20, 4 << 20, 4 << 20, 4 << 20),
    ],
)
def test_size_class_of_a_request(request_size: int, x86_32: int, x86_64: int, nommu: int) -> None:
    assert classes("x86_32").class_size(request_size) == x86_32
    assert classes("x86_64").class_size(request_size) == x86_64
    assert classes("nommu").class_size(request_size) == nommu


@pytest.mark.parametrize(
    ("size", "message"),
    [
        (0, "not positive"),
        (-1, "not positive"),
        ((4 << 20) + 1, r"larger than the largest size class \(4194304, size-4194304\)"),
        (1.5, "must be an integer"),
        (True, "must be an integer"),
    ],
)
def test_sizes_kmalloc_cannot_serve_are_refused(size: int, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        classes("x86_32").index(size)
