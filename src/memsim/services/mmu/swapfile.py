"""The bytes of swapped-out pages, in a file: slot n at n x page size.

A page that was never written swaps out as zeros and takes no room: its slot
is remembered as zero and nothing is written. The file is sparse, so an
unused swap area costs nothing on disk.
"""

from __future__ import annotations

import os
from pathlib import Path


class SwapFile:
    def __init__(self, path: Path, page_size: int) -> None:
        self.path = path
        self.page_size = page_size
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self._written: set[int] = set()

    def write(self, slot: int, data: bytearray | None) -> None:
        if data is None:
            self._written.discard(slot)
            return
        os.pwrite(self._fd, data, slot * self.page_size)
        self._written.add(slot)

    def read(self, slot: int) -> bytes | None:
        if slot not in self._written:
            return None
        return os.pread(self._fd, self.page_size, slot * self.page_size)

    def discard(self, slot: int) -> None:
        self._written.discard(slot)

    def close(self) -> None:
        os.close(self._fd)
        self.path.unlink(missing_ok=True)
