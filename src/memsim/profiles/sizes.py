"""Sizes as people write them on the kernel command line: 4K, 16M, 1G, 1T."""

from __future__ import annotations

import re

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
_SIZE = re.compile(r"^\s*(\d+)\s*([KMGTP]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes in "64G", "16K", "4096", "1TiB" (binary units, as memparse)."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a size (examples: 4096, 16K, 64M, 1G, 1T)")
    return int(match.group(1)) * _UNITS[match.group(2).upper()]


def format_size(size_bytes: int) -> str:
    """The shortest exact form: 1073741824 -> "1G"."""
    for unit in ("P", "T", "G", "M", "K"):
        scale = _UNITS[unit]
        if size_bytes >= scale and size_bytes % scale == 0:
            return f"{size_bytes // scale}{unit}"
    return str(size_bytes)
