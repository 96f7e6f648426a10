"""What holds every frame of the machine: the services' Get*Frames answers
turned into one category per pfn.

Every pfn from 0 to the end of the highest zone gets exactly one source
(buddy's free lists, a pcp list, an anonymous page, a slab of some cache,
...), and each source belongs to one of six categories: free, user page, page
table, slab, vmalloc, reserved. Pfns outside every zone (holes) and those of a
zone below its managed pages (the memmap and the kernel's boot reservations)
are reserved; every other pfn must be claimed by exactly one service. A pfn
claimed twice, a managed pfn claimed by nobody, or a claim on a reserved pfn
is a bug somewhere (or the machine changed while it was read): FrameMapError.

The map is kept as runs (start, length, source) covering [0, total_pfns) in
order, so a machine of a petabyte costs no more than its claims; a per-frame
array is made only when asked (categories()) and a binned one for pictures
(binned_categories()).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
import numpy.typing as npt

Range = tuple[int, int]  # (start_pfn, count)
# No category: a cell past the machine's last frame.
NO_CATEGORY = 255
# A per-frame array is built for at most this many frames.
DENSE_LIMIT = 1 << 26


class Category(IntEnum):
    FREE = 0
    USER = 1
    PAGE_TABLE = 2
    SLAB = 3
    VMALLOC = 4
    RESERVED = 5

    @property
    def label(self) -> str:
        return CATEGORY_LABELS[self]


CATEGORY_LABELS = {
    Category.FREE: "free",
    Category.USER: "user page",
    Category.PAGE_TABLE: "page table",
    Category.SLAB: "slab",
    Category.VMALLOC: "vmalloc",
    Category.RESERVED: "reserved",
}
# Ties in a binned picture go to the later category of this order: used
# memory over free, and the scarcer kinds of use over the common ones.
TIE_ORDER = (
    Category.FREE,
    Category.RESERVED,
    Category.USER,
    Category.SLAB,
    Category.VMALLOC,
    Category.PAGE_TABLE,
)


class Source(IntEnum):
    """Who holds a frame: each source is part of one category."""

    BUDDY = 0
    PCP = 1
    MMU_LISTS = 2
    ANON = 3
    SHMEM = 4
    BLOCKS = 5
    PAGE_TABLES = 6
    SLAB_RECLAIMABLE = 7
    SLAB_UNRECLAIMABLE = 8
    VMALLOC = 9
    BOOT_RESERVED = 10
    HOLE = 11

    @property
    def category(self) -> Category:
        return SOURCE_CATEGORY[self]

    @property
    def label(self) -> str:
        return SOURCE_LABELS[self]


SOURCE_CATEGORY = {
    Source.BUDDY: Category.FREE,
    Source.PCP: Category.FREE,
    Source.MMU_LISTS: Category.FREE,
    Source.ANON: Category.USER,
    Source.SHMEM: Category.USER,
    Source.BLOCKS: Category.USER,
    Source.PAGE_TABLES: Category.PAGE_TABLE,
    Source.SLAB_RECLAIMABLE: Category.SLAB,
    Source.SLAB_UNRECLAIMABLE: Category.SLAB,
    Source.VMALLOC: Category.VMALLOC,
    Source.BOOT_RESERVED: Category.RESERVED,
    Source.HOLE: Category.RESERVED,
}
SOURCE_LABELS = {
    Source.BUDDY: "buddy",
    Source.PCP: "pcp lists",
    Source.MMU_LISTS: "MMU frame lists",
    Source.ANON: "anonymous",
    Source.SHMEM: "SysV shm",
    Source.BLOCKS: "process blocks",
    Source.PAGE_TABLES: "page tables",
    Source.SLAB_RECLAIMABLE: "reclaimable",
    Source.SLAB_UNRECLAIMABLE: "unreclaimable",
    Source.VMALLOC: "vmalloc",
    Source.BOOT_RESERVED: "memmap and kernel",
    Source.HOLE: "holes",
}
_CATEGORY_OF_SOURCE = np.array([SOURCE_CATEGORY[s] for s in Source], dtype=np.uint8)


class FrameMapError(ValueError):
    """The answers do not add up to one owner per frame."""


@dataclass(frozen=True)
class ZoneSpan:
    node: int
    name: str
    start_pfn: int
    spanned: int
    present: int
    managed: int
    # [managed_start_pfn, end_pfn) is buddy's arena; below it is reserved.
    managed_start_pfn: int

    @property
    def end_pfn(self) -> int:
        return self.start_pfn + self.spanned

    @property
    def label(self) -> str:
        return f"node {self.node} zone {self.name}"


@dataclass(frozen=True)
class Claim:
    """Frames one holder says it holds."""

    source: Source
    ranges: Sequence[Range]
    who: str = ""  # for messages, e.g. "slab cache dentry_cache"

    @property
    def name(self) -> str:
        return self.who or self.source.label


@dataclass(frozen=True)
class Snapshot:
    """What the services answered, in plain numbers."""

    zones: Sequence[ZoneSpan]
    claims: Sequence[Claim]
    page_size: int = 4096
    profile: str = ""


@dataclass(frozen=True)
class FrameMap:
    """Runs (starts[i], lengths[i], sources[i]) covering [0, total_pfns) in order."""

    total_pfns: int
    zones: tuple[ZoneSpan, ...]
    starts: npt.NDArray[np.int64]
    lengths: npt.NDArray[np.int64]
    sources: npt.NDArray[np.uint8]
    page_size: int = 4096
    profile: str = ""
    source_counts: dict[Source, int] = field(default_factory=dict)

    @property
    def category_counts(self) -> dict[Category, int]:
        counts = dict.fromkeys(Category, 0)
        for source, count in self.source_counts.items():
            counts[source.category] += count
        return counts

    def categories(self) -> npt.NDArray[np.uint8]:
        """One Category value per pfn, 0 .. total_pfns-1."""
        if self.total_pfns > DENSE_LIMIT:
            raise ValueError(
                f"{self.total_pfns} frames is too many for a per-frame array "
                f"(at most {DENSE_LIMIT}): use binned_categories"
            )
        return np.repeat(_CATEGORY_OF_SOURCE[self.sources], self.lengths)

    def binned_categories(self, frames_per_bin: int, nbins: int) -> npt.NDArray[np.uint8]:
        """One category per bin of frames_per_bin frames: the category that
        holds most of the bin's frames, ties going to the later one of
        TIE_ORDER; NO_CATEGORY for bins past the last frame."""
        if frames_per_bin == 1 and nbins >= self.total_pfns:
            out = np.full(nbins, NO_CATEGORY, dtype=np.uint8)
            out[: self.total_pfns] = self.categories()
            return out
        return _majority(self, frames_per_bin, nbins)


def _majority(fmap: FrameMap, size: int, nbins: int) -> npt.NDArray[np.uint8]:
    starts = fmap.starts
    ends = starts + fmap.lengths
    cats = _CATEGORY_OF_SOURCE[fmap.sources]
    best = np.full(nbins, -1, dtype=np.int64)
    out = np.full(nbins, NO_CATEGORY, dtype=np.uint8)
    limit = nbins * size
    for category in TIE_ORDER:
        mask = (cats == category) & (starts < limit)
        if not mask.any():
            continue
        s = starts[mask]
        e = np.minimum(ends[mask], limit)
        first, last = s // size, (e - 1) // size
        counts = np.zeros(nbins, dtype=np.int64)
        one = first == last
        np.add.at(counts, first[one], (e - s)[one])
        many = ~one
        if many.any():
            f, la, sm, em = first[many], last[many], s[many], e[many]
            np.add.at(counts, f, (f + 1) * size - sm)
            np.add.at(counts, la, em - la * size)
            steps = np.zeros(nbins + 1, dtype=np.int64)
            np.add.at(steps, f + 1, size)
            np.add.at(steps, la, -size)
            counts += np.cumsum(steps)[:nbins]
        wins = (counts > 0) & (counts >= best)
        best[wins] = counts[wins]
        out[wins] = category
    return out


def build_frame_map(snapshot: Snapshot) -> FrameMap:
    """Every pfn's source; FrameMapError when the answers do not add up."""
    zones = tuple(sorted(snapshot.zones, key=lambda z: z.start_pfn))
    zones = tuple(z for z in zones if z.spanned)
    if not zones:
        raise FrameMapError("the machine has no zones with pages")
    total = max(z.end_pfn for z in zones)
    runs: list[tuple[int, int, int, int]] = []  # start, length, source, who index
    whos: list[str] = []
    pfn = 0
    for zone in zones:
        if zone.start_pfn < pfn:
            raise FrameMapError(f"{zone.label} starts at pfn {zone.start_pfn}, inside another zone")
        if not zone.start_pfn <= zone.managed_start_pfn <= zone.end_pfn:
            raise FrameMapError(
                f"{zone.label}: managed pages start at pfn {zone.managed_start_pfn}, "
                f"outside its span [{zone.start_pfn}, {zone.end_pfn})"
            )
        if zone.start_pfn > pfn:
            whos.append(f"the hole [{pfn}, {zone.start_pfn}) between zones")
            runs.append((pfn, zone.start_pfn - pfn, Source.HOLE, len(whos) - 1))
        if zone.managed_start_pfn > zone.start_pfn:
            whos.append(f"the reserved pages of {zone.label} (memmap and kernel)")
            runs.append(
                (
                    zone.start_pfn,
                    zone.managed_start_pfn - zone.start_pfn,
                    Source.BOOT_RESERVED,
                    len(whos) - 1,
                )
            )
        pfn = zone.end_pfn
    base = np.array(runs, dtype=np.int64).reshape(-1, 4)
    parts = [base]
    for claim in snapshot.claims:
        if not claim.ranges:
            continue
        whos.append(claim.name)
        r = np.asarray(claim.ranges, dtype=np.int64).reshape(-1, 2)
        if (r[:, 1] <= 0).any() or (r[:, 0] < 0).any():
            raise FrameMapError(f"{claim.name}: empty or negative range in the answer")
        part = np.empty((len(r), 4), dtype=np.int64)
        part[:, :2] = r
        part[:, 2] = claim.source
        part[:, 3] = len(whos) - 1
        parts.append(part)
    all_runs = np.concatenate(parts)
    all_runs = all_runs[np.argsort(all_runs[:, 0], kind="stable")]
    starts, lengths = all_runs[:, 0], all_runs[:, 1]
    ends = starts + lengths
    _check_claims(zones, total, all_runs, ends, whos)
    counts = np.zeros(len(Source), dtype=np.int64)
    np.add.at(counts, all_runs[:, 2], lengths)
    return FrameMap(
        total_pfns=total,
        zones=zones,
        starts=np.ascontiguousarray(starts),
        lengths=np.ascontiguousarray(lengths),
        sources=all_runs[:, 2].astype(np.uint8),
        page_size=snapshot.page_size,
        profile=snapshot.profile,
        source_counts={s: int(counts[s]) for s in Source},
    )


