"""The MMU's per-CPU frame lists: frames it holds for the faults to come.

The kernel takes a fault's page from the CPU's pcp list without leaving the
CPU; here the zone's pcp lists are a network hop away, and a first touch would
cross two or three services. So the MMU keeps lists of its own in front of
them, as pcp lists sit in front of buddy: frames freed by munmap and exit go
to them up to `high`, a fault takes from them, and a fault that finds too few
asks the zone once for what it lacks plus `batch` more. The zone counts these
frames as allocated (as pcp pages are not in NR_FREE_PAGES); reclaim and
drain_all_pages take them back first.

Pure: lists and numbers, no I/O; the service does the zone calls.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator

# The largest lists and the refill step. pcp lists of 2.6 keep at most
# 6 x batch (186) pages per zone and CPU; a fault-around batch here is 1 MiB
# (256 pages) plus its table pages, which should fit in one list.
HIGH_MAX = 512
BATCH_MAX = 32


def sizes_for(total_pages: int) -> tuple[int, int]:
    """(high, batch) for a machine: at most 1/512 of its memory per list, so a
    small machine keeps a little and a large one HIGH_MAX."""
    high = min(HIGH_MAX, total_pages // 512)
    batch = max(1, min(BATCH_MAX, high // 8)) if high else 0
    return high, batch


class FrameCache:
    """Order-0 frames by (gfp_mask, cpu): frames taken with one mask serve only
    that mask again (a HighMem frame must not become a page table)."""

    def __init__(
        self,
        high: int,
        batch: int,
        node_of_pfn: Callable[[int], int],
        node_of_cpu: Callable[[int], int],
    ) -> None:
        self.high = high
        self.batch = batch
        self._node_of_pfn = node_of_pfn
        self._node_of_cpu = node_of_cpu
        self._lists: defaultdict[tuple[int, int], deque[int]] = defaultdict(deque)
        self.hits = 0  # takes served without the zone
        self.refills = 0  # takes that went to the zone

    def take(self, gfp_mask: int, count: int, cpu: int) -> list[int] | None:
        """count frames from the list, or None (and nothing taken) if it has fewer."""
        frames = self._lists[(gfp_mask, cpu)]
        if len(frames) < count:
            return None
        self.hits += 1
        return [frames.popleft() for _ in range(count)]

    def take_all(self, gfp_mask: int, cpu: int) -> list[int]:
        frames = self._lists[(gfp_mask, cpu)]
        taken = list(frames)
        frames.clear()
        return taken

    def put(self, gfp_mask: int, pfns: Iterable[int], cpu: int) -> list[int]:
        """Keeps what fits under high and lives on the CPU's node (a frame of
        another node would serve the wrong node later); returns the rest, for
        the zone. Freed frames go to the front: hot, as free_hot_page puts them."""
        frames = self._lists[(gfp_mask, cpu)]
        node = self._node_of_cpu(cpu)
        rest = []
        for pfn in pfns:
            if len(frames) < self.high and self._node_of_pfn(pfn) == node:
                frames.appendleft(pfn)
            else:
                rest.append(pfn)
        return rest

    def drain(self, keep: Callable[[int], bool] = lambda pfn: False) -> list[int]:
        """Every frame for which keep is false, off every list."""
        drained = []
        for key, frames in self._lists.items():
            kept = deque(pfn for pfn in frames if keep(pfn))
            drained += [pfn for pfn in frames if not keep(pfn)]
            self._lists[key] = kept
        return drained

    def pages(self) -> dict[tuple[int, int], int]:
        """Frames held per (gfp_mask, cpu)."""
        return {key: len(frames) for key, frames in self._lists.items() if frames}

    def frames(self) -> Iterator[int]:
        """Every frame on every list."""
        for frames in self._lists.values():
            yield from frames

    def __len__(self) -> int:
        return sum(len(frames) for frames in self._lists.values())
