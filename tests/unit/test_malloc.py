"""The glibc-style malloc of the process client, over a fake brk/mmap backend.

The expected numbers are worked out by hand from glibc's rules (64-bit:
request2size(n) = max(32, (n + 8 + 15) & ~15); first heap = nb + 128 KiB +
32 rounded up to pages; an mmapped chunk = nb + 8 rounded up to pages).
"""

from __future__ import annotations

import asyncio
import errno
import itertools
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memsim.clients.process.malloc import (
    DEFAULT_MMAP_THRESHOLD,
    DEFAULT_TOP_PAD,
    DEFAULT_TRIM_THRESHOLD,
    MINSIZE,
    DoubleFree,
    InvalidPointer,
    Malloc,
    request2size,
)

PAGE = 4096
BRK0 = 0x5555_5000_0000
MMAP_BASE = 0x7F00_0000_0000
FIRST_HEAP = 135168  # align_up(32 + 131072 + 32, 4096): glibc's familiar 0x21000


@dataclass
class FakeBackend:
    """brk and mmap as the kernel answers them, recorded, and able to refuse."""

    brk_now: int = BRK0
    fail_brk: bool = False
    fail_mmap: bool = False
    calls: list[tuple[str, int, int]] = field(default_factory=list)
    mappings: dict[int, int] = field(default_factory=dict)
    memory: dict[int, int] = field(default_factory=dict)
    next_mmap: int = MMAP_BASE

    async def brk(self, addr: int) -> int:
        self.calls.append(("brk", addr, 0))
        if addr == 0 or self.fail_brk or addr < BRK0:
            return self.brk_now
        self.brk_now = addr
        return addr

    async def mmap(self, length: int) -> int:
        self.calls.append(("mmap", length, 0))
        if self.fail_mmap:
            raise OSError(errno.ENOMEM, "Cannot allocate memory")
        assert length % PAGE == 0
        addr = self.next_mmap
        self.next_mmap += length + PAGE
        self.mappings[addr] = length
        return addr

    async def munmap(self, addr: int, length: int) -> None:
        self.calls.append(("munmap", addr, length))
        assert self.mappings.pop(addr) == length

    async def copy(self, src: int, dst: int, n: int) -> None:
        self.calls.append(("copy", src, dst))
        for a in [a for a in self.memory if src <= a < src + n]:
            self.memory[dst + a - src] = self.memory[a]

    async def zero(self, addr: int, n: int) -> None:
        self.calls.append(("zero", addr, n))

    def syscalls(self) -> list[tuple[str, int, int]]:
        return [c for c in self.calls if c[0] in ("brk", "mmap", "munmap")]


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def m(backend: FakeBackend) -> Malloc:
    return Malloc(backend)


def snapshot(m: Malloc) -> tuple[object, ...]:
    """Everything a failed call must leave as it was."""
    return (m.stats(), m.free_chunks(), m.top, m.live_blocks())


# ---------------------------------------------------------------- geometry


@pytest.mark.parametrize(
    ("req", "nb"), [(0, 32), (1, 32), (24, 32), (25, 48), (40, 48), (41, 64), (1000, 1008)]
)
def test_request2size_as_glibc(req: int, nb: int) -> None:
    assert request2size(req) == nb


async def test_every_address_is_16_byte_aligned(m: Malloc) -> None:
    sizes = [0, 1, 7, 8, 15, 16, 17, 24, 25, 100, 1000, 4095, 70_000, 131_072, 200_000]
    addrs = [await m.malloc(n) for n in sizes]
    addrs += [await m.calloc(3, 33), await m.realloc(0, 333)]
    addrs.append(await m.realloc(addrs[3], 5000))
    for a in addrs:
        assert a != 0
        assert a % 16 == 0
    for a, n in zip(addrs, sizes, strict=False):
        if a in m.live_blocks():
            assert m.usable_size(a) >= n


