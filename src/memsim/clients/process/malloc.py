"""A glibc-style malloc (ptmalloc2's main arena) over brk and mmap.

The allocator follows glibc's `malloc/malloc.c` for one thread (the main arena
only) on a 64-bit target: SIZE_SZ = 8, MALLOC_ALIGNMENT = 16, MINSIZE = 32,
chunks sized by `request2size`, user pointers 16 bytes past the chunk start.

Where the bookkeeping lives: glibc keeps each chunk's header (prev_size, size
and flag bits) and the free lists' links inside the heap itself. Here every
piece of the allocator's bookkeeping stays in this Python object, on the
client side, so that malloc and free cost no round trip to the simulated
machine; the backend is only asked for brk and mmap as glibc asks the kernel.
The bytes that a program writes into its blocks still go to the simulated
memory. Chunk geometry is nevertheless glibc's: a heap chunk of size S gives
S - 8 usable bytes (the next chunk's prev_size field is lent to it), an
mmapped chunk S - 16, and the addresses are those glibc would hand out for the
same sequence of calls.

What is modelled, as glibc does it:

- Requests are served first from the free chunks, then from the top chunk.
  Only when neither can serve a request does `sysmalloc` ask the system: a
  request of at least the mmap threshold (M_MMAP_THRESHOLD, 128 KiB) gets its
  own mapping of `request + 8` bytes rounded up to pages, any other extends the
  heap with brk by `request + M_TOP_PAD + MINSIZE - top`, rounded up to pages.
  (mallopt(3): mmap serves the requests "that can't be satisfied from the free
  list".) If the mapping fails glibc falls back to brk, and so does this.
- Dynamic mmap threshold (glibc >= 2.4): freeing an mmapped chunk larger than
  the threshold and no larger than 32 MiB raises the threshold to that chunk's
  size and the trim threshold to twice that. Setting any of the thresholds or
  the top pad in the constructor turns this off, as mallopt does.
- free coalesces with the previous and the next chunk when they are free; a
  chunk next to top merges into top. When the chunk so formed is at least
  FASTBIN_CONSOLIDATION_THRESHOLD (64 KiB) and top has reached
  M_TRIM_THRESHOLD, `systrim` gives back whole pages with brk, keeping
  M_TOP_PAD (plus less than a page and MINSIZE) in top.
- Splitting a free chunk or top leaves the remainder free when it is at least
  MINSIZE; otherwise the whole chunk is handed out.
- realloc as `_int_realloc`: shrink in place (the tail is freed), grow in place
  into a free next chunk or into top, else allocate, copy, free. An mmapped
  chunk stays put when it is already large enough, else moves (no mremap).
- malloc(0) returns a unique minimum chunk; realloc(p, 0) frees p and returns
  0; failures return 0 (NULL) with `errno` set to ENOMEM and change nothing.
- `malloc_stats()` renders glibc's `__malloc_stats` text; `stats()` gives the
  mallinfo numbers behind it.

Simplified, and said so:

- Free chunks sit in one address-ordered best-fit list (smallest chunk that
  fits, lowest address among equals) instead of glibc's fastbins, tcache,
  unsorted, small and large bins; so every free coalesces at once, as glibc
  with tcache off and M_MXFAST = 0. The unsorted bin's last-remainder locality
  heuristic is not modelled.
- No mremap: a growing mmapped chunk is always moved.
- When brk fails there is no fallback to mmap'd non-contiguous heap space;
  when something else moved the break, the old top becomes a free chunk and
  the heap continues at the new break (no fenceposts are needed here), and the
  foreign bytes between them are not counted as system bytes.
- calloc cannot clear simulated memory itself: the caller passes a `zero`
  callback, which is asked to clear the whole block of a heap chunk (glibc
  sometimes skips fresh top memory) and nothing for a fresh mapping.
- realloc cannot copy simulated memory either: when the block moves it awaits
  the caller's `copy(src, dst, n)` callback, with n the old usable size as
  glibc's memcpy, before the old block is released (an mmapped old block is
  unmapped, so copying afterwards would be too late).
- Double free is recognised when the pointer lies in free space (a free chunk
  or top); a pointer to an already unmapped chunk is an invalid pointer, which
  is also what glibc's munmap_chunk reports.
"""

