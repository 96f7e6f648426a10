"""The zone core's exceptions. The gRPC edge maps each to a status code."""

from __future__ import annotations


class ZoneError(Exception):
    """Base of every error the zone service raises."""


class InvalidRequest(ZoneError):
    """Malformed request: bad flags, order, count, CPU or node."""


class OutOfMemory(ZoneError):
    """Reclaim could not free enough: the allocation fails."""


class BadFree(ZoneError):
    """Freeing a block this service did not hand out (or not as handed out)."""


class NotFound(ZoneError):
    """An unknown reclaimer."""


class Halted(ZoneError):
    """The OOM killer panicked the machine (FAILED_PRECONDITION)."""


class KillerUnavailable(ZoneError):
    """The OOM killer (the policy service) could not be asked (UNAVAILABLE):
    the allocation fails, nothing is allocated."""