async def test_malloc_zero_returns_a_unique_minimum_chunk(m: Malloc) -> None:
    a, b = await m.malloc(0), await m.malloc(0)
    assert a != 0
    assert b == a + MINSIZE
    assert m.usable_size(a) == MINSIZE - 8
    assert m.usable_size(0) == 0


async def test_first_heap_is_brk_grown_by_request_plus_top_pad(
    m: Malloc, backend: FakeBackend
) -> None:
    a = await m.malloc(1)
    assert a == BRK0 + 16
    assert backend.syscalls() == [("brk", 0, 0), ("brk", BRK0 + FIRST_HEAP, 0)]
    assert m.top == (BRK0 + 32, FIRST_HEAP - 32)
    b = await m.malloc(100)
    assert b == BRK0 + 32 + 16
    assert len(backend.syscalls()) == 2  # served from top: no system call


# ------------------------------------------------------------ brk and mmap


async def test_small_requests_come_from_brk(m: Malloc, backend: FakeBackend) -> None:
    addrs = [await m.malloc(n) for n in (10, 500, 4000, 60_000, 131_000)]
    assert all(BRK0 <= a < backend.brk_now for a in addrs)
    assert backend.mappings == {}
    assert not any(c[0] == "mmap" for c in backend.calls)


async def test_large_requests_are_mmapped_and_munmapped_on_free(
    m: Malloc, backend: FakeBackend
) -> None:
    a = await m.malloc(128 * 1024)
    # nb = 131088; the mapping holds nb + 8 rounded up to pages.
    assert backend.syscalls() == [("mmap", 135168, 0)]
    assert a == MMAP_BASE + 16
    assert m.usable_size(a) == 135168 - 16
    assert m.stats().hblks == 1
    assert m.stats().hblkhd == 135168
    await m.free(a)
    assert backend.syscalls()[-1] == ("munmap", MMAP_BASE, 135168)
    assert backend.mappings == {}
    assert m.stats().hblkhd == 0


async def test_large_request_served_from_the_free_list_first(backend: FakeBackend) -> None:
    # mallopt(3): mmap serves the requests "that can't be satisfied from the free list".
    m = Malloc(backend, mmap_threshold=64 * 1024)
    await m.malloc(100)
    big = await m.malloc(70_000)  # nb = 70016 >= threshold, but top holds 135056
    assert BRK0 < big < backend.brk_now
    assert backend.mappings == {}


async def test_failed_mmap_falls_back_to_brk(m: Malloc, backend: FakeBackend) -> None:
    backend.fail_mmap = True
    a = await m.malloc(200_000)
    assert BRK0 < a < backend.brk_now
    assert m.stats().arena == 331_776  # align_up(200016 + 131072 + 32, 4096)


# --------------------------------------------------------------- coalescing


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
async def test_three_adjacent_free_chunks_coalesce_into_one(
    m: Malloc, order: tuple[int, int, int]
) -> None:
    blocks = [await m.malloc(100) for _ in range(3)]
    guard = await m.malloc(100)  # keeps the third block away from top
    for i in order:
        await m.free(blocks[i])
    assert m.free_chunks() == [(blocks[0] - 16, 3 * 112)]
    assert m.stats().ordblks == 2  # that chunk and top
    await m.free(guard)  # now everything merges into top
    assert m.free_chunks() == []
    assert m.top == (BRK0, FIRST_HEAP)
    assert m.stats().uordblks == 0


async def test_free_chunk_next_to_top_merges_into_top(m: Malloc) -> None:
    a = await m.malloc(100)
    b = await m.malloc(100)
    await m.free(b)
    assert m.free_chunks() == []
    assert m.top == (b - 16, FIRST_HEAP - 112)
    await m.free(a)
    assert m.top == (BRK0, FIRST_HEAP)


