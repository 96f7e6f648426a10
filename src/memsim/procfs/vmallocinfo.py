"""/proc/vmallocinfo (mm/vmalloc.c s_show; the file came after 2.6.24, with
2.6.26):

    seq_printf(m, "0x%p-0x%p %7ld", v->addr, v->addr + v->size, v->size);
    then " caller" (sprint_symbol), " pages=%d", " phys=%lx", " ioremap",
    " vmalloc", " vmap", " user", " vpages", and on NUMA kernels " N%u=%u"
    for each node holding pages of the area.

%p prints 2*sizeof(void *) zero-padded lowercase hex digits; size counts the
guard page.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

VM_IOREMAP = 0x01
VM_ALLOC = 0x02
VM_MAP = 0x04
VM_USERMAP = 0x08
VM_VPAGES = 0x10


@dataclass(frozen=True)
class VmallocEntry:
    addr: int
    size: int  # with the guard page
    flags: int = VM_ALLOC
    pages: int = 0
    caller: str = ""  # "func+0x1c/0x50", as sprint_symbol gives it
    phys_addr: int = 0
    nodes: tuple[tuple[int, int], ...] = ()  # (node, pages), shown on NUMA kernels


def format_vmallocinfo_line(e: VmallocEntry, word_bytes: int) -> str:
    digits = 2 * word_bytes
    line = f"0x{e.addr:0{digits}x}-0x{e.addr + e.size:0{digits}x} {e.size:7d}"
    if e.caller:
        line += f" {e.caller}"
    if e.pages:
        line += f" pages={e.pages}"
    if e.phys_addr:
        line += f" phys={e.phys_addr:x}"
    for bit, word in (
        (VM_IOREMAP, "ioremap"),
        (VM_ALLOC, "vmalloc"),
        (VM_MAP, "vmap"),
        (VM_USERMAP, "user"),
        (VM_VPAGES, "vpages"),
    ):
        if e.flags & bit:
            line += f" {word}"
    line += "".join(f" N{node}={count}" for node, count in e.nodes if count)
    return line + "\n"


def format_vmallocinfo(entries: Iterable[VmallocEntry], word_bytes: int) -> str:
    """One line per area, in address order."""
    return "".join(format_vmallocinfo_line(e, word_bytes) for e in entries)
