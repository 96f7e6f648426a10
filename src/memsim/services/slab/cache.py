"""One kmem cache: its slabs on the full, partial and free lists, and the
objects in them (mm/slab.c of 2.6.24).

Pure and synchronous, and it never talks to the zone service: growing is a
plan and an apply. slabs_needed(count) says how many new slabs an allocation
of count objects takes; alloc(count, pfns) is then given the first pfn of a
2^gfporder block for each (as kmem_getpages would get them with
page_gfp()), uses what it needs and hands back the rest. Whatever frees
slabs (free beyond free_limit, shrink, reap, destroy) returns their
(pfn, order) blocks for the caller to give back.

Objects are known by their kernel virtual address in the direct map:
PAGE_OFFSET + pfn * PAGE_SIZE + colour offset (+ the on-slab management) +
index * buffer_size (+ the red zone word). kfree finds the slab from the page
(virt_to_page, page_get_slab) as the kernel does. Object bytes are real: a
slab's pages are one bytearray that callers read and write.

The per-CPU array cache (struct array_cache) is modelled for the one CPU
the service runs as: each cache has one array of up to limit objects. A
free (__cache_free) checks the object (cache_free_debugcheck) and puts it on
the array, LIFO; when the array is full, cache_flusharray first gives its
batchcount oldest entries to free_block, which puts them back in their
slabs. An allocation (____cache_alloc) takes the most recently freed objects
from the array first, and only then objects from the slabs. Unlike
cache_alloc_refill, a miss takes exactly the objects asked for from the
slabs and does not fill the array with batchcount of them. An object on the
array is free for its caller (live and slab.active say so; freeing it again
is a double free) but in use for its slab (slab.inuse counts it, it is not
on slab.free, and active_objs counts it, as /proc/slabinfo does); the
poison and red zones are checked again when it is allocated from the array
(cache_alloc_debugcheck_after), and the constructor does not run again.
shrink() and destroy drain the array first (drain_cpu_caches); reap() does
what drain_array does for an array no allocation touched since the last reap
((limit + 4) / 5 of its oldest objects go back to the slabs), then frees free
slabs as cache_reap does.

Not modelled: the shared and alien array caches (sharedavail is 0; the
tunables are printed as enable_cpucache sets them), per-node lists (one
kmem_list3 for the machine), the cache_cache and off-slab descriptors' own
kmalloc objects, and SLAB_DESTROY_BY_RCU's grace period. Free slabs are kept
up to free_limit = (1 + the node's CPUs) * batchcount + num free objects, as
free_block does; beyond that a slab that becomes empty is destroyed at once,
and shrink() or reap() release the ones kept.
"""

from __future__ import annotations

import functools
import itertools
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from memsim.profiles.loader import MachineProfile
from memsim.services.slab import flags as f
from memsim.services.slab.constructors import ByteOrder, constructor
from memsim.services.slab.debug import (
    POISON_FREE,
    POISON_INUSE,
    RED_ACTIVE,
    RED_INACTIVE,
    DebugEnv,
)
from memsim.services.slab.errors import (
    BadAddress,
    BadRequest,
    DoubleFree,
    NoMemory,
    NotAllocated,
    WrongCache,
)
from memsim.services.slab.estimate import SlabArch, cpucache_tunables, kmem_cache_layout
from memsim.services.slab.klog import KernelLog
from memsim.services.zone import gfp as g