async def test_freed_chunks_are_reused_best_fit_and_split(m: Malloc) -> None:
    a = await m.malloc(1000)  # chunk 1008
    await m.malloc(10)
    b = await m.malloc(200)  # chunk 208
    await m.malloc(10)
    c = await m.malloc(500)  # chunk 512
    await m.malloc(10)
    for p in (a, b, c):
        await m.free(p)
    # 160 fits b (208) best: split, the 48-byte remainder stays free.
    assert await m.malloc(150) == b
    assert (b - 16 + 160, 48) in m.free_chunks()
    # 496 fits c (512): a 16-byte remainder is too small to split, c goes whole.
    assert await m.malloc(490) == c
    assert m.usable_size(c) == 512 - 8
    # 32 fits the 48-byte remainder best, whole again.
    d = await m.malloc(10)
    assert d == b - 16 + 160 + 16
    assert m.usable_size(d) == 40
    assert m.free_chunks() == [(a - 16, 1008)]


# ------------------------------------------------------------------ trimming


async def test_freeing_a_large_tail_trims_the_heap_with_brk(
    m: Malloc, backend: FakeBackend
) -> None:
    a = await m.malloc(100)  # heap 135168, top 135056
    big = await m.malloc(120_000)  # nb 120016 from top: top 15040
    tail = await m.malloc(100_000)  # nb 100016: grow by align_up(216080) = 217088
    assert m.stats().arena == FIRST_HEAP + 217_088
    assert m.top[1] == 15_040 + 217_088 - 100_016
    await m.free(tail)
    # top 232128 >= trim threshold: give back align_down(232128 - 33 - 131072) = 98304.
    assert backend.brk_now == BRK0 + 352_256 - 98_304
    assert m.top[1] == 232_128 - 98_304
    await m.free(big)
    # top 253840: give back align_down(253807 - 131072) = 118784, back to the first heap.
    assert backend.brk_now == BRK0 + FIRST_HEAP
    assert m.stats().arena == FIRST_HEAP
    assert m.top == (a - 16 + 112, FIRST_HEAP - 112)


async def test_trim_keeps_the_top_pad(m: Malloc, backend: FakeBackend) -> None:
    a = await m.malloc(100_000)  # heap align_up(100016 + 131072 + 32) = 233472
    await m.free(a)
    # give back align_down(233472 - 33 - 131072, 4096) = 98304
    assert backend.brk_now == BRK0 + FIRST_HEAP
    await m.free(await m.malloc(10))
    assert backend.brk_now == BRK0 + FIRST_HEAP  # less than a page over the pad: kept


async def test_trim_is_skipped_when_someone_else_moved_the_break(
    m: Malloc, backend: FakeBackend
) -> None:
    await m.malloc(10)
    big = await m.malloc(120_000)
    tail = await m.malloc(100_000)
    backend.brk_now += PAGE  # a foreign brk (the program's own)
    arena = m.stats().arena
    await m.free(tail)
    await m.free(big)
    assert m.stats().arena == arena


async def test_growth_after_a_foreign_brk_starts_a_new_top(m: Malloc, backend: FakeBackend) -> None:
    await m.malloc(100)
    await m.malloc(100_000)  # nb 100016 from the first heap's top: 35040 left
    old_top = m.top
    foreign = backend.brk_now + PAGE
    backend.brk_now = foreign
    c = await m.malloc(100_000)
    assert c == foreign + 16
    assert m.free_chunks() == [old_top]  # the old top became a free chunk
    assert m.stats().arena == FIRST_HEAP + 233_472  # the foreign page is not ours
    assert backend.brk_now == foreign + 233_472


# --------------------------------------------------------- dynamic threshold


async def test_freeing_a_large_mapping_raises_the_mmap_threshold(
    m: Malloc, backend: FakeBackend
) -> None:
    a = await m.malloc(200_000)  # nb 200016: mapping of 200704
    assert m.mmap_threshold == DEFAULT_MMAP_THRESHOLD
    await m.free(a)
    assert m.mmap_threshold == 200_704
    assert m.trim_threshold == 2 * 200_704
    b = await m.malloc(200_000)  # now below the threshold: from the heap
    assert BRK0 < b < backend.brk_now
    assert backend.mappings == {}
    c = await m.malloc(200_689)  # nb 200704 >= threshold: mmapped again
    assert c >= MMAP_BASE


