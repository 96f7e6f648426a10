"""The slab service: kmem caches, kmalloc and vmalloc (mm/slab.c,
include/linux/kmalloc_sizes.h and mm/vmalloc.c of 2.6.24)."""
