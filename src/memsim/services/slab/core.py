"""The slab service's domain: the cache chain, kmalloc, vmalloc and reclaim.

Pure and synchronous; it never calls the zone service. Every allocation that
may need memory is a plan and an apply: plan_*() says how many blocks of
which order to get from the zone, and with which GFP mask; the apply call is
given their pfns, uses what it needs and returns the rest (the state may have
changed between the two, so it may need fewer, or refuse with NoMemory if it
now needs more, changing nothing). Everything that frees memory returns the
(pfn, order) blocks to give back.

Reclaim: shrink(nr_to_scan) first drains every cache's array cache and
releases its free slabs (what cache_reap would release over time), then frees
up to nr_to_scan objects of the SLAB_RECLAIM_ACCOUNT caches, oldest first, as
the dcache and icache shrinkers prune their unused entries, and drains and
releases the slabs that empties.
Every object of such a cache counts as unused here (nothing pins a dentry),
and buffer_head, SLAB_RECLAIM_ACCOUNT in 2.6.24 but freed with its page in
the kernel, is pruned the same way.
"""

from __future__ import annotations

import functools
import heapq
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from memsim.profiles.loader import MachineProfile
from memsim.services.slab import flags as f
from memsim.services.slab.boot import boot_caches, early_kmalloc_sizes
from memsim.services.slab.cache import (
    AllocResult,
    CacheInfo,
    KmemCache,
    Slab,
    SlabEnv,
    check_count,
)
from memsim.services.slab.errors import (
    BadAddress,
    BadRequest,
    CacheBusy,
    DuplicateCache,
    NotAllocated,
    UnknownCache,
    WrongCache,
)
from memsim.services.slab.klog import KernelLog
from memsim.services.slab.kmalloc_sizes import KmallocSizes
from memsim.services.slab.vmalloc import (
    VMALLOC_GFP,
    VmallocInfo,
    VmallocResult,
    VmallocSpace,
    VmStruct,
)
from memsim.services.zone import gfp as g
from memsim.services.zone.machine import Machine

# mm/nommu.c: __vmalloc is kmalloc((gfp_mask | __GFP_COMP) & ~__GFP_HIGHMEM).
NOMMU_VMALLOC_GFP = g.GFP_KERNEL | g.__GFP_COMP
# What zone_pages() counts per zone.
SLAB_ZONE_KINDS = ("slab_reclaimable", "slab_unreclaimable", "vmalloc")


@dataclass(frozen=True)
class PagePlan:
    """What to ask the zone for: blocks of 2^order pages with gfp_mask. For a
    cache, one block per new slab."""

    blocks: int
    order: int
    gfp_mask: int
    cache: str = ""  # the cache that grows; "" for vmalloc's pages


@dataclass(frozen=True)
class ShrinkResult:
    pages: list[tuple[int, int]]  # (pfn, order) blocks to give back
    objects: list[int]  # addresses of the objects reclaimed

    @property
    def nr_pages(self) -> int:
        return sum(1 << order for _, order in self.pages)


@dataclass(frozen=True)
class SlabPages:
    """NR_SLAB_RECLAIMABLE and NR_SLAB_UNRECLAIMABLE: meminfo's SReclaimable
    and SUnreclaim (Slab is their sum), in pages."""

    reclaimable: int
    unreclaimable: int

    @property
    def total(self) -> int:
        return self.reclaimable + self.unreclaimable


