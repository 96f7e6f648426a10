"""/proc/slabinfo (mm/slab.c s_show of 2.6.24) and a slabtop-like summary.

The kernel without CONFIG_DEBUG_SLAB's statistics prints "slabinfo -
version: 2.1", a "# name ..." header, then for each cache, newest first:

    seq_printf(m, "%-17s %6lu %6lu %6u %4u %4d", name, active_objs, num_objs,
               buffer_size, num, 1 << gfporder);
    seq_printf(m, " : tunables %4u %4u %4u", limit, batchcount, shared);
    seq_printf(m, " : slabdata %6lu %6lu %6lu", active_slabs, num_slabs,
               shared_avail);

format_slabtop follows procps' slabtop of the same years (slabtop --once).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

HEADER = (
    "slabinfo - version: 2.1\n"
    "# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab>"
    " : tunables <limit> <batchcount> <sharedfactor>"
    " : slabdata <active_slabs> <num_slabs> <sharedavail>\n"
)


@dataclass(frozen=True)
class SlabinfoRow:
    name: str
    active_objs: int
    num_objs: int
    objsize: int  # buffer_size: the object with its debug words and padding
    objperslab: int
    pagesperslab: int
    limit: int
    batchcount: int
    sharedfactor: int
    active_slabs: int
    num_slabs: int
    sharedavail: int = 0


def format_slabinfo_row(r: SlabinfoRow) -> str:
    return (
        f"{r.name:<17} {r.active_objs:6d} {r.num_objs:6d} {r.objsize:6d} "
        f"{r.objperslab:4d} {r.pagesperslab:4d}"
        f" : tunables {r.limit:4d} {r.batchcount:4d} {r.sharedfactor:4d}"
        f" : slabdata {r.active_slabs:6d} {r.num_slabs:6d} {r.sharedavail:6d}\n"
    )


def format_slabinfo(rows: Iterable[SlabinfoRow]) -> str:
    """The whole file; rows in the cache chain's order (newest first)."""
    return HEADER + "".join(format_slabinfo_row(r) for r in rows)


# slabtop's sort keys (-s): largest first; "n" sorts by name.
SORT_KEYS: dict[str, Callable[[SlabinfoRow], int]] = {
    "a": lambda r: r.active_objs,
    "b": lambda r: r.objperslab,
    "c": lambda r: r.num_slabs * r.pagesperslab,
    "l": lambda r: r.num_slabs,
    "v": lambda r: r.active_slabs,
    "o": lambda r: r.num_objs,
    "p": lambda r: r.pagesperslab,
    "s": lambda r: r.objsize,
    "u": lambda r: 100 * r.active_objs // r.num_objs if r.num_objs else 0,
}


def _pct(part: float, whole: float) -> float:
    return 100.0 * part / whole if whole else 0.0


def format_slabtop(
    rows: Sequence[SlabinfoRow], page_size: int, sort: str = "o", limit: int | None = None
) -> str:
    """slabtop --once: the totals, then the caches sorted by sort (default:
    number of objects), at most limit of them."""
    if sort != "n" and sort not in SORT_KEYS:
        raise ValueError(f"unknown sort key {sort!r} (keys: n{''.join(SORT_KEYS)})")
    nr_objs = sum(r.num_objs for r in rows)
    nr_active_objs = sum(r.active_objs for r in rows)
    nr_slabs = sum(r.num_slabs for r in rows)
    nr_active_slabs = sum(r.active_slabs for r in rows)
    nr_active_caches = sum(1 for r in rows if r.num_objs)
    total_size = sum(r.num_objs * r.objsize for r in rows)
    active_size = sum(r.active_objs * r.objsize for r in rows)
    min_obj = min((r.objsize for r in rows), default=0)
    max_obj = max((r.objsize for r in rows), default=0)
    avg_obj = total_size // nr_objs if nr_objs else 0
    out = [
        f" {'Active / Total Objects (% used)':<35}: {nr_active_objs} / {nr_objs} "
        f"({_pct(nr_active_objs, nr_objs):.1f}%)\n",
        f" {'Active / Total Slabs (% used)':<35}: {nr_active_slabs} / {nr_slabs} "
        f"({_pct(nr_active_slabs, nr_slabs):.1f}%)\n",
        f" {'Active / Total Caches (% used)':<35}: {nr_active_caches} / {len(rows)} "
        f"({_pct(nr_active_caches, len(rows)):.1f}%)\n",
        f" {'Active / Total Size (% used)':<35}: {active_size / 1024:.2f}K / "
        f"{total_size / 1024:.2f}K ({_pct(active_size, total_size):.1f}%)\n",
        f" {'Minimum / Average / Maximum Object':<35}: {min_obj / 1024:.2f}K / "
        f"{avg_obj / 1024:.2f}K / {max_obj / 1024:.2f}K\n\n",
        f"{'OBJS':>6} {'ACTIVE':>6} {'USE':>4} {'OBJ SIZE':>8} {'SLABS':>6} "
        f"{'OBJ/SLAB':>8} {'CACHE SIZE':>10} {'NAME':<23}\n",
    ]
    if sort == "n":
        ordered = sorted(rows, key=lambda r: r.name)
    else:
        ordered = sorted(rows, key=SORT_KEYS[sort], reverse=True)
    for r in ordered[:limit]:
        use = 100 * r.active_objs // r.num_objs if r.num_objs else 0
        cache_kb = r.num_slabs * r.pagesperslab * page_size // 1024
        out.append(
            f"{r.num_objs:6d} {r.active_objs:6d} {use:3d}% {r.objsize / 1024:7.2f}K "
            f"{r.num_slabs:6d} {r.objperslab:8d} {cache_kb:9d}K {r.name:<23}\n"
        )
    return "".join(out)