# Objects in one alloc or free call.
MAX_BATCH = 1 << 16
# include/linux/gfp.h of 2.6.24.
GFP_CONSTRAINT_MASK = g.__GFP_HARDWALL | g.__GFP_THISNODE
GFP_RECLAIM_MASK = (
    g.__GFP_WAIT
    | g.__GFP_HIGH
    | g.__GFP_IO
    | g.__GFP_FS
    | g.__GFP_NOWARN
    | g.__GFP_REPEAT
    | g.__GFP_NOFAIL
    | g.__GFP_NORETRY
    | g.__GFP_NOMEMALLOC
)
# "Do not use these with a slab allocator" (the ~__GFP_BITS_MASK part is
# checked separately).
GFP_SLAB_BUG_MASK = g.__GFP_DMA32 | g.__GFP_HIGHMEM
# Bits used inside classes, where "__GFP_ZERO" would be name-mangled.
GFP_ZERO, GFP_RECLAIMABLE, GFP_COMP = g.__GFP_ZERO, g.__GFP_RECLAIMABLE, g.__GFP_COMP
NAME_MAX = 64

FULL, PARTIAL, FREE = 0, 1, 2


def check_name(name: str) -> None:
    """Names end up as the first field of /proc/slabinfo lines: no blanks
    (kmem_cache_create warns, "It confuses parsers")."""
    if not isinstance(name, str) or not 1 <= len(name) <= NAME_MAX:
        raise BadRequest(f"cache name must be 1..{NAME_MAX} characters, not {name!r}")
    if not name.isascii() or not name.isprintable() or any(c.isspace() for c in name):
        raise BadRequest(f"cache name {name!r} must be printable ASCII without blanks")


def check_slab_gfp(gfp: int) -> None:
    if isinstance(gfp, bool) or not isinstance(gfp, int) or gfp < 0 or gfp & ~g.__GFP_BITS_MASK:
        raise BadRequest(f"gfp_mask {gfp!r} is not a mask within __GFP_BITS_MASK")
    if gfp & GFP_SLAB_BUG_MASK:
        raise BadRequest(
            f"gfp_mask {gfp:#x} ({g.format_gfp(gfp)}) has __GFP_DMA32 or __GFP_HIGHMEM, "
            "which slab allocations cannot use (GFP_SLAB_BUG_MASK)"
        )


def check_count(count: int, what: str = "objects") -> None:
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_BATCH:
        raise BadRequest(f"count of {what} must be 1..{MAX_BATCH}, not {count!r}")


@dataclass
class SlabEnv:
    """What every cache of one allocator shares: the machine's constants, the
    page map (every slab page's pfn to its slab), the kernel log and the
    allocation clock that orders objects oldest first."""

    arch: SlabArch = field(default_factory=SlabArch)
    page_offset: int = 0xC0000000
    byteorder: ByteOrder = "little"
    x86: bool = True
    zone_dma: bool = True  # CONFIG_ZONE_DMA: SLAB_CACHE_DMA means GFP_DMA
    nommu: bool = False  # kmem_getpages adds __GFP_COMP without an MMU
    max_pfn: int | None = None  # end of the direct map, where slab pages must lie
    log: KernelLog = field(default_factory=KernelLog)
    pagemap: dict[int, Slab] = field(default_factory=dict)
    clock: Iterator[int] = field(default_factory=itertools.count)
    # Pages someone else in this service holds (vmalloc's): never slab pages.
    taken_elsewhere: Callable[[int], bool] = lambda pfn: False

    @classmethod
    def from_profile(cls, profile: MachineProfile) -> SlabEnv:
        lowmem = [
            z.start_pfn + z.pages for z in profile.zones if z.name not in ("HighMem", "Movable")
        ]
        return cls(
            arch=SlabArch.from_profile(profile),
            page_offset=profile.page_offset,
            byteorder="big" if profile.big_endian else "little",
            x86=profile.arch in ("i386", "x86_64"),
            zone_dma="DMA" in profile.zone_types,
            nommu=not profile.mmu,
            max_pfn=max(lowmem, default=0),
        )

    @functools.cached_property
    def page_shift(self) -> int:
        return self.arch.page_size.bit_length() - 1

    def slab_of(self, addr: int) -> Slab | None:
        """virt_to_page + page_get_slab: None outside every slab."""
        if type(addr) is not int or addr < self.page_offset:  # no bool, no int subclass
            return None
        return self.pagemap.get((addr - self.page_offset) >> self.page_shift)


