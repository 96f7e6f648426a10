"""The slab core's exceptions. The gRPC edge maps each to a status code.

Every one is raised before anything changes: a refused call leaves caches,
slabs, object contents, vmalloc areas and the kernel log as they were.
"""

from __future__ import annotations


class SlabError(Exception):
    """Base of every error the slab core raises."""


class BadRequest(SlabError):
    """Malformed request: bad size, count, flags, name, alignment or pfn
    (INVALID_ARGUMENT)."""


class BadAddress(BadRequest):
    """A read or write outside the memory of any slab (INVALID_ARGUMENT)."""


class UnknownCache(SlabError):
    """No cache by that name (NOT_FOUND)."""


class UnknownArea(SlabError):
    """No vmalloc area starts at that address (NOT_FOUND)."""


class DuplicateCache(SlabError):
    """kmem_cache_create of a name already in use (ALREADY_EXISTS or
    FAILED_PRECONDITION)."""


class CacheBusy(SlabError):
    """kmem_cache_destroy of a cache with objects in use, or of a boot cache
    (FAILED_PRECONDITION)."""


class BadFree(SlabError):
    """Freeing what is not an allocated object of that cache
    (FAILED_PRECONDITION)."""


class DoubleFree(BadFree):
    """The object is already free."""


class WrongCache(BadFree):
    """The object belongs to another cache (or, for kfree, to a cache that is
    not one of kmalloc's)."""


class NotAllocated(BadFree):
    """The address is not the start of an object of any cache."""


class NoMemory(SlabError):
    """Not enough pages were supplied, or no room is left in the vmalloc
    range (RESOURCE_EXHAUSTED)."""