async def test_threshold_ignores_chunks_above_32_mib(m: Malloc) -> None:
    a = await m.malloc(40 * 1024 * 1024)
    await m.free(a)
    assert m.mmap_threshold == DEFAULT_MMAP_THRESHOLD
    assert m.trim_threshold == DEFAULT_TRIM_THRESHOLD


async def test_explicit_threshold_is_static(backend: FakeBackend) -> None:
    m = Malloc(backend, mmap_threshold=DEFAULT_MMAP_THRESHOLD)
    await m.free(await m.malloc(200_000))
    assert m.mmap_threshold == DEFAULT_MMAP_THRESHOLD


# ------------------------------------------------------------------- realloc


async def test_realloc_grows_in_place_into_a_free_next_chunk(
    m: Malloc, backend: FakeBackend
) -> None:
    a = await m.malloc(100)
    b = await m.malloc(100)
    await m.malloc(100)
    await m.free(b)
    assert await m.realloc(a, 200, backend.copy) == a  # 112 + 112 >= 208
    assert m.usable_size(a) == 224 - 8  # remainder 16 < MINSIZE: taken whole
    assert m.free_chunks() == []
    assert not any(c[0] == "copy" for c in backend.calls)


async def test_realloc_grows_in_place_into_top(m: Malloc, backend: FakeBackend) -> None:
    a = await m.malloc(100)
    assert await m.realloc(a, 10_000, backend.copy) == a
    assert m.top == (a - 16 + 10_016, FIRST_HEAP - 10_016)


async def test_realloc_extends_top_when_it_is_too_small(backend: FakeBackend) -> None:
    m = Malloc(backend, mmap_threshold=1 << 20)
    a = await m.malloc(100)
    assert await m.realloc(a, 200_000, backend.copy) == a  # top grows behind it
    assert m.usable_size(a) == 200_016 - 8
    assert not any(c[0] == "copy" for c in backend.calls)


async def test_realloc_moves_and_asks_the_caller_to_copy(m: Malloc, backend: FakeBackend) -> None:
    a = await m.malloc(100)
    g = await m.malloc(100)
    backend.memory[a] = 42
    new = await m.realloc(a, 1000, backend.copy)
    assert new == g + 112
    assert ("copy", a, new) in backend.calls
    assert backend.memory[new] == 42
    assert m.free_chunks() == [(a - 16, 112)]
    assert a not in m.live_blocks()


async def test_realloc_shrinks_in_place_and_frees_the_tail(m: Malloc) -> None:
    a = await m.malloc(1000)
    await m.malloc(10)
    assert await m.realloc(a, 100) == a
    assert m.usable_size(a) == 104
    assert m.free_chunks() == [(a - 16 + 112, 1008 - 112)]


async def test_realloc_of_a_mapping(m: Malloc, backend: FakeBackend) -> None:
    a = await m.malloc(200_000)  # mapping of 200704
    assert await m.realloc(a, 200_600) == a  # nb 200624 <= 200704 - 8: stays
    backend.memory[a + 5] = 7
    new = await m.realloc(a, 300_000, backend.copy)
    assert new != a
    assert ("copy", a, new) in backend.calls
    assert backend.memory[new + 5] == 7
    assert ("munmap", a - 16, 200_704) in backend.calls
    assert m.mmap_threshold == DEFAULT_MMAP_THRESHOLD  # realloc's munmap leaves it


async def test_realloc_zero_and_null(m: Malloc) -> None:
    a = await m.realloc(0, 50)
    assert a in m.live_blocks()
    assert await m.realloc(a, 0) == 0
    assert m.live_blocks() == {}


async def test_failed_realloc_keeps_the_old_block(m: Malloc, backend: FakeBackend) -> None:
    a = await m.malloc(100)
    await m.malloc(100)
    before = m.live_blocks()
    backend.fail_brk = backend.fail_mmap = True
    assert await m.realloc(a, 1_000_000, backend.copy) == 0
    assert m.errno == errno.ENOMEM
    assert m.live_blocks() == before