class Slab:
    """struct slab: one 2^gfporder block of pages cut into num objects."""

    __slots__ = ("active", "base", "cache", "colouroff", "free", "inuse", "list", "mem", "pfn")

    def __init__(self, cache: KmemCache, pfn: int, base: int, colouroff: int) -> None:
        layout = cache.layout
        self.cache = cache
        self.pfn = pfn
        self.base = base  # page_address() of the first page
        self.colouroff = colouroff  # s_mem - base: colour (+ management if on-slab)
        self.mem = bytearray(layout.slab_bytes)
        self.inuse = 0
        # The bufctl chain as a stack: the top is slabp->free, 0 at first.
        self.free = list(range(layout.num - 1, -1, -1))
        self.active = bytearray(layout.num)
        self.list = FREE

    @property
    def s_mem(self) -> int:
        return self.base + self.colouroff


@dataclass
class CacheStats:
    """Event counts since the cache was created (the collector reads these)."""

    allocations: int = 0
    frees: int = 0
    ctor_calls: int = 0
    grown: int = 0  # slabs made
    destroyed: int = 0  # slabs given back
    errors: int = 0  # corruption reports written to the kernel log


@dataclass(frozen=True)
class AllocResult:
    addresses: list[int]
    # pfns supplied but not needed (blocks of the cache's order): give back.
    unused_pfns: list[int]


@dataclass(frozen=True)
class CacheInfo:
    """A snapshot of a cache for /proc/slabinfo, slabtop and metrics."""

    name: str
    obj_size: int
    buffer_size: int
    align: int
    flags: int
    ctor: str
    num: int
    gfporder: int
    colour: int
    colour_off: int
    off_slab: bool
    reclaimable: bool
    active_objs: int
    num_objs: int
    active_slabs: int
    num_slabs: int
    free_slabs: int
    limit: int
    batchcount: int
    shared: int
    stats: CacheStats
    array_avail: int = 0  # objects on the per-CPU array: free, but active_objs

    @property
    def in_use(self) -> int:
        """Objects allocated and not freed by their callers."""
        return self.active_objs - self.array_avail

    @property
    def pages(self) -> int:
        return self.num_slabs << self.gfporder


