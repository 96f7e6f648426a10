"""`free` as procps 3.2 prints it, from what the machine knows so far.

procps 3.2.x free.c:

    printf("             total       used       free     shared    buffers     cached\\n");
    printf("%-7s %10Lu %10Lu %10Lu %10Lu %10Lu %10Lu\\n", "Mem:", ...);
    printf("-/+ buffers/cache: %10Lu %10Lu\\n", used - buffers - cached,
           free + buffers + cached);
    printf("%-7s %10Lu %10Lu %10Lu\\n", "Swap:", ...);

with every value S(kb) = (kb << 10) >> shift: -b shift 0, -k 10 (the
default), -m 20, -g 30, so -m and -g truncate. shared is 0 on 2.6 (no
MemShared in /proc/meminfo). -h is procps-ng 3.3's (the last free with the
-/+ buffers/cache line): the same columns as " %10s" of scale_size's text.
"""

from __future__ import annotations

import struct

FREE_UNITS = ("b", "k", "m", "g", "h")
_SHIFT = {"b": 0, "k": 10, "m": 20, "g": 30}


def _float32(value: float) -> float:
    return float(struct.unpack("f", struct.pack("f", value))[0])


def human_size(kb: int) -> str:
    """procps-ng 3.3 scale_size with -h (powers of 1024): the first of

    "%ldB" of bytes, "%ldK" of kB, then for M, G, T "%.1f%c" of the float
    quotient and "%ld%c" of its truncation, that fits in 4 characters; past
    T the last one tried ("%ldT"), which no longer fits its column.
    """
    text = f"{kb * 1024}B"
    if len(text) <= 4:
        return text
    text = f"{kb}K"
    if len(text) <= 4:
        return text
    for power, suffix in enumerate("MGT", start=1):
        quotient = kb / 1024.0**power
        text = f"{_float32(quotient):.1f}{suffix}"
        if len(text) <= 4:
            return text
        text = f"{int(quotient)}{suffix}"
        if len(text) <= 4:
            return text
    return text


def scale(kb: int, unit: str = "k") -> str:
    """One value of free's table, from kB, for -b, -k, -m, -g or -h."""
    if kb < 0:
        raise ValueError(f"free prints unsigned values, not {kb}")
    if unit == "h":
        return human_size(kb)
    if unit not in _SHIFT:
        raise ValueError(f"unit must be one of {', '.join(FREE_UNITS)}, not {unit!r}")
    return str((kb << 10) >> _SHIFT[unit])


def format_free(
    total_kb: int,
    free_kb: int,
    swap_total_kb: int = 0,
    swap_free_kb: int = 0,
    buffers_kb: int = 0,
    cached_kb: int = 0,
    unit: str = "k",
) -> str:
    """The three lines and header of `free -<unit>`; unit "k" is plain `free`."""
    used = total_kb - free_kb
    cache = buffers_kb + cached_kb

    def row(values: tuple[int, ...]) -> str:
        return "".join(f" {scale(v, unit):>10}" for v in values)

    return (
        "             total       used       free     shared    buffers     cached\n"
        f"{'Mem:':<7}{row((total_kb, used, free_kb, 0, buffers_kb, cached_kb))}\n"
        f"-/+ buffers/cache:{row((used - cache, free_kb + cache))}\n"
        f"{'Swap:':<7}{row((swap_total_kb, swap_total_kb - swap_free_kb, swap_free_kb))}\n"
    )
