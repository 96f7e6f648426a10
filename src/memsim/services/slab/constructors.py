"""Named object constructors: what kmem_cache_create's ctor argument can be.

A constructor runs on every object of a newly grown slab (cache_init_objs),
never again when an object is freed and allocated anew: the object comes
back as its last user left it. (With SLAB_POISON the kernel cannot keep that
promise, so it runs the constructor at every allocation instead, after the
poison check: cache_alloc_debugcheck_after.)

  zero       memset(obj, 0, size), how inode_cache's init_once and most
             2.6 constructors begin.
  list_head  zero, then INIT_LIST_HEAD at offset 0: the first two words point
             at the object itself, as a list head embedded first in a
             structure does after construction.
  pattern    the bytes de ad be ef repeated over the object.
  serial     zero, then the first word holds this cache's constructor call
             count (1 for the first object ever constructed): an object that
             was constructed again would show a new number.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from memsim.services.slab.errors import BadRequest

ByteOrder = Literal["little", "big"]
# (object bytes, object address, serial, BYTES_PER_WORD, byte order)
Fill = Callable[[memoryview, int, int, int, ByteOrder], None]

PATTERN = bytes.fromhex("deadbeef")


def _zero(obj: memoryview, addr: int, serial: int, word: int, order: ByteOrder) -> None:
    obj[:] = bytes(len(obj))


def _put_word(obj: memoryview, offset: int, value: int, word: int, order: ByteOrder) -> None:
    if offset + word <= len(obj):
        obj[offset : offset + word] = (value & ((1 << (8 * word)) - 1)).to_bytes(word, order)


def _list_head(obj: memoryview, addr: int, serial: int, word: int, order: ByteOrder) -> None:
    _zero(obj, addr, serial, word, order)
    _put_word(obj, 0, addr, word, order)  # next
    _put_word(obj, word, addr, word, order)  # prev


def _pattern(obj: memoryview, addr: int, serial: int, word: int, order: ByteOrder) -> None:
    size = len(obj)
    obj[:] = (PATTERN * (size // len(PATTERN) + 1))[:size]


def _serial(obj: memoryview, addr: int, serial: int, word: int, order: ByteOrder) -> None:
    _zero(obj, addr, serial, word, order)
    _put_word(obj, 0, serial, word, order)


@dataclass(frozen=True)
class Constructor:
    name: str
    fill: Fill


CONSTRUCTORS: dict[str, Constructor] = {
    c.name: c
    for c in (
        Constructor("zero", _zero),
        Constructor("list_head", _list_head),
        Constructor("pattern", _pattern),
        Constructor("serial", _serial),
    )
}


def constructor(name: str | None) -> Constructor | None:
    """The constructor called name; None or "" for a cache without one."""
    if not name:
        return None
    try:
        return CONSTRUCTORS[name]
    except KeyError:
        raise BadRequest(
            f"unknown constructor {name!r} (constructors: {', '.join(CONSTRUCTORS)})"
        ) from None