def _zone_of(zones: Sequence[ZoneSpan], pfn: int) -> str:
    for zone in zones:
        if zone.start_pfn <= pfn < zone.end_pfn:
            return zone.label
    return "no zone"


def _check_claims(
    zones: Sequence[ZoneSpan],
    total: int,
    runs: npt.NDArray[np.int64],
    ends: npt.NDArray[np.int64],
    whos: list[str],
) -> None:
    """Runs sorted by start must tile [0, total): no overlap, no gap."""
    starts = runs[:, 0]
    beyond = np.nonzero(ends > total)[0]
    if len(beyond):
        i = int(beyond[0])
        raise FrameMapError(
            f"{whos[runs[i, 3]]} claims pfn {max(int(starts[i]), total)}, past the "
            f"machine's last frame {total - 1}"
        )
    overlap = np.nonzero(starts[1:] < ends[:-1])[0]
    if len(overlap):
        i = int(overlap[0])
        pfn = int(starts[i + 1])
        first, second = whos[runs[i, 3]], whos[runs[i + 1, 3]]
        reserved = (Source.HOLE, Source.BOOT_RESERVED)
        if runs[i, 2] in reserved:
            raise FrameMapError(f"pfn {pfn} is claimed by {second} but belongs to {first}")
        if runs[i + 1, 2] in reserved:
            raise FrameMapError(f"pfn {pfn} is claimed by {first} but belongs to {second}")
        raise FrameMapError(
            f"pfn {pfn} ({_zone_of(zones, pfn)}) is claimed twice: by {first} and by {second}"
        )
    gap_after = np.nonzero(starts[1:] > ends[:-1])[0]
    gaps = [(0, int(starts[0]))] if starts[0] > 0 else []
    gaps += [(int(ends[i]), int(starts[i + 1])) for i in gap_after[:1]]
    if ends[-1] < total:
        gaps.append((int(ends[-1]), total))
    if gaps:
        lo, hi = min(gaps)
        raise FrameMapError(
            f"pfns [{lo}, {hi}) of {_zone_of(zones, lo)} ({hi - lo} frames) are held by "
            "nobody: not free in buddy, not on a pcp list, not the MMU's and not the slab's"
        )
