"""Free blocks per order per zone over a run: /proc/buddyinfo sampled, drawn
as one panel per zone (node order, then zone order) with one line per order.

The y axis is linear while every count stays at most LINEAR_MAX, and
symmetric-log above (linear up to 1 block, logarithmic beyond), so that the
many order-0 blocks and the few order-10 ones are all readable. Each order's
legend entry gives its first and last count, which also tells apart lines
that lie on top of each other.
The picture is BUDDYINFO_WIDTH pixels wide and a header plus a panel per
zone high, never more than MAX_HEIGHT (a machine of more than MAX_PANELS
zones shows its first MAX_PANELS).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from memsim.plots.memory_map import format_size

DPI = 100
BUDDYINFO_WIDTH = 1200
HEADER_PX = 100
FOOTER_PX = 50
MAX_HEIGHT = 4000
PANEL_PX = 300
MIN_PANEL_PX = 120
# The most panels that fit under MAX_HEIGHT; zones past them are left out (and said so).
MAX_PANELS = (MAX_HEIGHT - HEADER_PX - FOOTER_PX) // MIN_PANEL_PX
LINEAR_MAX = 50
MARKERS = "osD^v<>ph*X"


@dataclass
class BuddySeries:
    """Samples of nr_free per order, for each zone."""

    zones: list[tuple[int, str]]
    page_size: int = 4096
    times_s: list[float] = field(default_factory=list)
    # zone -> one list of nr_free (indexed by order) per sample
    samples: dict[tuple[int, str], list[list[int]]] = field(default_factory=dict)

    def add(self, time_s: float, rows: Sequence[tuple[int, str, Sequence[int]]]) -> None:
        """One sample: (node, zone, nr_free) of every zone; zones that were not
        in the first sample are ignored, missing ones count as no free blocks."""
        seen = {(node, zone): list(nr_free) for node, zone, nr_free in rows}
        self.times_s.append(time_s)
        for key in self.zones:
            self.samples.setdefault(key, []).append(seen.get(key, []))


def panel_height(zones: int) -> int:
    panels = min(max(zones, 1), MAX_PANELS)
    return max(MIN_PANEL_PX, min(PANEL_PX, (MAX_HEIGHT - HEADER_PX - FOOTER_PX) // panels))


def buddyinfo_size(zones: int) -> tuple[int, int]:
    """(width, height) in pixels of the picture of a machine with this many zones."""
    panels = min(max(zones, 1), MAX_PANELS)
    return BUDDYINFO_WIDTH, HEADER_PX + FOOTER_PX + panels * panel_height(zones)


def render_buddyinfo(series: BuddySeries, out: Path, title: str = "") -> tuple[int, int]:
    """Writes the PNG; returns its (width, height)."""
    width, height = buddyinfo_size(len(series.zones))
    fig = Figure(figsize=((width + 0.01) / DPI, (height + 0.01) / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    fig.patch.set_facecolor("white")
    heading = title or "Free blocks per order (/proc/buddyinfo)"
    fig.text(80 / width, 1 - 28 / height, heading, fontsize=15, weight="bold", va="center")
    duration = series.times_s[-1] if series.times_s else 0.0
    fig.text(
        80 / width,
        1 - 56 / height,
        f"{len(series.times_s)} samples over {duration:.1f} s; one line per order "
        f"(a block of order n is 2^n pages of {format_size(series.page_size)})"
        + (
            f"; the first {MAX_PANELS} of {len(series.zones)} zones"
            if len(series.zones) > MAX_PANELS
            else ""
        ),
        fontsize=10,
        va="center",
        color="#333333",
    )
    shown = series.zones[:MAX_PANELS]
    n = max(len(shown), 1)
    fig.subplots_adjust(
        left=80 / width,
        right=1 - 250 / width,
        top=1 - HEADER_PX / height,
        bottom=FOOTER_PX / height,
        hspace=0.35,
    )
    axes = fig.subplots(n, 1, sharex=True, squeeze=False)[:, 0]
    orders = max((len(row) for rows in series.samples.values() for row in rows), default=0)
    colours = colormaps["viridis"].resampled(max(orders, 2))
    for ax, key in zip(axes, shown, strict=False):
        rows = series.samples.get(key, [])
        highest = 0
        for order in range(orders):
            values = [row[order] if order < len(row) else 0 for row in rows]
            highest = max([highest, *values])
            block = format_size(series.page_size << order)
            change = f"{values[0]:,} \u2192 {values[-1]:,}" if values else "none"
            ax.plot(
                series.times_s,
                values,
                color=colours(order),
                linewidth=1.6,
                marker=MARKERS[order % len(MARKERS)] if len(values) <= 60 else None,
                markersize=4,
                label=f"order {order} ({block}): {change}",
            )
        if highest > LINEAR_MAX:
            ax.set_yscale("symlog", linthresh=1)
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
            ax.set_ylabel("free blocks (log)")
        else:
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel("free blocks")
            ax.set_ylim(top=max(highest, 1) * 1.12)
        ax.set_ylim(bottom=0)
        ax.set_title(f"node {key[0]}, zone {key[1]}", fontsize=11, loc="left")
        ax.grid(True, which="major", color="#dddddd", linewidth=0.8)
        ax.legend(
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            fontsize=8,
            frameon=False,
            borderaxespad=0,
        )
    axes[-1].set_xlabel("seconds since the first sample")
    fig.savefig(out, format="png", dpi=DPI, facecolor="white")
    return width, height
