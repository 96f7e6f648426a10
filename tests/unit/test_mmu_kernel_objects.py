"""The MMU's per-CPU arrays of kernel objects: a refill takes a whole batch,
a free past the limit gives a batch back from the cold end, a drain gives
back everything not in use."""

from __future__ import annotations

from memsim.services.mmu.kernel_objects import KernelObjects


def objects() -> KernelObjects:
    # task_struct as 2.6 tunes a 1.7 KiB object: limit 32, batchcount 16.
    return KernelObjects({"task_struct": (32, 16), "vm_area_struct": (120, 60)})


def test_an_empty_array_refills_a_whole_batch_then_serves_from_it() -> None:
    k = objects()
    assert k.wanted({"task_struct": 1}) == {"task_struct": 16}
    back = k.settle({"task_struct": 1}, {"task_struct": list(range(100, 116))})
    assert back == {}
    assert k.held() == {"task_struct": 16, "vm_area_struct": 0}
    # Fifteen more processes need no slab call.
    assert k.wanted({"task_struct": 16}) == {}
    # A seventeenth asks for what it lacks, at least a batch.
    assert k.wanted({"task_struct": 17}) == {"task_struct": 16}
    assert k.wanted({"task_struct": 40}) == {"task_struct": 24}


def test_frees_past_the_limit_give_a_batch_back_from_the_cold_end() -> None:
    k = objects()
    k.settle({"task_struct": 40}, {"task_struct": list(range(40))})
    assert k.held()["task_struct"] == 40
    # Every process exits: 40 objects free, limit 32: one batch of 16 goes back.
    back = k.settle({"task_struct": 0}, {})
    assert len(back["task_struct"]) == 16
    assert k.held()["task_struct"] == 24
    # The cold end: the sixteen freed first (the last allocated), not the
    # ones freed last, which are still cache-hot.
    assert back["task_struct"] == list(range(16))


def test_a_count_settles_objects_in_use_and_drain_gives_back_the_rest() -> None:
    k = objects()
    k.settle({"vm_area_struct": 5}, {"vm_area_struct": list(range(60))})
    assert k.held()["vm_area_struct"] == 60
    back = k.drain()
    assert sorted(back["vm_area_struct"]) == sorted(
        set(range(60)) - set(k.arrays["vm_area_struct"].in_use)
    )
    assert len(back["vm_area_struct"]) == 55
    assert k.held()["vm_area_struct"] == 5
    assert k.drain() == {}


def test_tunables_are_kept_sane() -> None:
    k = KernelObjects({"mm_struct": (0, 0), "task_struct": (8, 60)})
    assert (k.arrays["mm_struct"].limit, k.arrays["mm_struct"].batchcount) == (1, 1)
    assert k.arrays["task_struct"].batchcount == 8  # never more than the limit
