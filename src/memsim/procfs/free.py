"""`free` as procps 3.2 prints it, in KiB, from what the machine knows so far."""

from __future__ import annotations


def format_free(
    total_kb: int,
    free_kb: int,
    swap_total_kb: int = 0,
    swap_free_kb: int = 0,
    buffers_kb: int = 0,
    cached_kb: int = 0,
) -> str:
    used = total_kb - free_kb
    return (
        "             total       used       free     shared    buffers     cached\n"
        f"{'Mem:':<7} {total_kb:10d} {used:10d} {free_kb:10d} {0:10d} {buffers_kb:10d} "
        f"{cached_kb:10d}\n"
        f"-/+ buffers/cache: {used - buffers_kb - cached_kb:10d} "
        f"{free_kb + buffers_kb + cached_kb:10d}\n"
        f"{'Swap:':<7} {swap_total_kb:10d} {swap_total_kb - swap_free_kb:10d} "
        f"{swap_free_kb:10d}\n"
    )
