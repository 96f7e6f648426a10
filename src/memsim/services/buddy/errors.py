"""The buddy core's exceptions. The gRPC edge maps each to a status code."""

from __future__ import annotations


class BuddyError(Exception):
    """Base of every error the buddy core raises."""


class InvalidRequest(BuddyError):
    """The request itself is malformed (bad order, count, pfn, empty batch)."""


class ArenaNotFound(BuddyError):
    """No arena exists for the given node and zone."""


class ArenaConflict(BuddyError):
    """The arena's pages overlap another arena's."""


class ArenaExists(ArenaConflict):
    """That node and zone already have an arena."""


class OutOfMemory(BuddyError):
    """No free block of the requested order or larger."""


class BadFree(BuddyError):
    """Freeing what is not allocated: a double free, a wrong order, a tail page."""
