"""/proc/PID/maps (fs/proc/task_mmu.c show_map_internal and pad_len_spaces of 2.6.24).

Each line is

    seq_printf(m, "%08lx-%08lx %c%c%c%c %08lx %02x:%02x %lu %n",
               vm_start, vm_end, r, w, x, s/p, vm_pgoff << PAGE_SHIFT,
               MAJOR(dev), MINOR(dev), ino, &len);

then, for a mapping with a name (a file, or "[heap]", "[stack]", "[vdso]"),
pad_len_spaces(m, len): "%*c" of ' ' with width 25 + sizeof(void *) * 6 - len
(at least 1), so names start in column 49 on a 32-bit kernel and 73 on a
64-bit one; then the name and '\n'. A mapping without a name keeps the space
printed after the inode: "... 00:00 0 \n".

Addresses: "%08lx" is a minimum width, not a fixed one. A 64-bit kernel prints
the x86_64 binary at 0x400000 as "00400000" (8 digits) and the stack near
0x7fff00000000 as "7fff5c1e9000" (12 digits: user addresses stop below
0x800000000000, 47 bits); the kernel's vsyscall page would print 16. So `bits`
changes the padding column (sizeof(void *)) and the largest valid address,
never the digits of a given address.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

_PERMS = re.compile(r"[r-][w-][x-][sp]")


@dataclass(frozen=True)
class MapsEntry:
    """One VMA as maps shows it; offset in bytes (vm_pgoff << PAGE_SHIFT)."""

    start: int
    end: int
    perms: str
    offset: int
    dev_major: int
    dev_minor: int
    inode: int
    name: str = ""


def _escape_path(name: str) -> str:
    # seq_path(m, mnt, dentry, "\n"): a newline in a path prints as octal "\012".
    return name.replace("\n", "\\012")


def format_maps_line(entry: MapsEntry, bits: int = 32) -> str:
    if bits not in (32, 64):
        raise ValueError(f"bits must be 32 or 64, not {bits}")
    limit = 1 << bits
    # unsigned long: the highest VMA end the kernel makes is below 2**bits
    # (TASK_SIZE, or 0xfffff000 for the fixed vdso page of 32-bit x86).
    if not 0 <= entry.start < entry.end < limit:
        raise ValueError(f"bad range {entry.start:#x}-{entry.end:#x} for a {bits}-bit kernel")
    if not _PERMS.fullmatch(entry.perms):
        raise ValueError(f"bad perms {entry.perms!r}: expected e.g. 'r-xp' or 'rw-s'")
    if entry.offset < 0 or entry.inode < 0 or entry.dev_major < 0 or entry.dev_minor < 0:
        raise ValueError("offset, device and inode are unsigned")
    line = (
        f"{entry.start:08x}-{entry.end:08x} {entry.perms} {entry.offset:08x} "
        f"{entry.dev_major:02x}:{entry.dev_minor:02x} {entry.inode} "
    )
    if entry.name:
        pad = max(1, 25 + (bits // 8) * 6 - len(line))
        line += " " * pad + _escape_path(entry.name)
    return line + "\n"


def format_maps(entries: Iterable[MapsEntry], bits: int = 32) -> str:
    """Every VMA of a process, in address order as the caller gives them."""
    return "".join(format_maps_line(entry, bits) for entry in entries)