class SlabAllocator:
    def __init__(self, profile: MachineProfile) -> None:
        self.profile = profile
        self.env = SlabEnv.from_profile(profile)
        self.log: KernelLog = self.env.log
        self.nommu = not profile.mmu
        self.sizes = KmallocSizes.for_machine(
            profile.page_size, profile.cache_line_bytes, profile.max_order
        )
        # Creation order; /proc/slabinfo shows it reversed (list_add to the head).
        self.caches: dict[str, KmemCache] = {}
        self.vm = VmallocSpace.from_profile(profile, taken=lambda pfn: pfn in self.env.pagemap)
        self.env.taken_elsewhere = lambda pfn: pfn in self.vm.pfns
        self._boot()

    def _boot(self) -> None:
        """kmem_cache_init, then the caches start_kernel's callees make."""
        arch = self.env.arch
        self.malloc_sizes: list[KmemCache] = []
        self.malloc_dma: list[KmemCache | None] = []
        early = {self.sizes.index(size) for size in early_kmalloc_sizes(arch.word_bytes)}
        made: dict[int, KmemCache] = {}

        def general(i: int, dma: bool) -> KmemCache:
            size = self.sizes.sizes[i]
            name = f"size-{size}(DMA)" if dma else f"size-{size}"
            flags = f.SLAB_HWCACHE_ALIGN | f.SLAB_PANIC | (f.SLAB_CACHE_DMA if dma else 0)
            cache = KmemCache(
                self.env, name, size, arch.kmalloc_minalign, flags, kmalloc=True, boot=True
            )
            self.caches[name] = cache
            return cache

        for i in sorted(early):
            made[i] = general(i, dma=False)
        zone_dma = self.env.zone_dma
        for i in range(len(self.sizes.sizes)):
            self.malloc_sizes.append(made[i] if i in made else general(i, dma=False))
            self.malloc_dma.append(general(i, dma=True) if zone_dma else None)
        for boot in boot_caches(arch.word_bytes, self.profile.arch, arch.cache_line):
            self.caches[boot.name] = KmemCache(
                self.env, boot.name, boot.size, boot.align, boot.flags, boot.ctor, boot=True
            )

    # -- the cache chain -----------------------------------------------------------

    def chain(self) -> list[KmemCache]:
        """cache_chain, newest first: /proc/slabinfo's order."""
        return list(reversed(self.caches.values()))

    def cache(self, name: str) -> KmemCache:
        try:
            return self.caches[name]
        except (KeyError, TypeError):
            raise UnknownCache(f"no slab cache named {name!r}") from None

    def create_cache(
        self, name: str, size: int, align: int = 0, flags: int = 0, ctor: str | None = None
    ) -> KmemCache:
        """kmem_cache_create. No memory is needed: slabs come with the first
        allocation."""
        if isinstance(name, str) and name in self.caches:
            raise DuplicateCache(f"kmem_cache_create: duplicate cache {name}")
        cache = KmemCache(self.env, name, size, align, flags, ctor)
        self.caches[name] = cache
        return cache

    def destroy_cache(self, name: str) -> list[tuple[int, int]]:
        """kmem_cache_destroy: refused while callers hold objects (those on
        the array do not count: __cache_shrink drains it); returns the
        slabs' blocks. A refusal changes nothing (the kernel's would have
        drained the array and freed the free slabs)."""
        cache = self.cache(name)
        if cache.boot:
            raise CacheBusy(f"{name} is one of the kernel's own caches and cannot be destroyed")
        if cache.in_use:
            raise CacheBusy(
                f"slab error in kmem_cache_destroy(): cache `{name}': Can't free all objects "
                f"({cache.in_use} in use)"
            )
        released = cache.shrink()
        del self.caches[name]
        return released

    def infos(self) -> list[CacheInfo]:
        return [cache.info() for cache in self.chain()]

    # -- kmem_cache_alloc and kmem_cache_free -----------------------------------------

    def plan_cache_alloc(self, name: str, count: int, gfp: int = g.GFP_KERNEL) -> PagePlan:
        cache = self.cache(name)
        check_count(count)
        cache.check_gfp(gfp)
        return PagePlan(cache.slabs_needed(count), cache.gfporder, cache.page_gfp(gfp), name)

    def cache_alloc(
        self,
        name: str,
        count: int,
        pfns: Sequence[int] = (),
        gfp: int = g.GFP_KERNEL,
        caller: int = 0,
    ) -> AllocResult:
        return self.cache(name).alloc(count, pfns, gfp, caller)

    def cache_free(self, name: str, addrs: Sequence[int], caller: int = 0) -> list[tuple[int, int]]:
        return self.cache(name).free(addrs, caller)

    # -- kmalloc, kfree, ksize ------------------------------------------------------

    def kmalloc_cache(self, size: int, gfp: int = g.GFP_KERNEL) -> KmemCache:
        """__find_general_cachep: the size class, DMA or not."""
        i = self.sizes.index(size)
        dma = self.malloc_dma[i]
        return dma if gfp & g.GFP_DMA and dma is not None else self.malloc_sizes[i]

    def plan_kmalloc(self, size: int, count: int = 1, gfp: int = g.GFP_KERNEL) -> PagePlan:
        cache = self.kmalloc_cache(size, gfp)
        return self.plan_cache_alloc(cache.name, count, gfp)

    def kmalloc(
        self,
        size: int,
        count: int = 1,
        pfns: Sequence[int] = (),
        gfp: int = g.GFP_KERNEL,
        caller: int = 0,
    ) -> AllocResult:
        return self.kmalloc_cache(size, gfp).alloc(count, pfns, gfp, caller)

    def _kmalloc_slab(self, addr: int) -> Slab:
        slab = self.env.slab_of(addr)
        if slab is None:
            raise NotAllocated(f"kfree of {addr!r}: not an object from kmalloc")
        if not slab.cache.kmalloc:
            raise WrongCache(
                f"kfree of {addr:#x}: an object of cache {slab.cache.name}, not from kmalloc "
                "(use kmem_cache_free)"
            )
        return slab

    def kfree(self, addrs: Sequence[int], caller: int = 0) -> list[tuple[int, int]]:
        """kfree of each address, whichever size-N cache it is in."""
        check_count(len(addrs))
        # Each address's slab is looked up once: cache -> (addresses, their slabs).
        groups: dict[KmemCache, tuple[list[int], list[Slab]]] = {}
        for addr in addrs:
            slab = self._kmalloc_slab(addr)
            group = groups.get(slab.cache)
            if group is None:
                group = groups[slab.cache] = ([], [])
            group[0].append(addr)
            group[1].append(slab)
        # Check every group before freeing any, so a refusal changes nothing.
        checked = [
            (cache, group, cache.check_free(group, slabs))
            for cache, (group, slabs) in groups.items()
        ]
        released: list[tuple[int, int]] = []
        for cache, addresses, located in checked:
            released += cache.free(addresses, caller, located)
        return released

    def ksize(self, addr: int) -> int:
        """obj_size of the object's cache (kmalloc's or any other)."""
        slab = self.env.slab_of(addr)
        if slab is None:
            raise NotAllocated(f"ksize of {addr!r}: not a slab object")
        slab.cache.locate(addr)
        return slab.cache.obj_size

    # -- object contents -------------------------------------------------------------

    def _cache_at(self, addr: int) -> KmemCache:
        slab = self.env.slab_of(addr)
        if slab is None:
            raise BadAddress(f"{addr!r} is not in any slab")
        return slab.cache

    def read(self, addr: int, length: int) -> bytes:
        return self._cache_at(addr).read(addr, length)

    def write(self, addr: int, data: bytes) -> None:
        self._cache_at(addr).write(addr, data)

    # -- reclaim ---------------------------------------------------------------------

    def reclaimable_objects(self) -> int:
        """What the shrinkers would report for nr_to_scan 0."""
        return sum(c.in_use for c in self.caches.values() if c.reclaimable)

    def shrink(self, nr_to_scan: int) -> ShrinkResult:
        if isinstance(nr_to_scan, bool) or not isinstance(nr_to_scan, int) or nr_to_scan < 0:
            raise BadRequest(f"nr_to_scan must be a non-negative count, not {nr_to_scan!r}")
        pages: list[tuple[int, int]] = []
        for cache in self.chain():
            pages += cache.shrink()
        reclaimable = [c for c in self.chain() if c.reclaimable]

        def oldest(cache: KmemCache) -> Iterator[tuple[int, int, str]]:
            return ((seq, addr, cache.name) for addr, seq in cache.live.items())

        victims: dict[str, list[int]] = {}
        objects: list[int] = []
        for _, addr, name in heapq.merge(*(oldest(c) for c in reclaimable)):
            if len(objects) >= nr_to_scan:
                break
            victims.setdefault(name, []).append(addr)
            objects.append(addr)
        for name, addrs in victims.items():
            cache = self.caches[name]
            for start in range(0, len(addrs), 1 << 16):
                pages += cache.free(addrs[start : start + (1 << 16)])
            pages += cache.shrink()
        return ShrinkResult(pages, objects)

    def shrink_cache(self, name: str) -> list[tuple[int, int]]:
        """kmem_cache_shrink."""
        return self.cache(name).shrink()

    def reap(self) -> list[tuple[int, int]]:
        """One pass of cache_reap over the chain (the kernel runs it every
        2 s on each CPU)."""
        pages: list[tuple[int, int]] = []
        for cache in self.chain():
            pages += cache.reap()
        return pages

    def slab_pages(self) -> SlabPages:
        reclaimable = unreclaimable = 0
        for cache in self.caches.values():
            if cache.reclaimable:
                reclaimable += cache.pages
            else:
                unreclaimable += cache.pages
        return SlabPages(reclaimable, unreclaimable)

    @functools.cached_property
    def layout(self) -> Machine:
        """The machine's zones as the zone service lays them out (the MMU's
        own layout, built the same way from the profile): pfn -> zone."""
        return Machine(self.profile)

    def zone_pages(self) -> dict[tuple[int, str], dict[str, int]]:
        """Pages this service holds, by zone and kind: "slab_reclaimable" and
        "slab_unreclaimable" (NR_SLAB_*: the slabs of SLAB_RECLAIM_ACCOUNT
        caches and of the others) and "vmalloc" (the vmalloc areas' pages;
        without an MMU vmalloc is kmalloc, so its pages are slab pages).
        Every zone of the machine is listed."""
        layout = self.layout
        pages = {key: dict.fromkeys(SLAB_ZONE_KINDS, 0) for key in layout.zones}

        def add(pfn: int, kind: str, count: int) -> None:
            zone = layout.zone_of_pfn(pfn)
            if zone is not None:
                pages[zone.key][kind] += count

        for cache in self.caches.values():
            kind = "slab_reclaimable" if cache.reclaimable else "slab_unreclaimable"
            block = 1 << cache.gfporder  # a slab's block lies in one zone
            for slabs in cache.lists:
                for pfn in slabs:
                    add(pfn, kind, block)
        for pfn in self.vm.pfns:
            add(pfn, "vmalloc", 1)
        return pages

    # -- vmalloc -----------------------------------------------------------------------

    def plan_vmalloc(self, size: int) -> PagePlan:
        """Order-0 pages with GFP_KERNEL | __GFP_HIGHMEM; without an MMU,
        vmalloc is kmalloc (mm/nommu.c) and this is kmalloc's plan."""
        if self.nommu:
            return self.plan_kmalloc(size, 1, NOMMU_VMALLOC_GFP)
        return PagePlan(self.vm.plan(size), 0, VMALLOC_GFP)

    def vmalloc(self, size: int, pfns: Sequence[int], caller: str = "") -> VmallocResult:
        if self.nommu:
            result = self.kmalloc(size, 1, pfns, NOMMU_VMALLOC_GFP)
            return VmallocResult(result.addresses[0], result.unused_pfns)
        return self.vm.vmalloc(size, pfns, caller)

    def vfree(self, addr: int) -> list[tuple[int, int]]:
        if self.nommu:
            return self.kfree([addr])
        return self.vm.vfree(addr)

    def vmalloc_info(self) -> VmallocInfo:
        """VmallocTotal, VmallocUsed, VmallocChunk (0 without an MMU)."""
        if self.nommu:
            return VmallocInfo(0, 0, 0)
        return self.vm.info()

    def vm_areas(self) -> list[VmStruct]:
        """vmlist, by address (/proc/vmallocinfo's order)."""
        return list(self.vm.areas)