from __future__ import annotations

import asyncio
import errno as errno_codes
from bisect import bisect_left, insort
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

SIZE_SZ = 8
MALLOC_ALIGNMENT = 2 * SIZE_SZ
MALLOC_ALIGN_MASK = MALLOC_ALIGNMENT - 1
CHUNK_HDR_SZ = 2 * SIZE_SZ
MINSIZE = 32
PTRDIFF_MAX = (1 << 63) - 1
SIZE_MAX = (1 << 64) - 1

DEFAULT_MMAP_THRESHOLD = 128 * 1024
DEFAULT_MMAP_THRESHOLD_MAX = 4 * 1024 * 1024 * SIZE_SZ  # 32 MiB on 64-bit
DEFAULT_TRIM_THRESHOLD = 128 * 1024
DEFAULT_TOP_PAD = 128 * 1024
DEFAULT_MMAP_MAX = 65536
FASTBIN_CONSOLIDATION_THRESHOLD = 65536

CopyFn = Callable[[int, int, int], Awaitable[None]]
"""`copy(src, dst, n)`: copy n bytes of simulated memory from src to dst."""
ZeroFn = Callable[[int, int], Awaitable[None]]
"""`zero(addr, n)`: clear n bytes of simulated memory at addr."""


class MemoryBackend(Protocol):
    """The system calls that malloc uses, as the kernel offers them."""

    async def brk(self, addr: int) -> int:
        """brk(0) returns the break; brk(addr) moves it and returns the new
        break, or the old break unchanged when it cannot."""
        ...

    async def mmap(self, length: int) -> int:
        """An anonymous private read-write mapping; raises when it cannot."""
        ...

    async def munmap(self, addr: int, length: int) -> None:
        """Remove a mapping."""
        ...


class MallocError(Exception):
    """A fatal error that glibc reports and aborts on."""


class InvalidPointer(MallocError):
    """The pointer was not returned by malloc (or is no longer mapped)."""


class DoubleFree(MallocError):
    """The pointer was already freed."""


@dataclass(frozen=True)
class MallocStats:
    """The numbers of mallinfo(3) for the main arena, plus glibc's mp_ maxima."""

    arena: int
    """Bytes obtained with brk (system bytes of arena 0)."""
    ordblks: int
    """Free chunks, top included."""
    hblks: int
    """Chunks allocated with mmap."""
    hblkhd: int
    """Bytes in chunks allocated with mmap."""
    uordblks: int
    """Bytes in use in the arena (arena - fordblks), headers included."""
    fordblks: int
    """Free bytes in the arena: free chunks and top."""
    keepcost: int
    """Size of top: what trimming could give back at most."""
    max_n_mmaps: int
    max_mmapped_mem: int
    max_system_mem: int
    mmap_threshold: int
    trim_threshold: int

    @property
    def system_bytes(self) -> int:
        """Total (incl. mmap) system bytes."""
        return self.arena + self.hblkhd

    @property
    def in_use_bytes(self) -> int:
        """Total (incl. mmap) in-use bytes."""
        return self.uordblks + self.hblkhd


def request2size(req: int) -> int:
    """glibc's request2size: the chunk size that serves `req` bytes."""
    if req + SIZE_SZ + MALLOC_ALIGN_MASK < MINSIZE:
        return MINSIZE
    return (req + SIZE_SZ + MALLOC_ALIGN_MASK) & ~MALLOC_ALIGN_MASK


def _align_up(value: int, alignment: int) -> int:
    return (value + alignment - 1) & ~(alignment - 1)


def _align_down(value: int, alignment: int) -> int:
    return value & ~(alignment - 1)


def _u32(value: int) -> int:
    return value & 0xFFFFFFFF


def _u64(value: int) -> int:
    return value & 0xFFFFFFFFFFFFFFFF


