"""The MMU's own kernel objects, task_struct, mm_struct and vm_area_struct,
taken from the slab service so that slabinfo moves as processes and mappings
come and go.

They pass through per-CPU array caches as mm/slab.c's do (struct
array_cache): an allocation that finds the array empty takes `batchcount`
objects from the slab at once (cache_alloc_refill), and a free that finds it
at `limit` gives `batchcount` back (cache_flusharray). Objects on the array
count as active in /proc/slabinfo, as the kernel's do. So a process or a
mapping costs a slab call only once in `batchcount`.

Pure: it is told how many objects of each cache the MMU uses and says what
to take or give back; the service makes the calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field

CACHES = ("task_struct", "mm_struct", "vm_area_struct")


@dataclass
class ArrayCache:
    name: str
    limit: int
    batchcount: int
    avail: list[int] = field(default_factory=list)
    in_use: list[int] = field(default_factory=list)


class KernelObjects:
    def __init__(self, tunables: dict[str, tuple[int, int]]) -> None:
        """tunables: cache name -> (limit, batchcount), as slabinfo shows them."""
        self.arrays = {
            name: ArrayCache(name, max(limit, 1), max(1, min(batchcount, limit)))
            for name, (limit, batchcount) in tunables.items()
        }

    def wanted(self, counts: dict[str, int]) -> dict[str, int]:
        """Objects to take from the slab before counts can be in use: what the
        arrays lack, at least a batch."""
        wanted = {}
        for name, count in counts.items():
            array = self.arrays[name]
            lacking = count - len(array.in_use) - len(array.avail)
            if lacking > 0:
                wanted[name] = max(lacking, array.batchcount)
        return wanted

    def settle(self, counts: dict[str, int], got: dict[str, list[int]]) -> dict[str, list[int]]:
        """Puts what was taken on the arrays and counts objects in use (as many
        as there are, if another call used some meanwhile); returns what to give
        back: batches from the cold end of every array past its limit."""
        back: dict[str, list[int]] = {}
        for name, array in self.arrays.items():
            array.avail += got.get(name, [])
            count = counts.get(name, len(array.in_use))
            while len(array.in_use) < count and array.avail:
                array.in_use.append(array.avail.pop())
            while len(array.in_use) > count:
                array.avail.append(array.in_use.pop())
            while len(array.avail) > array.limit:
                back.setdefault(name, []).extend(array.avail[: array.batchcount])
                del array.avail[: array.batchcount]
        return back

    def drain(self) -> dict[str, list[int]]:
        """Every object not in use (drain_array), to give back."""
        back = {name: a.avail for name, a in self.arrays.items() if a.avail}
        for array in self.arrays.values():
            array.avail = []
        return back

    def held(self) -> dict[str, int]:
        return {name: len(a.in_use) + len(a.avail) for name, a in self.arrays.items()}
