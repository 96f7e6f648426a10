"""Invariant checks over an arena: what CONFIG_DEBUG_VM would catch.

Cost is proportional to the number of blocks (boot runs count as one span),
so it is a debugging call, not one for a hot path.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from memsim.services.buddy.arena import Arena


@dataclass
class AuditReport:
    problems: list[str] = field(default_factory=list)
    blocks_checked: int = 0


def audit_arena(arena: Arena) -> AuditReport:
    report = AuditReport()
    name = arena.spec.name
    start, end = arena.spec.start_pfn, arena.spec.end_pfn
    top = arena.max_order - 1
    # (first pfn, pages, what) of every free and allocated span.
    spans: list[tuple[int, int, str]] = []

    def check_span(pfn: int, order: int, what: str, nr_blocks: int = 1) -> None:
        """nr_blocks blocks of one order from pfn on: a single block, or a boot run."""
        report.blocks_checked += nr_blocks
        pages = nr_blocks << order
        if nr_blocks == 1:
            what = f"{what} block at pfn {pfn} order {order}"
        else:
            what = f"{what} run [{pfn}, {pfn + pages}) of order {order}"
        if pfn & ((1 << order) - 1):
            report.problems.append(f"{name}: {what} is not aligned to order {order}")
        if not (start <= pfn and pfn + pages <= end):
            report.problems.append(f"{name}: {what} lies outside [{start}, {end})")
        spans.append((pfn, pages, what))

    free_pages = 0
    for area in arena.free_area:
        order = area.order
        counted = len(area.blocks)
        for pfn in area.blocks:
            check_span(pfn, order, "free")
            buddy = pfn ^ (1 << order)
            if order < top and buddy in area.blocks and pfn < buddy:
                report.problems.append(
                    f"{name}: free buddies at pfn {pfn} and {buddy} "
                    f"of order {order} were not merged"
                )
        for run_start, run_end in area.runs:
            nr_blocks = (run_end - run_start) >> order
            counted += nr_blocks
            check_span(run_start, order, "free", nr_blocks)
        if counted != area.nr_free:
            report.problems.append(
                f"{name}: free_area[{order}].nr_free is {area.nr_free} "
                f"but {counted} blocks are on the list"
            )
        free_pages += counted << order

    for pfn, order in arena.allocated.items():
        check_span(pfn, order, "allocated")

    spans.sort()
    for (a_start, a_pages, a_what), (b_start, _, b_what) in itertools.pairwise(spans):
        if a_start + a_pages > b_start:
            report.problems.append(f"{name}: {a_what} overlaps {b_what}")

    allocated_pages = sum(1 << order for order in arena.allocated.values())
    if allocated_pages != arena.allocated_pages:
        report.problems.append(
            f"{name}: allocated_pages is {arena.allocated_pages} but the "
            f"allocated blocks hold {allocated_pages}"
        )
    if free_pages + allocated_pages != arena.spec.pages:
        report.problems.append(
            f"{name}: {free_pages} free + {allocated_pages} allocated pages "
            f"!= {arena.spec.pages} pages in the arena"
        )
    return report
