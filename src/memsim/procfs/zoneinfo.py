"""/proc/zoneinfo (mm/vmstat.c zoneinfo_show_print of 2.6.24).

One addition: the "managed" line that later kernels print after "present",
since memsim keeps the kernel's boot reservations apart from present pages.
"""

from __future__ import annotations

from memsim.zone.v1 import zone_pb2 as pb


def format_zone(zone: pb.Zone, stat_names: list[str]) -> str:
    lines = [
        f"Node {zone.ref.node}, zone {zone.ref.zone:>8}",
        f"  pages free     {zone.free_pages}",
        f"        min      {zone.min_pages}",
        f"        low      {zone.low_pages}",
        f"        high     {zone.high_pages}",
        f"        scanned  {zone.pages_scanned} (a: 0 i: 0)",
        f"        spanned  {zone.spanned_pages}",
        f"        present  {zone.present_pages}",
        f"        managed  {zone.managed_pages}",
    ]
    lines += [f"    {name:<12} {zone.stats[name]}" for name in stat_names]
    lines.append("        protection: (" + ", ".join(map(str, zone.lowmem_reserve_pages)) + ")")
    lines.append("  pagesets")
    previous_cpu = None
    for pcp_index, pageset in enumerate(zone.pagesets):
        if previous_cpu is not None and pageset.cpu != previous_cpu:
            lines.append(f"  vm stats threshold: {zone.stat_threshold}")
        lines += [
            f"    cpu: {pageset.cpu} pcp: {pcp_index % 2}",
            f"              count: {pageset.count}",
            f"              high:  {pageset.high}",
            f"              batch: {pageset.batch}",
        ]
        previous_cpu = pageset.cpu
    if previous_cpu is not None:
        lines.append(f"  vm stats threshold: {zone.stat_threshold}")
    lines += [
        f"  all_unreclaimable: {int(zone.all_unreclaimable)}",
        "  prev_priority:     12",
        f"  start_pfn:         {zone.start_pfn}",
    ]
    return "\n".join(lines) + "\n"


def format_zoneinfo(info: pb.GetZoneInfoResponse, stat_names: list[str]) -> str:
    """Every populated zone of every node; stat_names in the kernel's order."""
    return "".join(format_zone(zone, stat_names) for node in info.nodes for zone in node.zones)
