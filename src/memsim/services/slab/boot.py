"""The caches a 2.6.24 kernel has made by the time user space runs.

kmem_cache_init makes kmalloc's caches first: the one kmalloc(sizeof(struct
arraycache_init)) uses, then the one for sizeof(struct kmem_list3), then every
other size-N and, with CONFIG_ZONE_DMA, each size-N(DMA) right after its
size-N; all with ARCH_KMALLOC_MINALIGN and SLAB_HWCACHE_ALIGN. Then, in
start_kernel's order: fork_init (task_struct), proc_caches_init
(vm_area_struct, mm_struct), buffer_init (buffer_head), vfs_caches_init
(names_cache, then dcache_init's dentry and inode_init's inode_cache).
/proc/slabinfo lists the chain newest first, so the kmalloc caches come last.

2.6.24 names the dentry cache "dentry" (KMEM_CACHE(dentry, ...)); it was
"dentry_cache" before 2.6.22.

Object sizes are sizeof() of each structure and vary with the configuration;
these are typical of the era. 32-bit: an i386 slabinfo of the 2.6 SLAB
allocator (task_struct 1280, mm_struct 416, vm_area_struct 88, buffer_head
48, dentry 124, inode_cache 308); 64-bit: x86_64 kernels of 2.6.18-2.6.24
(task_struct 1888 with the FPU state still inside it, mm_struct 896,
vm_area_struct 176, buffer_head 104, dentry 208, inode_cache 560).
names_cache is PATH_MAX, 4096, everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from memsim.services.slab import flags as f
from memsim.services.slab.estimate import align_up

RECLAIM = f.SLAB_RECLAIM_ACCOUNT | f.SLAB_PANIC | f.SLAB_MEM_SPREAD


@dataclass(frozen=True)
class BootCache:
    name: str
    size: int
    align: int
    flags: int
    ctor: str | None = None


def boot_caches(word_bytes: int, arch: str, cache_line: int) -> list[BootCache]:
    """The non-kmalloc boot caches, in creation order."""
    # ARCH_MIN_TASKALIGN: 16 on x86 and powerpc, L1_CACHE_BYTES elsewhere.
    task_align = 16 if arch in ("i386", "x86_64", "powerpc") else cache_line
    w = word_bytes
    if w == 4:
        task, mm, vma, bh, dentry, inode = 1280, 416, 88, 48, 124, 308
    else:
        task, mm, vma, bh, dentry, inode = 1888, 896, 176, 104, 208, 560
    return [
        BootCache("task_struct", task, task_align, f.SLAB_PANIC),
        BootCache("vm_area_struct", vma, 0, f.SLAB_PANIC),
        BootCache("mm_struct", mm, 0, f.SLAB_HWCACHE_ALIGN | f.SLAB_PANIC),
        # KMEM_CACHE: __alignof__ of a structure of pointers and longs.
        BootCache("buffer_head", bh, w, RECLAIM),
        BootCache("names_cache", 4096, 0, f.SLAB_HWCACHE_ALIGN | f.SLAB_PANIC),
        BootCache("dentry", dentry, w, RECLAIM),
        # inode_init_once starts with memset(inode, 0, sizeof(*inode)).
        BootCache("inode_cache", inode, 0, RECLAIM, "zero"),
    ]


def early_kmalloc_sizes(word_bytes: int) -> tuple[int, int]:
    """sizeof(struct arraycache_init) and sizeof(struct kmem_list3), which
    pick the first two kmalloc caches kmem_cache_init makes."""
    w = word_bytes
    # Four unsigned ints and a spinlock, then entry[] and its one entry.
    arraycache_init = align_up(4 * 4 + 4, w) + w
    # Three list_heads, free_objects, free_limit, colour_next, list_lock,
    # shared, alien, next_reap, free_touched.
    kmem_list3 = align_up(align_up(6 * w + w + 4 + 4 + 4, w) + 3 * w + 4, w)
    return arraycache_init, kmem_list3