# -------------------------------------------------------------------- calloc


async def test_calloc_overflow_returns_null(m: Malloc, backend: FakeBackend) -> None:
    assert await m.calloc(2**32, 2**32) == 0
    assert await m.calloc(2**62, 4) == 0
    assert m.errno == errno.ENOMEM
    assert backend.calls == []
    with pytest.raises(ValueError, match="negative"):
        await m.calloc(-1, 8)


async def test_calloc_clears_heap_blocks_but_not_fresh_mappings(
    m: Malloc, backend: FakeBackend
) -> None:
    a = await m.calloc(10, 10, backend.zero)
    assert ("zero", a, 104) in backend.calls
    backend.calls.clear()
    b = await m.calloc(1000, 1000, backend.zero)
    assert b >= MMAP_BASE
    assert not any(c[0] == "zero" for c in backend.calls)


# -------------------------------------------------------------------- errors


async def test_invalid_free_changes_nothing(m: Malloc, backend: FakeBackend) -> None:
    a = await m.malloc(100)
    await m.malloc(100)
    before, calls = snapshot(m), list(backend.calls)
    for bad in (a + 8, a + 16 * 100_000, 12345, BRK0 - 4096):
        with pytest.raises(InvalidPointer, match=r"free\(\): invalid pointer"):
            await m.free(bad)
    with pytest.raises(InvalidPointer):
        await m.realloc(a + 32, 10)
    with pytest.raises(InvalidPointer):
        m.usable_size(a + 8)
    assert snapshot(m) == before
    assert backend.calls == calls


async def test_double_free_changes_nothing(m: Malloc, backend: FakeBackend) -> None:
    a = await m.malloc(100)
    b = await m.malloc(100)
    await m.malloc(100)
    await m.free(a)
    await m.free(b)  # merged into a's free chunk
    before, calls = snapshot(m), list(backend.calls)
    for p in (a, b):
        with pytest.raises(DoubleFree, match="double free or corruption"):
            await m.free(p)
    assert snapshot(m) == before
    assert backend.calls == calls


async def test_double_free_into_top_and_of_a_mapping(m: Malloc) -> None:
    a = await m.malloc(100)
    await m.free(a)  # merged into top
    with pytest.raises(DoubleFree):
        await m.free(a)
    big = await m.malloc(1 << 20)
    await m.free(big)
    with pytest.raises(InvalidPointer):  # glibc: munmap_chunk(): invalid pointer
        await m.free(big)


async def test_negative_sizes_are_rejected(m: Malloc) -> None:
    with pytest.raises(ValueError, match="negative"):
        await m.malloc(-1)
    with pytest.raises(ValueError, match="negative"):
        await m.realloc(0, -5)


async def test_backend_failure_returns_null_and_changes_nothing(
    m: Malloc, backend: FakeBackend
) -> None:
    await m.malloc(100)
    await m.malloc(100_000)  # top: 35008 left
    before = snapshot(m)
    backend.fail_brk = backend.fail_mmap = True
    assert await m.malloc(50_000) == 0  # top too small, brk refused
    assert await m.malloc(1 << 20) == 0  # mmap refused, then brk
    assert m.errno == errno.ENOMEM
    assert snapshot(m) == before
    assert backend.brk_now == BRK0 + FIRST_HEAP
    assert await m.malloc(100) != 0  # what top still holds is served
    assert await m.malloc(1 << 70) == 0  # beyond PTRDIFF_MAX


# --------------------------------------------------------------- malloc_stats


