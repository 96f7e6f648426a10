"""BuddyCollector on a fresh CollectorRegistry: what a scrape reads from the core."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from memsim.services.buddy.allocator import BuddyAllocator
from memsim.services.buddy.arena import ArenaSpec
from memsim.services.buddy.errors import BadFree, OutOfMemory
from memsim.services.buddy.metrics import BuddyCollector


def dma(order: int | None = None) -> dict[str, str]:
    labels = {"node": "0", "zone": "DMA"}
    if order is not None:
        labels["order"] = str(order)
    return labels


@pytest.fixture
def allocator() -> BuddyAllocator:
    return BuddyAllocator()


@pytest.fixture
def registry(allocator: BuddyAllocator) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(BuddyCollector(allocator))
    return registry


def test_no_arena_no_samples(registry: CollectorRegistry) -> None:
    assert registry.get_sample_value("memsim_buddy_free_blocks", dma(10)) is None
    assert registry.get_sample_value("memsim_buddy_splits_total", dma()) is None


def test_an_arena_created_after_registration_is_collected(
    allocator: BuddyAllocator, registry: CollectorRegistry
) -> None:
    allocator.create_arena(ArenaSpec(node=0, zone="DMA", start_pfn=0, pages=4096))
    get = registry.get_sample_value
    assert get("memsim_buddy_free_blocks", dma(10)) == 4
    assert [get("memsim_buddy_free_blocks", dma(o)) for o in range(10)] == [0] * 10
    assert get("memsim_buddy_free_blocks", dma(11)) is None
    assert get("memsim_buddy_free_pages", dma()) == 4096
    assert get("memsim_buddy_allocated_pages", dma()) == 0
    assert get("memsim_buddy_spanned_pages", dma()) == 4096
    assert get("memsim_buddy_splits_total", dma()) == 0
    assert get("memsim_buddy_merges_total", dma()) == 0


def test_counters_after_a_known_sequence(
    allocator: BuddyAllocator, registry: CollectorRegistry
) -> None:
    arena = allocator.create_arena(ArenaSpec(node=0, zone="DMA", start_pfn=0, pages=4096))
    allocator.create_arena(ArenaSpec(node=1, zone="Normal", start_pfn=4096, pages=2048))
    assert arena.alloc(0) == 0  # splits an order-10 block 10 times
    assert arena.alloc(1) == 2  # the order-1 half those splits left
    # 512 was left at order 9; 1024 and 2048 are split once each.
    assert arena.alloc_bulk(9, 4) == [512, 1024, 1536, 2048]
    assert arena.alloc(10) == 3072  # the last order-10 block
    with pytest.raises(OutOfMemory):
        arena.alloc(10)  # one failure
    assert arena.alloc_bulk(10, 2) == []  # and another
    assert arena.free([(0, 0), (2, 1)]) == 3
    with pytest.raises(BadFree):
        arena.free([(2, 1)])

    get = registry.get_sample_value
    allocations = {o: get("memsim_buddy_allocations_total", dma(o)) for o in range(11)}
    assert allocations == {o: {0: 1, 1: 1, 9: 4, 10: 1}.get(o, 0) for o in range(11)}
    frees = {o: get("memsim_buddy_frees_total", dma(o)) for o in range(11)}
    assert frees == {o: {0: 1, 1: 1}.get(o, 0) for o in range(11)}
    failed = {o: get("memsim_buddy_failed_allocations_total", dma(o)) for o in range(11)}
    assert failed == {o: {10: 2}.get(o, 0) for o in range(11)}
    assert get("memsim_buddy_splits_total", dma()) == 10 + 2
    # 0 merges with 1 (order 0) but not with 2, still allocated; then 2 merges
    # with 0 (order 1), 4 (order 2), 8, ... 256 (order 8): block 0 of order 9.
    assert get("memsim_buddy_merges_total", dma()) == 1 + 8
    nr_free = [get("memsim_buddy_free_blocks", dma(o)) for o in range(11)]
    assert nr_free == [float(n) for n in arena.nr_free()]
    assert nr_free == [0] * 9 + [2, 0]  # 0 and 2560
    assert get("memsim_buddy_free_pages", dma()) == 1024
    assert get("memsim_buddy_allocated_pages", dma()) == 3072
    # The other arena, untouched, is reported under its own labels.
    normal = {"node": "1", "zone": "Normal"}
    assert get("memsim_buddy_free_blocks", {**normal, "order": "10"}) == 2
    assert get("memsim_buddy_splits_total", normal) == 0


def test_fragmentation_ratios(allocator: BuddyAllocator, registry: CollectorRegistry) -> None:
    arena = allocator.create_arena(ArenaSpec(node=0, zone="DMA", start_pfn=0, pages=64))
    assert sorted(arena.alloc_bulk(0, 64)) == list(range(64))
    assert arena.free([(pfn, 0) for pfn in range(0, 64, 2)]) == 32

    get = registry.get_sample_value
    unusable = [get("memsim_buddy_unusable_free_index_ratio", dma(o)) for o in range(11)]
    assert unusable == [0.0] + [1.0] * 10
    extfrag = [get("memsim_buddy_fragmentation_index_ratio", dma(o)) for o in range(11)]
    assert extfrag == [-1.0, 0.469, 0.719, 0.844, 0.907, 0.938, 0.954, 0.961, 0.965, 0.967, 0.968]
