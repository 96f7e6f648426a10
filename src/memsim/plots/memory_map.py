"""The map of physical memory: every frame a small square coloured by what
holds it.

Layout. Frames are laid out in address order, left to right, in rows of a
power-of-two number of cells; the map is always 1024 pixels wide and at most
1024 rows of pixels high (plus a thin gap where a zone starts on a row
boundary), so the picture stays under 1300 x 1400 pixels whatever the
machine:

- up to 2^20 frames (4 GiB of 4 KiB pages), one cell is one frame, drawn as a
  square of cell_px x cell_px pixels (16 for a few MiB down to 1 for 4 GiB),
  with as many frames per row as make the map about square. Every frame is a
  whole number of pixels, so the pixels of each colour are exactly
  cell_px^2 times the frames of that category;
- above that, one cell (one pixel) is a bin of frames_per_cell frames (a power
  of two), and it takes the colour of the category that holds most of the
  bin's frames; a tie goes to the scarcer kind of use (page table, then
  vmalloc, slab, user page, reserved, free: TIE_ORDER in frames.py).

The legend's counts are always exact frame counts. Zones are named in the
left margin at the row where they start; their boundaries are marked with
ticks on both sides of the map, and with a white gap across it when they fall
on a row boundary (as they do in every profile).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from memsim.plots.frames import NO_CATEGORY, Category, FrameMap, Source

# Okabe-Ito colours (told apart with the common colour-vision deficiencies),
# free light and reserved dark so that use stands out.
COLOURS: dict[Category, tuple[int, int, int]] = {
    Category.FREE: (0xDD, 0xDD, 0xDD),
    Category.USER: (0x00, 0x72, 0xB2),
    Category.PAGE_TABLE: (0xE6, 0x9F, 0x00),
    Category.SLAB: (0x00, 0x9E, 0x73),
    Category.VMALLOC: (0xCC, 0x79, 0xA7),
    Category.RESERVED: (0x44, 0x44, 0x44),
}
BACKGROUND = (0xFF, 0xFF, 0xFF)
BOUNDARY = "#D55E00"
DPI = 100
MAP_PX = 1024
EXACT_LIMIT = 1 << 20  # frames drawn one cell each
MIN_CELLS_PER_ROW = 64
MAX_CELL_PX = 16
GAP_PX = 4
LABEL_PX = 44  # a zone's three lines of label in the left margin
LEFT_PX, RIGHT_PX, TOP_PX = 190, 30, 74
LEGEND_LINE_PX, LEGEND_PAD_PX = 22, 36


@dataclass(frozen=True)
class MapLayout:
    """Where everything goes, in pixels; (0, 0) is the image's top left."""

    total_pfns: int
    frames_per_cell: int
    cells_per_row: int
    cell_px: int
    rows: int
    gap_rows: tuple[int, ...]  # rows that have a gap above them

    @property
    def frames_per_row(self) -> int:
        return self.cells_per_row * self.frames_per_cell

    @property
    def exact(self) -> bool:
        return self.frames_per_cell == 1

    @property
    def map_width(self) -> int:
        return self.cells_per_row * self.cell_px

    @property
    def map_height(self) -> int:
        return self.rows * self.cell_px + len(self.gap_rows) * GAP_PX

    @property
    def map_x0(self) -> int:
        return LEFT_PX

    @property
    def map_y0(self) -> int:
        return TOP_PX

    @property
    def width(self) -> int:
        return LEFT_PX + self.map_width + RIGHT_PX

    @property
    def height(self) -> int:
        return TOP_PX + self.map_height + LEGEND_PAD_PX + len(Category) * LEGEND_LINE_PX + 20

    def row_y(self, row: int) -> int:
        """Top of a row of cells, in pixels from the map's top."""
        return row * self.cell_px + sum(1 for r in self.gap_rows if r <= row) * GAP_PX

    def pfn_y(self, pfn: int) -> int:
        return self.row_y(pfn // self.frames_per_row)


def hex_colour(category: Category) -> str:
    return "#{:02x}{:02x}{:02x}".format(*COLOURS[category])


def format_size(size_bytes: int) -> str:
    """Bytes for a reader: "16 MiB", "48.2 MiB", "4 KiB", "0"."""
    if not size_bytes:
        return "0"
    for unit, shift in (("PiB", 50), ("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size_bytes >= 1 << shift:
            value = size_bytes / (1 << shift)
            exact = size_bytes % (1 << shift) == 0
            text = f"{value:.0f}" if exact or value >= 100 else f"{value:.1f}"
            return f"{text} {unit}"
    return f"{size_bytes} B"


def _pow2_at_least(n: float) -> int:
    return 1 << max(0, math.ceil(math.log2(n))) if n > 1 else 1


def map_layout(total_pfns: int, zone_starts: tuple[int, ...] = ()) -> MapLayout:
    """The layout for a machine of total_pfns frames whose zones start at zone_starts."""
    if total_pfns < 1:
        raise ValueError("a machine has at least one frame")
    if total_pfns <= EXACT_LIMIT:
        per_cell = 1
        cells = min(MAP_PX, max(MIN_CELLS_PER_ROW, _pow2_at_least(math.sqrt(total_pfns))))
        cell_px = min(MAX_CELL_PX, MAP_PX // cells)
    else:
        cells, cell_px = MAP_PX, 1
        per_cell = _pow2_at_least(total_pfns / EXACT_LIMIT)
    per_row = cells * per_cell
    rows = -(-total_pfns // per_row)
    gaps = tuple(sorted({s // per_row for s in zone_starts if s and s % per_row == 0}))
    return MapLayout(total_pfns, per_cell, cells, cell_px, rows, gaps)


def map_pixels(fmap: FrameMap, layout: MapLayout) -> npt.NDArray[np.uint8]:
    """The map as an RGB array of layout.map_height x layout.map_width."""
    cells = layout.rows * layout.cells_per_row
    cats = fmap.binned_categories(layout.frames_per_cell, cells)
    palette = np.array(
        [COLOURS[c] for c in Category] + [BACKGROUND] * (256 - len(Category)), dtype=np.uint8
    )
    palette[NO_CATEGORY] = BACKGROUND
    grid = palette[cats.reshape(layout.rows, layout.cells_per_row)]
    k = layout.cell_px
    grid = np.repeat(np.repeat(grid, k, axis=0), k, axis=1)
    if not layout.gap_rows:
        return np.ascontiguousarray(grid)
    bands, previous = [], 0
    gap = np.full((GAP_PX, layout.map_width, 3), BACKGROUND, dtype=np.uint8)
    for row in layout.gap_rows:
        bands += [grid[previous * k : row * k], gap]
        previous = row
    bands.append(grid[previous * k :])
    return np.ascontiguousarray(np.concatenate(bands))


def _count_line(count: int, total: int, page_size: int) -> str:
    if not count:
        return "0 frames"
    share = 100 * count / total
    percent = f"{share:.1f}%" if share >= 0.1 else "<0.1%"
    return f"{count:,} frames, {format_size(count * page_size)}, {percent}"


def legend_labels(fmap: FrameMap) -> list[str]:
    """One line per category: its exact count and what it is made of."""
    counts = fmap.category_counts
    lines = []
    for category in Category:
        text = f"{category.label}: {_count_line(counts[category], fmap.total_pfns, fmap.page_size)}"
        parts = [
            f"{source.label} {fmap.source_counts.get(source, 0):,}"
            for source in Source
            if source.category == category and fmap.source_counts.get(source, 0)
        ]
        if len(parts) > 1 or (parts and category == Category.SLAB):
            text += " (" + ", ".join(parts) + ")"
        lines.append(text)
    return lines


def _describe(layout: MapLayout, page_size: int) -> str:
    row = format_size(layout.frames_per_row * page_size)
    if layout.exact:
        return (
            f"one frame = {layout.cell_px}x{layout.cell_px} px, "
            f"{layout.cells_per_row} frames ({row}) a row, low addresses at the top left"
        )
    return (
        f"one pixel = {layout.frames_per_cell} frames "
        f"({format_size(layout.frames_per_cell * page_size)}), coloured by the category "
        f"that holds most of them; {row} a row, low addresses at the top left"
    )


def render_memory_map(fmap: FrameMap, out: Path, title: str = "") -> MapLayout:
    """Writes the map as a PNG; returns the layout it used."""
    layout = map_layout(fmap.total_pfns, tuple(z.start_pfn for z in fmap.zones))
    width, height = layout.width, layout.height
    # The canvas truncates width/dpi * dpi: a hair more keeps every pixel.
    fig = Figure(figsize=((width + 0.01) / DPI, (height + 0.01) / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    fig.patch.set_facecolor("white")

    def fx(x: float) -> float:
        return x / width

    def fy(y: float) -> float:  # from the top, in pixels
        return 1 - y / height

    size = format_size(fmap.total_pfns * fmap.page_size)
    heading = title or f"Physical memory of {fmap.profile or 'the machine'}, {size}"
    fig.text(fx(LEFT_PX), fy(24), heading, fontsize=15, weight="bold", va="center")
    fig.text(
        fx(LEFT_PX),
        fy(50),
        f"{fmap.total_pfns:,} frames of {format_size(fmap.page_size)}: "
        + _describe(layout, fmap.page_size),
        fontsize=10,
        va="center",
        color="#333333",
    )
    pixels = map_pixels(fmap, layout)
    fig.figimage(
        pixels, xo=layout.map_x0, yo=height - layout.map_y0 - layout.map_height, origin="upper"
    )
    _zone_marks(fig, fmap, layout, fx, fy)
    handles = [
        Patch(facecolor=hex_colour(c), edgecolor="#222222", label=label)
        for c, label in zip(Category, legend_labels(fmap), strict=True)
    ]
    top = layout.map_y0 + layout.map_height + LEGEND_PAD_PX - 12
    fig.legend(
        handles=handles,
        loc="upper left",
        bbox_to_anchor=(fx(LEFT_PX - 8), fy(top)),
        frameon=False,
        fontsize=10,
        handlelength=1.6,
        handleheight=1.2,
        labelspacing=0.55,
        borderaxespad=0,
    )
    fig.savefig(out, format="png", dpi=DPI, facecolor="white")
    return layout


def _zone_marks(
    fig: Figure,
    fmap: FrameMap,
    layout: MapLayout,
    fx: Callable[[float], float],
    fy: Callable[[float], float],
) -> None:
    x0, x1 = layout.map_x0, layout.map_x0 + layout.map_width
    below = -float(LABEL_PX)  # where the previous zone's label ends
    for zone in fmap.zones:
        row, column = divmod(zone.start_pfn, layout.frames_per_row)
        mark = layout.map_y0 + layout.row_y(row) - (GAP_PX / 2 if row in layout.gap_rows else 0)
        if column:  # mid-row: mark the row's middle
            mark = layout.map_y0 + layout.row_y(row) + layout.cell_px / 2
        for a, b in ((x0 - 14, x0 - 2), (x1 + 2, x1 + 14)):
            fig.add_artist(
                Line2D([fx(a), fx(b)], [fy(mark), fy(mark)], color=BOUNDARY, linewidth=2)
            )
        # A thin zone's label would cover the next one's: push it down, with a leader.
        y = max(mark, below)
        below = y + LABEL_PX
        if y > mark:
            fig.add_artist(
                Line2D(
                    [fx(x0 - 14), fx(x0 - 17)],
                    [fy(mark), fy(y + 8)],
                    color=BOUNDARY,
                    linewidth=1,
                )
            )
        address = format_size(zone.start_pfn * fmap.page_size)
        where = f"pfn {zone.start_pfn:,} (at {address})" if zone.start_pfn else "pfn 0"
        fig.text(
            fx(x0 - 18),
            fy(y + 2),
            f"node {zone.node} {zone.name}",
            fontsize=10,
            weight="bold",
            ha="right",
            va="top",
        )
        fig.text(
            fx(x0 - 18),
            fy(y + 17),
            where,
            fontsize=8,
            ha="right",
            va="top",
            color="#333333",
        )
        fig.text(
            fx(x0 - 18),
            fy(y + 30),
            f"{format_size(zone.spanned * fmap.page_size)}, "
            f"{format_size(zone.managed * fmap.page_size)} managed",
            fontsize=8,
            ha="right",
            va="top",
            color="#333333",
        )
    end = format_size(fmap.total_pfns * fmap.page_size)
    fig.text(
        fx(x0 - 18),
        fy(layout.map_y0 + layout.map_height),
        f"end: pfn {fmap.total_pfns:,} ({end})",
        fontsize=8,
        ha="right",
        va="bottom",
        color="#333333",
    )
