"""How kmem_cache_create lays a cache out (mm/slab.c of 2.6.24).

Object size and alignment: the size is rounded up to BYTES_PER_WORD;
SLAB_HWCACHE_ALIGN aligns to cache_line_size(), halved while the object fits
in half a line; red zoning and user store need word (REDZONE_ALIGN)
alignment; the caller's alignment wins if larger, and an alignment above
__alignof__(unsigned long long) silently drops SLAB_RED_ZONE and
SLAB_STORE_USER. With SLAB_RED_ZONE a 64-bit red zone word sits before and
after the object; with SLAB_STORE_USER one more word (REDZONE_ALIGN bytes when
red zoned) holds the last caller. The debug words are added only when the
cache asks for them: FORCED_DEBUG (CONFIG_DEBUG_SLAB turning them on for every
cache) is not modelled.

Slab management (struct slab and one kmem_bufctl_t per object) goes off the
slab when the object is PAGE_SIZE/8 or larger, and back on it if it fits in
the left-over space. cache_estimate gives the objects per slab and the
left-over bytes for an order; calculate_slab_order takes the first order that
holds an object, stopping at once for SLAB_RECLAIM_ACCOUNT caches, at
slab_break_gfp_order, or when at most 1/8 of the slab is wasted, and never
past offslab_limit objects for off-slab caches. The left-over space becomes
the colour range, in steps of cache_line_size() (or the alignment, if
larger).
"""

from __future__ import annotations

from dataclasses import dataclass

from memsim.profiles.loader import MachineProfile
from memsim.services.slab import flags as f
from memsim.services.slab.errors import BadRequest
from memsim.services.slab.kmalloc_sizes import kmalloc_max_order, kmalloc_max_size

# sizeof(kmem_bufctl_t): an unsigned int on every arch.
BUFCTL_BYTES = 4
# SLAB_LIMIT: the largest bufctl value that is not a marker.
SLAB_LIMIT = 0xFFFFFFFF - 3
# The red zone words are unsigned long long on every arch.
REDZONE_BYTES = 8
# slab_break_gfp_order: 1 on machines with more than 32 MiB, else 0.
BREAK_GFP_ORDER_HI = 1
BREAK_GFP_ORDER_LO = 0


def align_up(value: int, align: int) -> int:
    """ALIGN(): align is a power of two."""
    return (value + align - 1) & ~(align - 1)


@dataclass(frozen=True)
class SlabArch:
    """The constants mm/slab.c takes from the architecture and the machine."""

    page_size: int = 4096
    max_order: int = 11
    word_bytes: int = 4  # BYTES_PER_WORD, sizeof(void *)
    ull_align: int = 8  # __alignof__(unsigned long long)
    cache_line: int = 64  # cache_line_size(), L1_CACHE_BYTES
    break_order: int = BREAK_GFP_ORDER_HI  # slab_break_gfp_order
    cpus: int = 1  # num_possible_cpus(): a shared array cache only on SMP
    node_cpus: int = 1  # nr_cpus_node(): free_limit of the (one) list3

    @classmethod
    def from_profile(cls, profile: MachineProfile) -> SlabArch:
        total_pages = profile.mem_bytes // profile.page_size
        big = total_pages > (32 << 20) // profile.page_size
        return cls(
            page_size=profile.page_size,
            max_order=profile.max_order,
            word_bytes=profile.word_bytes,
            ull_align=profile.ull_align,
            cache_line=profile.cache_line_bytes,
            break_order=BREAK_GFP_ORDER_HI if big else BREAK_GFP_ORDER_LO,
            cpus=profile.cpus,
            node_cpus=len(profile.node_cpus(0)),
        )

    @property
    def slab_struct_bytes(self) -> int:
        """sizeof(struct slab): list_head, colouroff and s_mem (4 words), then
        inuse and free (unsigned int) and nodeid (unsigned short), padded to
        a word: 28 bytes on 32-bit, 48 on 64-bit."""
        return align_up(4 * self.word_bytes + 4 + 4 + 2, self.word_bytes)

    @property
    def redzone_align(self) -> int:
        """REDZONE_ALIGN = max(BYTES_PER_WORD, __alignof__(unsigned long long))."""
        return max(self.word_bytes, self.ull_align)

    @property
    def kmalloc_minalign(self) -> int:
        """ARCH_KMALLOC_MINALIGN: __alignof__(unsigned long long)."""
        return self.ull_align

    @property
    def kmalloc_max_size(self) -> int:
        return kmalloc_max_size(self.page_size, self.max_order)

    @property
    def kmalloc_max_order(self) -> int:
        return kmalloc_max_order(self.page_size, self.max_order)


