"""kmem_cache_create flags as include/linux/slab.h of 2.6.24 defines them."""

from __future__ import annotations

from memsim.services.slab.errors import BadRequest

SLAB_DEBUG_FREE = 0x00000100
SLAB_RED_ZONE = 0x00000400
SLAB_POISON = 0x00000800
SLAB_HWCACHE_ALIGN = 0x00002000
SLAB_CACHE_DMA = 0x00004000
SLAB_STORE_USER = 0x00010000
SLAB_RECLAIM_ACCOUNT = 0x00020000
SLAB_PANIC = 0x00040000
SLAB_DESTROY_BY_RCU = 0x00080000
SLAB_MEM_SPREAD = 0x00100000
# mm/slab.c: the slab descriptor and bufctls live outside the slab's pages.
CFLGS_OFF_SLAB = 0x80000000

# mm/slab.c CREATE_MASK with DEBUG: the red zone, poison and store-user
# checks of CONFIG_DEBUG_SLAB are honoured per cache (never forced on).
CREATE_MASK = (
    SLAB_RED_ZONE
    | SLAB_POISON
    | SLAB_HWCACHE_ALIGN
    | SLAB_CACHE_DMA
    | SLAB_STORE_USER
    | SLAB_RECLAIM_ACCOUNT
    | SLAB_PANIC
    | SLAB_DESTROY_BY_RCU
    | SLAB_MEM_SPREAD
)

FLAG_NAMES: dict[str, int] = {
    "SLAB_RED_ZONE": SLAB_RED_ZONE,
    "SLAB_POISON": SLAB_POISON,
    "SLAB_HWCACHE_ALIGN": SLAB_HWCACHE_ALIGN,
    "SLAB_CACHE_DMA": SLAB_CACHE_DMA,
    "SLAB_STORE_USER": SLAB_STORE_USER,
    "SLAB_RECLAIM_ACCOUNT": SLAB_RECLAIM_ACCOUNT,
    "SLAB_PANIC": SLAB_PANIC,
    "SLAB_DESTROY_BY_RCU": SLAB_DESTROY_BY_RCU,
    "SLAB_MEM_SPREAD": SLAB_MEM_SPREAD,
}


def check_create_flags(flags: int) -> None:
    """BUG_ON(flags & ~CREATE_MASK) and the POISON/DESTROY_BY_RCU clash,
    refused instead of crashing."""
    if flags < 0 or flags & ~CREATE_MASK:
        raise BadRequest(f"slab flags {flags:#x} have bits outside CREATE_MASK ({CREATE_MASK:#x})")
    if flags & SLAB_DESTROY_BY_RCU and flags & SLAB_POISON:
        raise BadRequest("SLAB_DESTROY_BY_RCU cannot be combined with SLAB_POISON")


def parse_slab_flags(text: str) -> int:
    """ "SLAB_HWCACHE_ALIGN|SLAB_POISON" or "0x2800" to a mask; "" is 0."""
    mask = 0
    for part in text.replace(" ", "").split("|"):
        if not part:
            continue
        if part in FLAG_NAMES:
            mask |= FLAG_NAMES[part]
            continue
        try:
            mask |= int(part, 0)
        except ValueError:
            raise BadRequest(f"unknown slab flag {part!r}") from None
    check_create_flags(mask)
    return mask


def format_slab_flags(mask: int) -> str:
    names = [name for name, bit in FLAG_NAMES.items() if mask & bit]
    if mask & CFLGS_OFF_SLAB:
        names.append("CFLGS_OFF_SLAB")
    return "|".join(names) or "0"
