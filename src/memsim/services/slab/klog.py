"""The kernel log the slab core writes to: what `memsim dmesg` shows.

Lines are printk's text without the level prefix, as dmesg prints them. The
log is a ring like log_buf: the oldest lines go once it is full; `total`
keeps counting, so a reader can ask for what came after the last line seen.
"""

from __future__ import annotations

from collections import deque

# About log_buf's 128 KiB at 64 bytes a line.
LOG_LINES = 2048


class KernelLog:
    def __init__(self, max_lines: int = LOG_LINES) -> None:
        self.lines: deque[str] = deque(maxlen=max_lines)
        self.total = 0

    def printk(self, line: str) -> None:
        self.lines.append(line)
        self.total += 1

    def since(self, seq: int) -> list[str]:
        """Lines numbered seq and later (the first line ever is 0); lines that
        fell out of the ring are gone."""
        first = self.total - len(self.lines)
        return list(self.lines)[max(seq - first, 0) :]