def slab_mgmt_size(arch: SlabArch, nr_objs: int, align: int) -> int:
    return align_up(arch.slab_struct_bytes + nr_objs * BUFCTL_BYTES, align)


def cache_estimate(
    arch: SlabArch, gfporder: int, buffer_size: int, align: int, flags: int
) -> tuple[int, int]:
    """(num, left_over) for a slab of 2^gfporder pages."""
    slab_size = arch.page_size << gfporder
    if flags & f.CFLGS_OFF_SLAB:
        mgmt_size = 0
        nr_objs = min(slab_size // buffer_size, SLAB_LIMIT)
    else:
        # The first guess ignores the padding; it is right or one too many.
        nr_objs = (slab_size - arch.slab_struct_bytes) // (buffer_size + BUFCTL_BYTES)
        if slab_mgmt_size(arch, nr_objs, align) + nr_objs * buffer_size > slab_size:
            nr_objs -= 1
        nr_objs = min(nr_objs, SLAB_LIMIT)
        mgmt_size = slab_mgmt_size(arch, nr_objs, align)
    return nr_objs, slab_size - nr_objs * buffer_size - mgmt_size


@dataclass(frozen=True)
class SlabOrder:
    num: int
    gfporder: int
    left_over: int


def calculate_slab_order(arch: SlabArch, size: int, align: int, flags: int) -> SlabOrder:
    """The order, objects per slab and left-over bytes kmem_cache_create keeps;
    num 0 if no order up to KMALLOC_MAX_ORDER holds an object."""
    best = SlabOrder(0, 0, 0)
    for gfporder in range(arch.kmalloc_max_order + 1):
        num, remainder = cache_estimate(arch, gfporder, size, align, flags)
        if not num:
            continue
        if flags & f.CFLGS_OFF_SLAB:
            # Off-slab bufctls come from a kmalloc cache no larger than the
            # object, which bounds the objects per slab (cache_grow loops).
            offslab_limit = (size - arch.slab_struct_bytes) // BUFCTL_BYTES
            if num > offslab_limit:
                break
        best = SlabOrder(num, gfporder, remainder)
        # VFS-reclaimable slabs are allocated GFP_NOFS: no higher orders.
        if flags & f.SLAB_RECLAIM_ACCOUNT:
            break
        if gfporder >= arch.break_order:
            break
        # At most 1/8 of the slab wasted is acceptable.
        if remainder * 8 <= arch.page_size << gfporder:
            break
    return best


@dataclass(frozen=True)
class CacheLayout:
    """Everything kmem_cache_create computes for a cache."""

    obj_size: int  # the object as its users see it (kmem_cache_size, ksize)
    obj_offset: int  # where the object starts in its buffer (after red zone 1)
    buffer_size: int  # the stride: object, debug words and alignment padding
    align: int
    flags: int  # effective flags, with CFLGS_OFF_SLAB if management is off-slab
    num: int
    gfporder: int
    left_over: int  # after management moved on-slab, if it did
    colour: int  # colour range: offsets 0 .. colour-1 times colour_off
    colour_off: int
    slab_size: int  # bytes of struct slab + bufctls (aligned when on-slab)
    word_bytes: int
    redzone_align: int
    page_size: int

    @property
    def off_slab(self) -> bool:
        return bool(self.flags & f.CFLGS_OFF_SLAB)

    @property
    def slab_bytes(self) -> int:
        return self.page_size << self.gfporder

    @property
    def pages_per_slab(self) -> int:
        return 1 << self.gfporder

    # dbg_redzone1, dbg_redzone2 and dbg_userword: offsets in the buffer.
    @property
    def redzone1(self) -> int:
        return self.obj_offset - REDZONE_BYTES

    @property
    def redzone2(self) -> int:
        if self.flags & f.SLAB_STORE_USER:
            return self.buffer_size - REDZONE_BYTES - self.redzone_align
        return self.buffer_size - REDZONE_BYTES

    @property
    def userword(self) -> int:
        return self.buffer_size - self.word_bytes


def kmem_cache_layout(arch: SlabArch, name: str, size: int, align: int, flags: int) -> CacheLayout:
    """kmem_cache_create's arithmetic; refuses what it would BUG() or fail on."""
    if isinstance(size, bool) or not isinstance(size, int):
        raise BadRequest(f"object size must be an integer, not {size!r}")
    if not arch.word_bytes <= size <= arch.kmalloc_max_size:
        raise BadRequest(
            f"kmem_cache_create: object size {size} of {name} is outside "
            f"{arch.word_bytes}..{arch.kmalloc_max_size} (BYTES_PER_WORD..KMALLOC_MAX_SIZE)"
        )
    if align < 0 or align & (align - 1) or align > arch.page_size:
        raise BadRequest(
            f"alignment {align} of {name} is not 0 or a power of two up to {arch.page_size}"
        )
    f.check_create_flags(flags)
    w = arch.word_bytes
    size = align_up(size, w)
    # 1) arch recommendation, overridden for debug.
    if flags & f.SLAB_HWCACHE_ALIGN:
        ralign = arch.cache_line
        while size <= ralign // 2:
            ralign //= 2
    else:
        ralign = w
    if flags & f.SLAB_STORE_USER:
        ralign = w
    if flags & f.SLAB_RED_ZONE:
        ralign = arch.redzone_align
        # The second red zone must be aligned too.
        size = align_up(size, arch.redzone_align)
    # 3) caller mandated alignment (ARCH_SLAB_MINALIGN is 0 on every profile).
    ralign = max(ralign, align)
    if ralign > arch.ull_align:
        flags &= ~(f.SLAB_RED_ZONE | f.SLAB_STORE_USER)
    align = ralign
    obj_size = size
    obj_offset = 0
    if flags & f.SLAB_RED_ZONE:
        obj_offset += REDZONE_BYTES
        size += 2 * REDZONE_BYTES
    if flags & f.SLAB_STORE_USER:
        size += arch.redzone_align if flags & f.SLAB_RED_ZONE else w
    if size >= arch.page_size >> 3:
        flags |= f.CFLGS_OFF_SLAB
    size = align_up(size, align)
    order = calculate_slab_order(arch, size, align, flags)
    if not order.num:
        raise BadRequest(f"kmem_cache_create: couldn't create cache {name}.")
    left_over = order.left_over
    slab_size = align_up(order.num * BUFCTL_BYTES + arch.slab_struct_bytes, align)
    # Off-slab management moves on-slab if it fits in the left-over space.
    if flags & f.CFLGS_OFF_SLAB and left_over >= slab_size:
        flags &= ~f.CFLGS_OFF_SLAB
        left_over -= slab_size
    if flags & f.CFLGS_OFF_SLAB:
        slab_size = order.num * BUFCTL_BYTES + arch.slab_struct_bytes
    colour_off = max(arch.cache_line, align)
    return CacheLayout(
        obj_size=obj_size,
        obj_offset=obj_offset,
        buffer_size=size,
        align=align,
        flags=flags,
        num=order.num,
        gfporder=order.gfporder,
        left_over=left_over,
        colour=left_over // colour_off,
        colour_off=colour_off,
        slab_size=slab_size,
        word_bytes=w,
        redzone_align=arch.redzone_align,
        page_size=arch.page_size,
    )


@dataclass(frozen=True)
class Tunables:
    """The per-CPU array tunables enable_cpucache gives a cache (what
    /proc/slabinfo prints), and the free_limit alloc_kmemlist derives."""

    limit: int
    batchcount: int
    shared: int
    free_limit: int


def cpucache_tunables(arch: SlabArch, buffer_size: int, num: int) -> Tunables:
    if buffer_size > 131072:
        limit = 1
    elif buffer_size > arch.page_size:
        limit = 8
    elif buffer_size > 1024:
        limit = 24
    elif buffer_size > 256:
        limit = 54
    else:
        limit = 120
    shared = 8 if buffer_size <= arch.page_size and arch.cpus > 1 else 0
    batchcount = (limit + 1) // 2
    return Tunables(limit, batchcount, shared, (1 + arch.node_cpus) * batchcount + num)
