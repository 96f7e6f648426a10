"""GFP flags as include/linux/gfp.h of 2.6.24 defines them, and gfp_zone()."""

from __future__ import annotations

from memsim.services.zone.errors import InvalidRequest

__GFP_DMA = 0x01
__GFP_HIGHMEM = 0x02
__GFP_DMA32 = 0x04
__GFP_WAIT = 0x10  # can wait and reschedule
__GFP_HIGH = 0x20  # may use emergency pools
__GFP_IO = 0x40
__GFP_FS = 0x80
__GFP_COLD = 0x100
__GFP_NOWARN = 0x200
__GFP_REPEAT = 0x400
__GFP_NOFAIL = 0x800
__GFP_NORETRY = 0x1000
__GFP_COMP = 0x4000
__GFP_ZERO = 0x8000
__GFP_NOMEMALLOC = 0x10000
__GFP_HARDWALL = 0x20000
__GFP_THISNODE = 0x40000
__GFP_RECLAIMABLE = 0x80000
__GFP_MOVABLE = 0x100000
__GFP_BITS_SHIFT = 21
__GFP_BITS_MASK = (1 << __GFP_BITS_SHIFT) - 1

GFP_ATOMIC = __GFP_HIGH
GFP_NOWAIT = GFP_ATOMIC & ~__GFP_HIGH
GFP_NOIO = __GFP_WAIT
GFP_NOFS = __GFP_WAIT | __GFP_IO
GFP_KERNEL = __GFP_WAIT | __GFP_IO | __GFP_FS
GFP_TEMPORARY = GFP_KERNEL | __GFP_RECLAIMABLE
GFP_USER = GFP_KERNEL | __GFP_HARDWALL
GFP_HIGHUSER = GFP_USER | __GFP_HIGHMEM
GFP_HIGHUSER_MOVABLE = GFP_HIGHUSER | __GFP_MOVABLE
GFP_DMA = __GFP_DMA
GFP_DMA32 = __GFP_DMA32
GFP_MOVABLE_MASK = __GFP_RECLAIMABLE | __GFP_MOVABLE
# The same bits under names that survive Python's name mangling: inside a
# class body, "__GFP_WAIT" would be read as "_ClassName__GFP_WAIT".
WAIT, HIGH, FS, COLD, NOWARN = __GFP_WAIT, __GFP_HIGH, __GFP_FS, __GFP_COLD, __GFP_NOWARN
REPEAT, NOFAIL, NORETRY, THISNODE = __GFP_REPEAT, __GFP_NOFAIL, __GFP_NORETRY, __GFP_THISNODE
HARDWALL = __GFP_HARDWALL
# Allocations of more than 2^3 pages are "costly": they do not loop (2.6.24).
PAGE_ALLOC_COSTLY_ORDER = 3

_BITS = {
    name: value
    for name, value in globals().items()
    if name.startswith("__GFP_") and name not in ("__GFP_BITS_SHIFT", "__GFP_BITS_MASK")
}
_COMPOSITES = {
    name: value
    for name, value in globals().items()
    if name.startswith("GFP_") and name not in ("GFP_MOVABLE_MASK",)
}
FLAG_NAMES: dict[str, int] = {**_COMPOSITES, **_BITS}


def parse_gfp(text: str) -> int:
    """ "GFP_KERNEL|__GFP_NOWARN" or "0xd0" to a mask."""
    mask = 0
    for part in text.replace(" ", "").split("|"):
        if part in FLAG_NAMES:
            mask |= FLAG_NAMES[part]
        else:
            try:
                mask |= int(part, 0)
            except ValueError:
                raise InvalidRequest(f"unknown GFP flag {part!r}") from None
    return mask


def format_gfp(mask: int) -> str:
    """The largest composite that fits, then the remaining bits: GFP_KERNEL|__GFP_NOWARN."""
    for name, value in sorted(_COMPOSITES.items(), key=lambda kv: -bin(kv[1]).count("1")):
        if value and mask & value == value:
            rest = [n for n, bit in _BITS.items() if mask & ~value & bit]
            return "|".join([name, *rest])
    return "|".join(n for n, bit in _BITS.items() if mask & bit) or "0"


def check_gfp(mask: int) -> None:
    """Refuses what the kernel would warn about or cannot mean."""
    if mask < 0 or mask & ~__GFP_BITS_MASK:
        raise InvalidRequest(
            f"gfp_mask {mask:#x} has bits outside __GFP_BITS_MASK ({__GFP_BITS_MASK:#x})"
        )
    zone_bits = mask & (__GFP_DMA | __GFP_DMA32 | __GFP_HIGHMEM)
    if zone_bits & (zone_bits - 1):
        raise InvalidRequest(
            f"gfp_mask {mask:#x} ({format_gfp(mask)}) names more than one "
            "zone modifier (__GFP_DMA, __GFP_DMA32, __GFP_HIGHMEM)"
        )
    if mask & GFP_MOVABLE_MASK == GFP_MOVABLE_MASK:
        raise InvalidRequest(f"gfp_mask {mask:#x} is both __GFP_RECLAIMABLE and __GFP_MOVABLE")
    if mask & __GFP_NOFAIL and mask & __GFP_NORETRY:
        raise InvalidRequest(f"gfp_mask {mask:#x} is both __GFP_NOFAIL and __GFP_NORETRY")


# Zone types in the kernel's order; a machine has a subset of them.
ZONE_DMA, ZONE_DMA32, ZONE_NORMAL, ZONE_HIGHMEM, ZONE_MOVABLE = (
    "DMA",
    "DMA32",
    "Normal",
    "HighMem",
    "Movable",
)


def gfp_zone(mask: int, zone_types: tuple[str, ...]) -> str:
    """The highest zone type a request may use, for a machine with zone_types.

    A modifier whose zone the machine is not configured with is ignored, as
    when CONFIG_ZONE_DMA32 or CONFIG_HIGHMEM is off.
    """
    if mask & __GFP_DMA and ZONE_DMA in zone_types:
        return ZONE_DMA
    if mask & __GFP_DMA32 and ZONE_DMA32 in zone_types:
        return ZONE_DMA32
    if (
        mask & (__GFP_HIGHMEM | __GFP_MOVABLE) == (__GFP_HIGHMEM | __GFP_MOVABLE)
        and ZONE_MOVABLE in zone_types
    ):
        return ZONE_MOVABLE
    if mask & __GFP_HIGHMEM and ZONE_HIGHMEM in zone_types:
        return ZONE_HIGHMEM
    return ZONE_NORMAL if ZONE_NORMAL in zone_types else zone_types[0]
