"""Virtual memory areas (struct vm_area_struct) and the address space that
holds them: find_vma, vma_merge, split_vma, do_munmap, mprotect_fixup and a
top-down get_unmapped_area, as mm/mmap.c and mm/mprotect.c of 2.6 do.

Addresses here are page numbers (vpn): every VMA is whole pages.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

PROT_NONE = 0x0
PROT_READ = 0x1
PROT_WRITE = 0x2
PROT_EXEC = 0x4
PROT_MASK = PROT_READ | PROT_WRITE | PROT_EXEC

MAP_SHARED = 0x01
MAP_PRIVATE = 0x02
MAP_FIXED = 0x10
MAP_ANONYMOUS = 0x20
MAP_GROWSDOWN = 0x100
MAP_NORESERVE = 0x4000
MAP_POPULATE = 0x8000
MAP_KNOWN = (
    MAP_SHARED
    | MAP_PRIVATE
    | MAP_FIXED
    | MAP_ANONYMOUS
    | MAP_GROWSDOWN
    | MAP_NORESERVE
    | MAP_POPULATE
)


@dataclass(frozen=True)
class Vma:
    start: int  # first page
    end: int  # page after the last
    prot: int
    shared: bool = False
    # "[heap]", "[stack]", the executable's name, or "" for anonymous memory.
    name: str = ""
    growsdown: bool = False
    noreserve: bool = False
    # No MMU: the mapping is one physical block of its own and never merges.
    block: bool = False
    # A System V shared memory segment's id, and the segment page the VMA's
    # first page shows (vm_pgoff).
    shm: int | None = None
    pgoff: int = 0
    # VM_ACCOUNT: the VMA's pages are in Committed_AS (a private writable
    # mapping, the heap, the stack, the executable's data), and go out of it
    # with the VMA. It is a vm_flag: it survives a split and takes part in
    # vma_merge's "same flags" test.
    account: bool = False
    # A shared anonymous mapping's shmem object (shmem_zero_setup's file):
    # its commit charge belongs to the object, not to the VMA. 0: none.
    anon_shmem: int = 0

    @property
    def pages(self) -> int:
        return self.end - self.start

    def mergeable_with(self, other: Vma) -> bool:
        """vma_merge's test: same flags, both anonymous (the heap is anonymous
        memory too; the stack and the executable's image are not merged)."""
        return (
            self.prot == other.prot
            and self.shared == other.shared
            and self.name == other.name
            and self.name in ("", "[heap]")
            and not self.block
            and not other.block
            and self.growsdown == other.growsdown
            and self.noreserve == other.noreserve
            and self.account == other.account
            and self.anon_shmem == other.anon_shmem
        )

    @property
    def perms(self) -> str:
        """The rwxp/rwxs column of /proc/PID/maps."""
        return (
            ("r" if self.prot & PROT_READ else "-")
            + ("w" if self.prot & PROT_WRITE else "-")
            + ("x" if self.prot & PROT_EXEC else "-")
            + ("s" if self.shared else "p")
        )


class AddressSpace:
    """The VMAs of one mm, sorted and never overlapping."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._vmas: list[Vma] = []

    def __iter__(self) -> Iterator[Vma]:
        return iter(list(self._vmas))

    def __len__(self) -> int:
        return len(self._vmas)

    @property
    def total_pages(self) -> int:
        return sum(v.pages for v in self._vmas)

    def find(self, vpn: int) -> Vma | None:
        """The VMA containing vpn, if any."""
        i = bisect.bisect_right(self._starts, vpn) - 1
        if i >= 0 and vpn < self._vmas[i].end:
            return self._vmas[i]
        return None

    def overlapping(self, start: int, end: int) -> list[Vma]:
        i = max(bisect.bisect_right(self._starts, start) - 1, 0)
        out = []
        while i < len(self._vmas) and self._vmas[i].start < end:
            if self._vmas[i].end > start:
                out.append(self._vmas[i])
            i += 1
        return out

    def is_free(self, start: int, end: int) -> bool:
        return not self.overlapping(start, end)

    def _remove(self, vma: Vma) -> None:
        i = self._vmas.index(vma)
        del self._vmas[i]
        del self._starts[i]

    def _add(self, vma: Vma) -> None:
        i = bisect.bisect_left(self._starts, vma.start)
        self._vmas.insert(i, vma)
        self._starts.insert(i, vma.start)

    def insert(self, vma: Vma) -> Vma:
        """Adds a VMA over free space, merging with compatible neighbours."""
        assert self.is_free(vma.start, vma.end), "insert over mapped space"
        before = self.find(vma.start - 1)
        if before is not None and before.end == vma.start and before.mergeable_with(vma):
            self._remove(before)
            vma = replace(vma, start=before.start)
        after = self.find(vma.end)
        if after is not None and after.start == vma.end and after.mergeable_with(vma):
            self._remove(after)
            vma = replace(vma, end=after.end)
        self._add(vma)
        return vma

    def unmap(self, start: int, end: int) -> list[tuple[int, int]]:
        """do_munmap: removes [start, end), splitting VMAs that straddle it.
        Returns the page ranges that were mapped and are no longer."""
        removed = []
        for vma in self.overlapping(start, end):
            self._remove(vma)
            if vma.start < start:
                self._add(replace(vma, end=start))
            if vma.end > end:
                self._add(replace(vma, start=end, pgoff=vma.pgoff + end - vma.start))
            removed.append((max(vma.start, start), min(vma.end, end)))
        return removed

    def protect(
        self, start: int, end: int, prot: int, charges: Callable[[Vma], bool] | None = None
    ) -> None:
        """mprotect_fixup over [start, end), which must be fully mapped.
        charges(vma): does the change charge that VMA (which then gets
        VM_ACCOUNT)? A VMA keeps VM_ACCOUNT whatever the new protection."""
        for vma in self.overlapping(start, end):
            self._remove(vma)
            if vma.start < start:
                self._add(replace(vma, end=start))
            if vma.end > end:
                self._add(replace(vma, start=end, pgoff=vma.pgoff + end - vma.start))
            lo = max(vma.start, start)
            self.insert(
                replace(
                    vma,
                    start=lo,
                    end=min(vma.end, end),
                    prot=prot,
                    pgoff=vma.pgoff + lo - vma.start,
                    account=vma.account or (charges is not None and charges(vma)),
                )
            )

    def mapped_through(self, start: int, end: int) -> bool:
        """True if every page of [start, end) is in some VMA (no holes)."""
        at = start
        for vma in self.overlapping(start, end):
            if vma.start > at:
                return False
            at = vma.end
        return at >= end

    def unmapped_area(self, pages: int, below: int, above: int) -> int | None:
        """arch_get_unmapped_area_topdown: the highest gap of `pages` below `below`."""
        top = below
        for vma in reversed(self._vmas):
            if vma.start >= top:
                continue
            if vma.end <= top - pages and top - pages >= above:
                return top - pages
            top = min(top, vma.start)
        return top - pages if top - pages >= above else None