async def test_malloc_stats_text_is_glibcs(m: Malloc) -> None:
    assert m.malloc_stats() == (
        "Arena 0:\n"
        "system bytes     =          0\n"
        "in use bytes     =          0\n"
        "Total (incl. mmap):\n"
        "system bytes     =          0\n"
        "in use bytes     =          0\n"
        "max mmap regions =          0\n"
        "max mmap bytes   =          0\n"
    )
    await m.malloc(100)  # heap 135168, chunk 112
    b = await m.malloc(200_000)  # mapping 200704
    await m.malloc(1000)  # chunk 1008
    await m.malloc(300_000)  # mapping 303104
    await m.free(b)
    assert m.malloc_stats() == (
        "Arena 0:\n"
        "system bytes     =     135168\n"
        "in use bytes     =       1120\n"
        "Total (incl. mmap):\n"
        "system bytes     =     438272\n"
        "in use bytes     =     304224\n"
        "max mmap regions =          2\n"
        "max mmap bytes   =     503808\n"
    )
    s = m.stats()
    assert (s.ordblks, s.hblks, s.keepcost) == (1, 1, 135168 - 1120)
    assert s.fordblks + s.uordblks == s.arena


# ------------------------------------------------------------------ property

ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("malloc"),
            st.one_of(st.integers(0, 2000), st.integers(0, 150_000), st.integers(0, 400_000)),
        ),
        st.tuples(st.just("free"), st.integers(0, 1000)),
        st.tuples(st.just("realloc"), st.integers(0, 1000), st.integers(1, 300_000)),
        st.tuples(st.just("fail"), st.integers(0, 200_000)),
    ),
    max_size=40,
)


def check_invariants(m: Malloc, backend: FakeBackend) -> None:
    blocks = sorted(m.live_blocks().items())
    for (a, n), (b, _) in itertools.pairwise(blocks):
        assert a + n <= b, "overlapping live blocks"
    for a, n in blocks:
        assert a % 16 == 0
        inside_heap = a >= BRK0 and a + n <= backend.brk_now
        inside_map = any(s <= a and a + n <= s + ln for s, ln in backend.mappings.items())
        assert inside_heap or inside_map
    s = m.stats()
    assert s.uordblks + s.fordblks == s.arena
    assert s.hblkhd == sum(backend.mappings.values())
    assert s.arena == backend.brk_now - BRK0


async def run_ops(script: list[tuple[str, ...]], static: bool) -> None:
    backend = FakeBackend()
    m = Malloc(backend, mmap_threshold=DEFAULT_MMAP_THRESHOLD) if static else Malloc(backend)
    live: list[int] = []
    tags: dict[int, int] = {}
    for step, op in enumerate(script):
        if op[0] == "malloc":
            a = await m.malloc(int(op[1]))
            live.append(a)
            backend.memory[a] = tags[a] = step
        elif op[0] == "free" and live:
            a = live.pop(int(op[1]) % len(live))
            await m.free(a)
            del backend.memory[a], tags[a]
        elif op[0] == "realloc" and live:
            i = int(op[1]) % len(live)
            new = await m.realloc(live[i], int(op[2]), backend.copy)
            assert backend.memory[new] == tags[live[i]]
            tag = tags.pop(live[i])
            if new != live[i]:
                del backend.memory[live[i]]
            live[i], tags[new] = new, tag
        elif op[0] == "fail":
            backend.fail_brk = backend.fail_mmap = True
            before = snapshot(m)
            a = await m.malloc(int(op[1]))
            backend.fail_brk = backend.fail_mmap = False
            if a == 0:
                assert snapshot(m) == before
            else:
                live.append(a)
                backend.memory[a] = tags[a] = step
        check_invariants(m, backend)
    for a in live:
        await m.free(a)
    s = m.stats()
    assert s.in_use_bytes == 0
    assert backend.mappings == {}
    assert m.free_chunks() == []
    trimmed = DEFAULT_TOP_PAD + MINSIZE + PAGE
    assert s.arena <= (trimmed if static else max(trimmed, m.trim_threshold))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=ops, static=st.booleans())
def test_random_sequences_never_overlap_and_free_everything(
    script: list[tuple[str, ...]], static: bool
) -> None:
    asyncio.run(run_ops(script, static))