class Malloc:
    """malloc, free, calloc, realloc over a MemoryBackend (glibc's main arena)."""

    def __init__(
        self,
        backend: MemoryBackend,
        page_size: int = 4096,
        *,
        mmap_threshold: int | None = None,
        trim_threshold: int | None = None,
        top_pad: int | None = None,
    ) -> None:
        if page_size < MALLOC_ALIGNMENT or page_size & (page_size - 1):
            raise ValueError(f"page size must be a power of two >= 16, not {page_size}")
        if mmap_threshold is not None and not 0 <= mmap_threshold <= DEFAULT_MMAP_THRESHOLD_MAX:
            raise ValueError(f"mmap threshold out of range: {mmap_threshold}")
        for name, value in (("trim threshold", trim_threshold), ("top pad", top_pad)):
            if value is not None and value < 0:
                raise ValueError(f"{name} must not be negative: {value}")
        self._backend = backend
        self.page_size = page_size
        # mallopt of any of these turns the dynamic threshold off (mp_.no_dyn_threshold).
        self._dynamic_threshold = mmap_threshold is None and trim_threshold is None
        self._dynamic_threshold &= top_pad is None
        self._mmap_threshold = DEFAULT_MMAP_THRESHOLD if mmap_threshold is None else mmap_threshold
        self._trim_threshold = DEFAULT_TRIM_THRESHOLD if trim_threshold is None else trim_threshold
        self._top_pad = DEFAULT_TOP_PAD if top_pad is None else top_pad
        self._n_mmaps_max = DEFAULT_MMAP_MAX
        self.errno = 0
        """Set to ENOMEM when a call returns 0 for want of memory, as glibc sets errno."""

        self._lock = asyncio.Lock()
        # Top chunk: [_top, _top + _top_size); _top_size == 0 before the first brk.
        self._top = 0
        self._top_size = 0
        # Heap chunks in use: chunk address -> chunk size.
        self._inuse: dict[int, int] = {}
        # Free heap chunks, by start and by end, and the best-fit list (size, address).
        self._free: dict[int, int] = {}
        self._free_by_end: dict[int, int] = {}
        self._bins: list[tuple[int, int]] = []
        # mmapped chunks: chunk address -> mapping length.
        self._mmapped: dict[int, int] = {}
        self._system_mem = 0
        self._max_system_mem = 0
        self._mmapped_mem = 0
        self._max_mmapped_mem = 0
        self._max_n_mmaps = 0

    # ------------------------------------------------------------------ public

    @property
    def mmap_threshold(self) -> int:
        """The current M_MMAP_THRESHOLD (moves with the dynamic threshold)."""
        return self._mmap_threshold

    @property
    def trim_threshold(self) -> int:
        """The current M_TRIM_THRESHOLD (moves with the dynamic threshold)."""
        return self._trim_threshold

    @property
    def top_pad(self) -> int:
        """M_TOP_PAD."""
        return self._top_pad

    async def malloc(self, size: int) -> int:
        """Allocate `size` bytes; the address, 16-byte aligned, or 0 (ENOMEM)."""
        _check_size(size)
        async with self._lock:
            if size > PTRDIFF_MAX:
                return self._enomem()
            chunk = await self._malloc_chunk(request2size(size))
            return 0 if chunk is None else chunk + CHUNK_HDR_SZ

    async def free(self, addr: int) -> None:
        """Release a block; free(0) does nothing.

        Raises InvalidPointer or DoubleFree, changing nothing, on a bad pointer.
        """
        if addr == 0:
            return
        async with self._lock:
            chunk = addr - CHUNK_HDR_SZ
            if chunk in self._mmapped:
                await self._munmap_chunk(chunk, dynamic=True)
            elif chunk in self._inuse:
                size = self._inuse.pop(chunk)
                await self._free_heap_chunk(chunk, size)
            elif self._in_free_space(addr):
                raise DoubleFree("double free or corruption")
            else:
                raise InvalidPointer("free(): invalid pointer")

    async def calloc(self, nmemb: int, size: int, zero: ZeroFn | None = None) -> int:
        """Allocate nmemb * size bytes, cleared; 0 (ENOMEM) when the product overflows.

        `zero(addr, n)` clears simulated memory; it is not called for a fresh
        mapping, which the kernel gives zeroed.
        """
        _check_size(nmemb)
        _check_size(size)
        total = nmemb * size
        async with self._lock:
            if total > SIZE_MAX or total > PTRDIFF_MAX:
                return self._enomem()
            chunk = await self._malloc_chunk(request2size(total))
            if chunk is None:
                return 0
            addr = chunk + CHUNK_HDR_SZ
            if zero is not None and chunk in self._inuse:
                try:
                    await zero(addr, self._inuse[chunk] - SIZE_SZ)
                except BaseException:
                    await self._release(chunk)
                    raise
            return addr

    async def realloc(self, addr: int, size: int, copy: CopyFn | None = None) -> int:
        """Resize a block; the new address (maybe `addr`), or 0.

        realloc(0, n) is malloc(n); realloc(p, 0) frees p and returns 0. When
        the block moves, `copy(old, new, n)` is awaited with n the old usable
        size before the old block is released: the allocator cannot move the
        simulated bytes itself. On failure (0, ENOMEM) the old block is intact.
        """
        _check_size(size)
        if addr == 0:
            return await self.malloc(size)
        if size == 0:
            await self.free(addr)
            return 0
        async with self._lock:
            chunk = addr - CHUNK_HDR_SZ
            if chunk not in self._inuse and chunk not in self._mmapped:
                raise InvalidPointer("realloc(): invalid pointer")
            if size > PTRDIFF_MAX:
                return self._enomem()
            nb = request2size(size)
            if chunk in self._mmapped:
                return await self._realloc_mmapped(chunk, nb, copy)
            return await self._realloc_heap(chunk, nb, copy)

    def usable_size(self, addr: int) -> int:
        """malloc_usable_size: the bytes the block really offers (0 for 0)."""
        if addr == 0:
            return 0
        chunk = addr - CHUNK_HDR_SZ
        if chunk in self._inuse:
            return self._inuse[chunk] - SIZE_SZ
        if chunk in self._mmapped:
            return self._mmapped[chunk] - CHUNK_HDR_SZ
        raise InvalidPointer("malloc_usable_size(): invalid pointer")

    def stats(self) -> MallocStats:
        """mallinfo for the main arena (int_mallinfo) and glibc's maxima."""
        free_bytes = self._top_size + sum(self._free.values())
        return MallocStats(
            arena=self._system_mem,
            ordblks=len(self._free) + 1,
            hblks=len(self._mmapped),
            hblkhd=self._mmapped_mem,
            uordblks=self._system_mem - free_bytes,
            fordblks=free_bytes,
            keepcost=self._top_size,
            max_n_mmaps=self._max_n_mmaps,
            max_mmapped_mem=self._max_mmapped_mem,
            max_system_mem=self._max_system_mem,
            mmap_threshold=self._mmap_threshold,
            trim_threshold=self._trim_threshold,
        )

    def malloc_stats(self) -> str:
        """The text that glibc's malloc_stats() prints on stderr."""
        s = self.stats()
        return (
            "Arena 0:\n"
            f"system bytes     = {_u32(s.arena):10d}\n"
            f"in use bytes     = {_u32(s.uordblks):10d}\n"
            "Total (incl. mmap):\n"
            f"system bytes     = {_u32(s.system_bytes):10d}\n"
            f"in use bytes     = {_u32(s.in_use_bytes):10d}\n"
            f"max mmap regions = {_u32(s.max_n_mmaps):10d}\n"
            f"max mmap bytes   = {_u64(s.max_mmapped_mem):10d}\n"
        )

    def live_blocks(self) -> dict[int, int]:
        """Every block handed out and not freed: address -> usable size."""
        blocks = {c + CHUNK_HDR_SZ: s - SIZE_SZ for c, s in self._inuse.items()}
        blocks.update({c + CHUNK_HDR_SZ: s - CHUNK_HDR_SZ for c, s in self._mmapped.items()})
        return blocks

    def free_chunks(self) -> list[tuple[int, int]]:
        """The free heap chunks (top excluded), as (chunk address, size) by address."""
        return sorted(self._free.items())

    @property
    def top(self) -> tuple[int, int]:
        """The top chunk as (address, size); size 0 before the heap exists."""
        return self._top, self._top_size

    # ---------------------------------------------------------------- internal

    def _enomem(self) -> int:
        self.errno = errno_codes.ENOMEM
        return 0

    async def _malloc_chunk(self, nb: int) -> int | None:
        """_int_malloc: a chunk of at least nb bytes, or None (ENOMEM)."""
        chunk = self._take_free(nb)
        if chunk is None:
            chunk = self._take_top(nb)
        if chunk is None:
            chunk = await self._sysmalloc(nb)
        if chunk is None:
            self._enomem()
        return chunk

    def _take_free(self, nb: int) -> int | None:
        i = bisect_left(self._bins, (nb, 0))
        if i == len(self._bins):
            return None
        size, chunk = self._bins[i]
        self._unlink(chunk)
        if size - nb >= MINSIZE:
            self._link(chunk + nb, size - nb)
            size = nb
        self._inuse[chunk] = size
        return chunk

    def _take_top(self, nb: int) -> int | None:
        if self._top_size < nb + MINSIZE:
            return None
        chunk = self._top
        self._top += nb
        self._top_size -= nb
        self._inuse[chunk] = nb
        return chunk

    async def _sysmalloc(self, nb: int) -> int | None:
        if nb >= self._mmap_threshold and len(self._mmapped) < self._n_mmaps_max:
            length = _align_up(nb + SIZE_SZ, self.page_size)
            try:
                mm = await self._backend.mmap(length)
            except Exception:
                mm = None
            if mm is not None:
                self._mmapped[mm] = length
                self._mmapped_mem += length
                self._max_n_mmaps = max(self._max_n_mmaps, len(self._mmapped))
                self._max_mmapped_mem = max(self._max_mmapped_mem, self._mmapped_mem)
                return mm
        if not await self._grow_heap(nb):
            return None
        return self._take_top(nb)

    async def _grow_heap(self, nb: int) -> bool:
        """Extend the heap with brk so that top can serve nb bytes."""
        try:
            current = await self._backend.brk(0)
        except Exception:
            return False
        old_end = self._top + self._top_size
        contiguous = self._top_size > 0 and current == old_end
        if self._top_size > 0 and current < old_end:
            return False  # someone moved the break into our heap
        start = old_end if contiguous else _align_up(current, MALLOC_ALIGNMENT)
        need = nb + self._top_pad + MINSIZE - (self._top_size if contiguous else 0)
        end = _align_up(start + need, self.page_size)
        try:
            if await self._backend.brk(end) != end:
                return False
        except Exception:
            return False
        self._system_mem += end - (old_end if contiguous else current)
        self._max_system_mem = max(self._max_system_mem, self._system_mem)
        if contiguous:
            self._top_size = end - self._top
            return True
        if self._top_size >= MINSIZE:
            # The old top, cut off by a foreign brk, becomes an ordinary free chunk.
            self._link(self._top, self._top_size)
        self._top, self._top_size = start, end - start
        return True

    def _link(self, chunk: int, size: int) -> None:
        self._free[chunk] = size
        self._free_by_end[chunk + size] = chunk
        insort(self._bins, (size, chunk))

    def _unlink(self, chunk: int) -> int:
        size = self._free.pop(chunk)
        del self._free_by_end[chunk + size]
        i = bisect_left(self._bins, (size, chunk))
        del self._bins[i]
        return size

    def _coalesce(self, chunk: int, size: int) -> int:
        """Put a chunk back with its free neighbours; the size of what it formed."""
        prev = self._free_by_end.get(chunk)
        if prev is not None:
            size += self._unlink(prev)
            chunk = prev
        nxt = chunk + size
        if self._top_size > 0 and nxt == self._top:
            self._top = chunk
            self._top_size += size
            return self._top_size
        if nxt in self._free:
            size += self._unlink(nxt)
        self._link(chunk, size)
        return size

    async def _free_heap_chunk(self, chunk: int, size: int) -> None:
        merged = self._coalesce(chunk, size)
        if merged >= FASTBIN_CONSOLIDATION_THRESHOLD and self._top_size >= self._trim_threshold:
            await self._systrim(self._top_pad)

    async def _systrim(self, pad: int) -> None:
        """Give back whole pages of top with brk, keeping `pad` bytes."""
        top_area = self._top_size - MINSIZE - 1
        if top_area <= pad:
            return
        extra = _align_down(top_area - pad, self.page_size)
        if extra == 0:
            return
        try:
            current = await self._backend.brk(0)
            if current != self._top + self._top_size:
                return  # the break is not ours to move
            new_brk = await self._backend.brk(current - extra)
        except Exception:
            return  # glibc ignores a failed trim: the memory simply stays
        released = current - new_brk
        if released > 0:
            self._system_mem -= released
            self._top_size -= released

    async def _munmap_chunk(self, chunk: int, *, dynamic: bool) -> None:
        length = self._mmapped[chunk]
        await self._backend.munmap(chunk, length)
        del self._mmapped[chunk]
        self._mmapped_mem -= length
        if (
            dynamic
            and self._dynamic_threshold
            and self._mmap_threshold < length <= DEFAULT_MMAP_THRESHOLD_MAX
        ):
            self._mmap_threshold = length
            self._trim_threshold = 2 * length

    def _in_free_space(self, addr: int) -> bool:
        if addr % MALLOC_ALIGNMENT:
            return False
        chunk = addr - CHUNK_HDR_SZ
        if self._top <= chunk < self._top + self._top_size:
            return True
        return any(start <= chunk < start + size for start, size in self._free.items())

    async def _realloc_mmapped(self, chunk: int, nb: int, copy: CopyFn | None) -> int:
        length = self._mmapped[chunk]
        if length - SIZE_SZ >= nb:
            return chunk + CHUNK_HDR_SZ
        new = await self._malloc_chunk(nb)
        if new is None:
            return 0
        try:
            if copy is not None:
                await copy(chunk + CHUNK_HDR_SZ, new + CHUNK_HDR_SZ, length - CHUNK_HDR_SZ)
            await self._munmap_chunk(chunk, dynamic=False)
        except BaseException:
            await self._release(new)
            raise
        return new + CHUNK_HDR_SZ

    async def _realloc_heap(self, chunk: int, nb: int, copy: CopyFn | None) -> int:
        oldsize = self._inuse[chunk]
        newsize = oldsize
        if oldsize < nb:
            nxt = chunk + oldsize
            if nxt == self._top and oldsize + self._top_size >= nb + MINSIZE:
                self._top = chunk + nb
                self._top_size = oldsize + self._top_size - nb
                self._inuse[chunk] = nb
                return chunk + CHUNK_HDR_SZ
            if nxt in self._free and oldsize + self._free[nxt] >= nb:
                newsize += self._unlink(nxt)
            else:
                new = await self._malloc_chunk(nb)
                if new is None:
                    return 0
                if new == nxt and new in self._inuse:
                    # Top grew and the new chunk is carved right after the old one.
                    newsize += self._inuse.pop(new)
                else:
                    try:
                        if copy is not None:
                            await copy(chunk + CHUNK_HDR_SZ, new + CHUNK_HDR_SZ, oldsize - SIZE_SZ)
                    except BaseException:
                        await self._release(new)
                        raise
                    del self._inuse[chunk]
                    await self._free_heap_chunk(chunk, oldsize)
                    return new + CHUNK_HDR_SZ
        if newsize - nb >= MINSIZE:
            self._inuse[chunk] = nb
            await self._free_heap_chunk(chunk + nb, newsize - nb)
        else:
            self._inuse[chunk] = newsize
        return chunk + CHUNK_HDR_SZ

    async def _release(self, chunk: int) -> None:
        """Undo an allocation made on the way (heap or mmapped)."""
        if chunk in self._mmapped:
            await self._munmap_chunk(chunk, dynamic=False)
        else:
            await self._free_heap_chunk(chunk, self._inuse.pop(chunk))


def _check_size(size: int) -> None:
    if size < 0:
        raise ValueError(f"size must not be negative: {size}")