class KmemCache:
    def __init__(
        self,
        env: SlabEnv,
        name: str,
        size: int,
        align: int = 0,
        flags: int = 0,
        ctor: str | None = None,
        *,
        kmalloc: bool = False,
        boot: bool = False,
    ) -> None:
        """kmem_cache_create; raises BadRequest for what it would refuse or BUG on."""
        check_name(name)
        self.env = env
        self.name = name
        self.requested_size = size
        self.layout = kmem_cache_layout(env.arch, name, size, align, flags)
        self.ctor = constructor(ctor)
        self.kmalloc = kmalloc  # one of kmalloc's size-N caches: kfree may free its objects
        self.boot = boot  # made at boot: never destroyed
        self.flags = self.layout.flags
        self.num = self.layout.num
        self.gfporder = self.layout.gfporder
        self.gfpflags = g.GFP_DMA if flags & f.SLAB_CACHE_DMA and env.zone_dma else 0
        self.reclaimable = bool(flags & f.SLAB_RECLAIM_ACCOUNT)
        self.tunables = cpucache_tunables(env.arch, self.layout.buffer_size, self.num)
        self.debug = DebugEnv(name, self.layout, env.byteorder, env.x86, env.log)
        self.debugging = bool(self.flags & (f.SLAB_POISON | f.SLAB_RED_ZONE | f.SLAB_STORE_USER))
        self.lists: tuple[OrderedDict[int, Slab], ...] = (
            OrderedDict(),
            OrderedDict(),
            OrderedDict(),
        )
        self.free_objects = 0
        self.colour_next = 0
        self.free_touched = False
        # Allocated objects, oldest first: address -> allocation clock.
        self.live: dict[int, int] = {}
        # The per-CPU array_cache: ac->entry[0:avail] as (address, slab,
        # index), the oldest first; ac->touched is set by every allocation.
        self.ac: list[tuple[int, Slab, int]] = []
        self.ac_touched = False
        self.stats = CacheStats()

    # -- sizes -------------------------------------------------------------------

    @property
    def obj_size(self) -> int:
        return self.layout.obj_size

    @property
    def buffer_size(self) -> int:
        return self.layout.buffer_size

    @property
    def in_use(self) -> int:
        """Objects allocated and not freed by their callers."""
        return len(self.live)

    @property
    def array_avail(self) -> int:
        """ac->avail: freed objects on the array, still in use for their slabs."""
        return len(self.ac)

    @property
    def active_objs(self) -> int:
        """slabinfo's active_objs: objects in use for the slabs (the callers'
        and the array's)."""
        return len(self.live) + len(self.ac)

    @property
    def num_slabs(self) -> int:
        return sum(len(lst) for lst in self.lists)

    @property
    def pages(self) -> int:
        return self.num_slabs << self.gfporder

    def info(self) -> CacheInfo:
        full, partial, free = (len(lst) for lst in self.lists)
        return CacheInfo(
            name=self.name,
            obj_size=self.obj_size,
            buffer_size=self.buffer_size,
            align=self.layout.align,
            flags=self.flags,
            ctor=self.ctor.name if self.ctor else "",
            num=self.num,
            gfporder=self.gfporder,
            colour=self.layout.colour,
            colour_off=self.layout.colour_off,
            off_slab=self.layout.off_slab,
            reclaimable=self.reclaimable,
            active_objs=self.active_objs,
            num_objs=(full + partial + free) * self.num,
            active_slabs=full + partial,
            num_slabs=full + partial + free,
            free_slabs=free,
            limit=self.tunables.limit,
            batchcount=self.tunables.batchcount,
            shared=self.tunables.shared,
            stats=CacheStats(**vars(self.stats)),
            array_avail=len(self.ac),
        )

    # -- planning ----------------------------------------------------------------

    def slabs_needed(self, count: int) -> int:
        """New slabs an allocation of count objects would grow: what the
        array and the slabs' free objects cannot give."""
        short = count - len(self.ac) - self.free_objects
        return 0 if short <= 0 else -(-short // self.num)

    def check_gfp(self, gfp: int) -> None:
        """check_slab_gfp, and kmem_flagcheck: GFP_DMA exactly for DMA caches."""
        check_slab_gfp(gfp)
        if self.env.zone_dma and bool(gfp & g.GFP_DMA) != bool(self.gfpflags & g.GFP_DMA):
            kind = "a DMA cache" if self.gfpflags else "not a DMA cache"
            raise BadRequest(
                f"gfp_mask {gfp:#x} and cache {self.name} ({kind}) disagree on GFP_DMA"
            )

    def page_gfp(self, gfp: int) -> int:
        """The mask kmem_getpages asks the page allocator with."""
        mask = gfp & (GFP_CONSTRAINT_MASK | GFP_RECLAIM_MASK) | self.gfpflags
        if self.reclaimable:
            mask |= GFP_RECLAIMABLE
        if self.env.nommu:
            mask |= GFP_COMP
        return mask

    # -- allocation --------------------------------------------------------------

    def alloc(
        self, count: int, pfns: Sequence[int] = (), gfp: int = g.GFP_KERNEL, caller: int = 0
    ) -> AllocResult:
        """kmem_cache_alloc, count times: the array's objects first, the most
        recently freed first (____cache_alloc), then partial slabs, then free
        ones, then new slabs made from pfns in order."""
        check_count(count)
        self.check_gfp(gfp)
        needed = self.slabs_needed(count)
        self._check_pfns(pfns, needed)
        out: list[int] = []
        new = iter(pfns[:needed])
        self.ac_touched = True
        remaining = count - self._take_array(count, out, gfp, caller)
        while remaining:
            slab = self._refill_slab()
            if slab is None:
                slab = self._grow(next(new))
            remaining -= self._take(slab, remaining, out, gfp, caller)
        self.stats.allocations += count
        return AllocResult(out, list(pfns[needed:]))

    def _check_pfns(self, pfns: Sequence[int], needed: int) -> None:
        span = 1 << self.gfporder
        seen: set[int] = set()
        env = self.env
        for pfn in pfns:
            if isinstance(pfn, bool) or not isinstance(pfn, int) or pfn < 0 or pfn & (span - 1):
                raise BadRequest(f"pfn {pfn!r} does not start an order-{self.gfporder} block")
            if env.max_pfn is not None and pfn + span > env.max_pfn:
                raise BadRequest(
                    f"pfn {pfn:#x} (order {self.gfporder}) is not in the direct map "
                    f"(pfns below {env.max_pfn:#x})"
                )
            for p in range(pfn, pfn + span):
                if p in env.pagemap or p in seen or env.taken_elsewhere(p):
                    raise BadRequest(f"pfn {p:#x} is already in use")
                seen.add(p)
        if len(pfns) < needed:
            raise NoMemory(
                f"{self.name} needs {needed} new slab(s) of order {self.gfporder}, "
                f"got {len(pfns)} block(s)"
            )

    def _move(self, slab: Slab, to: int, head: bool) -> None:
        if slab.list == to:  # list_move within one list: to its head or tail
            self.lists[to].move_to_end(slab.pfn, last=not head)
            return
        del self.lists[slab.list][slab.pfn]
        lst = self.lists[to]
        lst[slab.pfn] = slab
        if head:
            lst.move_to_end(slab.pfn, last=False)
        slab.list = to

    def _refill_slab(self) -> Slab | None:
        """cache_alloc_refill: the head of slabs_partial, else of slabs_free."""
        partial = self.lists[PARTIAL]
        if partial:
            return next(iter(partial.values()))
        self.free_touched = True
        free = self.lists[FREE]
        return next(iter(free.values())) if free else None

    def _grow(self, pfn: int) -> Slab:
        """cache_grow: colour the slab, construct its objects, add it to the
        tail of slabs_free."""
        layout = self.layout
        offset = self.colour_next * layout.colour_off
        self.colour_next += 1
        if self.colour_next >= layout.colour:
            self.colour_next = 0
        if not layout.off_slab:
            offset += layout.slab_size  # struct slab and the bufctls come first
        env = self.env
        slab = Slab(self, pfn, env.page_offset + (pfn << env.page_shift), offset)
        self._init_objs(slab)
        for p in range(pfn, pfn + (1 << self.gfporder)):
            env.pagemap[p] = slab
        self.lists[FREE][pfn] = slab
        self.free_objects += self.num
        self.stats.grown += 1
        return slab

    def _init_objs(self, slab: Slab) -> None:
        """cache_init_objs: poison, red zones and the constructor, object by object."""
        layout = self.layout
        flags = self.flags
        mem = slab.mem
        view = memoryview(mem)
        debug = self.debug
        ctor = self.ctor if not flags & f.SLAB_POISON else None
        for i in range(self.num):
            objoff = slab.colouroff + i * layout.buffer_size
            if flags & f.SLAB_POISON:
                debug.poison(mem, objoff, POISON_FREE)
            if flags & f.SLAB_STORE_USER:
                debug.set_userword(mem, objoff, 0)
            if flags & f.SLAB_RED_ZONE:
                debug.set_redzones(mem, objoff, RED_INACTIVE)
            if ctor is not None:
                # The named constructors only touch the object: the red zone
                # checks after them ("constructor overwrote ...") cannot fire.
                self._construct(view, slab, objoff)

    def _construct(self, view: memoryview, slab: Slab, objoff: int) -> None:
        assert self.ctor is not None
        self.stats.ctor_calls += 1
        start = objoff + self.layout.obj_offset
        self.ctor.fill(
            view[start : start + self.layout.obj_size],
            slab.base + start,
            self.stats.ctor_calls,
            self.layout.word_bytes,
            self.env.byteorder,
        )

    def _take(self, slab: Slab, remaining: int, out: list[int], gfp: int, caller: int) -> int:
        """slab_get_obj as often as the slab and the request allow."""
        layout = self.layout
        bs = layout.buffer_size
        first = slab.s_mem + layout.obj_offset
        take = min(remaining, len(slab.free))
        clock = self.env.clock
        live = self.live
        zero = gfp & GFP_ZERO
        for _ in range(take):
            idx = slab.free.pop()
            slab.active[idx] = 1
            addr = first + idx * bs
            if self.debugging:
                self._alloc_debugcheck(slab, slab.colouroff + idx * bs, caller)
            if zero:
                start = addr - slab.base
                slab.mem[start : start + layout.obj_size] = bytes(layout.obj_size)
            live[addr] = next(clock)
            out.append(addr)
        slab.inuse += take
        self.free_objects -= take
        self._move(slab, FULL if slab.inuse == self.num else PARTIAL, head=True)
        return take

    def _take_array(self, count: int, out: list[int], gfp: int, caller: int) -> int:
        """ac->entry[--ac->avail] as often as the array and the request allow;
        the objects are checked as any allocated object is."""
        ac = self.ac
        take = min(count, len(ac))
        if not take:
            return 0
        obj_size = self.layout.obj_size
        bs = self.layout.buffer_size
        clock = self.env.clock
        live = self.live
        zero = gfp & GFP_ZERO
        for _ in range(take):
            addr, slab, idx = ac.pop()
            slab.active[idx] = 1
            if self.debugging:
                self._alloc_debugcheck(slab, slab.colouroff + idx * bs, caller)
            if zero:
                start = addr - slab.base
                slab.mem[start : start + obj_size] = bytes(obj_size)
            live[addr] = next(clock)
            out.append(addr)
        return take

    def _alloc_debugcheck(self, slab: Slab, objoff: int, caller: int) -> None:
        """cache_alloc_debugcheck_after."""
        flags = self.flags
        debug = self.debug
        mem = slab.mem
        if flags & f.SLAB_POISON:
            idx = (objoff - slab.colouroff) // self.layout.buffer_size
            if debug.check_poison_obj(mem, slab.base, slab.colouroff, idx, self.num):
                self.stats.errors += 1
            debug.poison(mem, objoff, POISON_INUSE)
        if flags & f.SLAB_STORE_USER:
            debug.set_userword(mem, objoff, caller)
        if flags & f.SLAB_RED_ZONE:
            if debug.check_redzone_alloc(mem, slab.base, objoff):
                self.stats.errors += 1
            debug.set_redzones(mem, objoff, RED_ACTIVE)
        if self.ctor is not None and flags & f.SLAB_POISON:
            self._construct(memoryview(mem), slab, objoff)

    # -- freeing -----------------------------------------------------------------

    def locate(self, addr: int, slab: Slab | None = None) -> tuple[Slab, int]:
        """The slab and index of an allocated object of this cache, or the
        reason it is not one. slab: env.slab_of(addr), if the caller has it."""
        if slab is None:
            slab = self.env.slab_of(addr)
        if slab is None:
            raise NotAllocated(f"{addr!r} is not an object: it is in no slab")
        if slab.cache is not self:
            raise WrongCache(
                f"{addr:#x} is an object of cache {slab.cache.name}, not of {self.name}"
            )
        rel = addr - self.layout.obj_offset - slab.s_mem
        bs = self.layout.buffer_size
        if rel < 0 or rel % bs or rel // bs >= self.num:
            raise NotAllocated(f"{addr:#x} is not the start of an object of {self.name}")
        idx = rel // bs
        if not slab.active[idx]:
            raise DoubleFree(
                f"slab: double free detected in cache '{self.name}', "
                f"objp {self.debug.ptr(slab.s_mem + rel)}"
            )
        return slab, idx

    def check_free(
        self, addrs: Sequence[int], slabs: Sequence[Slab] | None = None
    ) -> list[tuple[Slab, int]]:
        """The slab and index of each address, if every one is an allocated
        object of this cache, named once; else the first reason it is not.
        slabs: env.slab_of of each address, if the caller has them."""
        check_count(len(addrs))
        if slabs is None:
            located = [self.locate(addr) for addr in addrs]
        else:
            located = [self.locate(addr, slab) for addr, slab in zip(addrs, slabs, strict=True)]
        if len(set(addrs)) == len(addrs):
            return located
        seen: set[int] = set()
        for addr, (slab, idx) in zip(addrs, located, strict=True):
            if addr in seen:
                raise DoubleFree(
                    f"slab: double free detected in cache '{self.name}', objp "
                    f"{self.debug.ptr(slab.s_mem + idx * self.layout.buffer_size)} "
                    "(twice in one batch)"
                )
            seen.add(addr)
        return located

    def free(
        self,
        addrs: Sequence[int],
        caller: int = 0,
        located: Sequence[tuple[Slab, int]] | None = None,
    ) -> list[tuple[int, int]]:
        """kmem_cache_free of each address; the (pfn, order) of every slab
        that went back (beyond free_limit). located: what check_free(addrs)
        returned, if the caller has checked them already."""
        if located is None:
            located = self.check_free(addrs)
        released: list[tuple[int, int]] = []
        for addr, (slab, idx) in zip(addrs, located, strict=True):
            self._free_one(addr, slab, idx, caller, released)
        self.stats.frees += len(addrs)
        return released

    def _free_one(
        self, addr: int, slab: Slab, idx: int, caller: int, released: list[tuple[int, int]]
    ) -> None:
        """__cache_free: check the object, then onto the array, flushing its
        batchcount oldest objects first if it is full."""
        if self.debugging:
            self._free_debugcheck(slab, slab.colouroff + idx * self.layout.buffer_size, caller)
        del self.live[addr]
        slab.active[idx] = 0
        if len(self.ac) >= self.tunables.limit:
            self._flush_array(self.tunables.batchcount, released)
        self.ac.append((addr, slab, idx))

    def _flush_array(self, count: int, released: list[tuple[int, int]]) -> None:
        """cache_flusharray and drain_array: the count oldest objects of the
        array go back to their slabs (free_block)."""
        batch = self.ac[:count]
        del self.ac[:count]
        for _, slab, idx in batch:
            self._free_block_one(slab, idx, released)

    def _free_block_one(self, slab: Slab, idx: int, released: list[tuple[int, int]]) -> None:
        """One object of free_block: slab_put_obj and the slab chains' fixup."""
        slab.free.append(idx)
        slab.inuse -= 1
        self.free_objects += 1
        # free_block's fixup of the slab chains.
        if slab.inuse == 0:
            if self.free_objects > self.tunables.free_limit:
                self._destroy(slab, released)
            else:
                self._move(slab, FREE, head=True)
        else:
            self._move(slab, PARTIAL, head=False)

    def _free_debugcheck(self, slab: Slab, objoff: int, caller: int) -> None:
        """cache_free_debugcheck."""
        flags = self.flags
        debug = self.debug
        mem = slab.mem
        if flags & f.SLAB_RED_ZONE:
            if debug.verify_redzone_free(mem, slab.base, objoff):
                self.stats.errors += 1
            debug.set_redzones(mem, objoff, RED_INACTIVE)
        if flags & f.SLAB_STORE_USER:
            debug.set_userword(mem, objoff, caller)
        if flags & f.SLAB_POISON:
            debug.poison(mem, objoff, POISON_FREE)

    def _destroy(self, slab: Slab, released: list[tuple[int, int]]) -> None:
        """slab_destroy: unlink, check the free objects, give the pages back."""
        del self.lists[slab.list][slab.pfn]
        self.free_objects -= self.num
        if self.flags & (f.SLAB_POISON | f.SLAB_RED_ZONE):
            for i in range(self.num):
                objoff = slab.colouroff + i * self.layout.buffer_size
                if self.flags & f.SLAB_POISON and self.debug.check_poison_obj(
                    slab.mem, slab.base, slab.colouroff, i, self.num
                ):
                    self.stats.errors += 1
                if self.flags & f.SLAB_RED_ZONE:
                    self.stats.errors += self.debug.check_redzone_destroy(slab.mem, objoff)
        for p in range(slab.pfn, slab.pfn + (1 << self.gfporder)):
            del self.env.pagemap[p]
        self.stats.destroyed += 1
        released.append((slab.pfn, self.gfporder))

    def drain_freelist(self, tofree: int) -> list[tuple[int, int]]:
        """Destroy up to tofree free slabs, from the tail of slabs_free."""
        released: list[tuple[int, int]] = []
        free = self.lists[FREE]
        while len(released) < tofree and free:
            self._destroy(next(reversed(free.values())), released)
        return released

    def drain_array(self) -> list[tuple[int, int]]:
        """drain_cpu_caches: every object on the array back to its slab,
        oldest first; the (pfn, order) of slabs that went back (beyond
        free_limit)."""
        released: list[tuple[int, int]] = []
        self._flush_array(len(self.ac), released)
        return released

    def shrink(self) -> list[tuple[int, int]]:
        """kmem_cache_shrink (__cache_shrink): drain the array, then every
        free slab goes back."""
        released = self.drain_array()
        return released + self.drain_freelist(len(self.lists[FREE]))

    def reap(self) -> list[tuple[int, int]]:
        """cache_reap's share for this cache. First drain_array: an array an
        allocation touched since the last reap is only marked untouched;
        else (limit + 4) / 5 of its oldest objects (or half of them, rounded
        up, if it holds fewer) go back to their slabs. Then the free slabs:
        skip them once if an allocation recently went to slabs_free, else
        free about a fifth of free_limit's worth of slabs."""
        released: list[tuple[int, int]] = []
        if self.ac:
            if self.ac_touched:
                self.ac_touched = False
            else:
                tofree = (self.tunables.limit + 4) // 5
                if tofree > len(self.ac):
                    tofree = (len(self.ac) + 1) // 2
                self._flush_array(tofree, released)
        if self.free_touched:
            self.free_touched = False
            return released
        tofree = (self.tunables.free_limit + 5 * self.num - 1) // (5 * self.num)
        return released + self.drain_freelist(tofree)

    # -- contents ----------------------------------------------------------------

    def _span(self, addr: int, length: int) -> tuple[Slab, int]:
        slab = self.env.slab_of(addr)
        if slab is None or slab.cache is not self:
            raise BadAddress(f"{addr!r} is not in a slab of {self.name}")
        offset = addr - slab.base
        if isinstance(length, bool) or not isinstance(length, int) or length < 0:
            raise BadRequest(f"length {length!r} is not a byte count")
        if offset + length > len(slab.mem):
            raise BadAddress(
                f"{length} bytes at {addr:#x} run past the end of its slab "
                f"({slab.base + len(slab.mem):#x})"
            )
        return slab, offset

    def read(self, addr: int, length: int) -> bytes:
        """Bytes of slab memory: an object, or past it, allocated or not."""
        slab, offset = self._span(addr, length)
        return bytes(slab.mem[offset : offset + length])

    def write(self, addr: int, data: bytes) -> None:
        """Stores anywhere in a slab's memory, as a kernel bug could: past an
        object's end, or into a freed one. The debug checks find out later."""
        slab, offset = self._span(addr, len(data))
        slab.mem[offset : offset + len(data)] = data

    def objects(self) -> list[int]:
        """Allocated objects, oldest first (not those on the array)."""
        return list(self.live)
