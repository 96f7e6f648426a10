"""The pictures: sizes from the layout, and pixels per colour that are exactly
the frames of each category times the pixels of a frame."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from matplotlib.image import imread

from memsim.plots.buddyinfo import BuddySeries, buddyinfo_size, render_buddyinfo
from memsim.plots.frames import Category, Claim, FrameMap, Snapshot, Source, ZoneSpan
from memsim.plots.frames import build_frame_map as build
from memsim.plots.memory_map import (
    BACKGROUND,
    COLOURS,
    EXACT_LIMIT,
    format_size,
    legend_labels,
    map_layout,
    render_memory_map,
)

SOURCES = [
    Source.BUDDY,
    Source.PCP,
    Source.ANON,
    Source.PAGE_TABLES,
    Source.SLAB_RECLAIMABLE,
    Source.VMALLOC,
    Source.MMU_LISTS,
]


def synthetic(zones: list[ZoneSpan], seed: int = 1) -> FrameMap:
    """Every managed pfn handed at random, in runs of 1 to 64, to a source."""
    rng = random.Random(seed)
    ranges: dict[Source, list[tuple[int, int]]] = {s: [] for s in SOURCES}
    for zone in zones:
        pfn = zone.managed_start_pfn
        while pfn < zone.end_pfn:
            count = min(rng.choice((1, 3, 8, 64)), zone.end_pfn - pfn)
            ranges[rng.choice(SOURCES)].append((pfn, count))
            pfn += count
    return build(Snapshot(zones, [Claim(s, r) for s, r in ranges.items()], 4096, "test"))


def rgb(path: Path) -> npt.NDArray[np.int64]:
    image: npt.NDArray[np.float32] = imread(path)
    return np.rint(image[..., :3] * 255).astype(np.int64)


def colour_counts(image: npt.NDArray[np.int64], colours: list[tuple[int, int, int]]) -> list[int]:
    return [int((image == np.array(c)).all(axis=-1).sum()) for c in colours]


def test_a_small_map_has_exact_pixels_per_category(tmp_path: Path) -> None:
    # 3000 frames: 64 a row of 16 px squares; DMA [0, 1024) starts a row, the
    # second zone starts mid-row after a hole.
    zones = [
        ZoneSpan(0, "DMA", 0, 1024, 1000, 990, 34),
        ZoneSpan(0, "Normal", 1100, 1900, 1900, 1850, 1150),
    ]
    fmap = synthetic(zones)
    out = tmp_path / "map.png"
    layout = render_memory_map(fmap, out)
    assert layout == map_layout(3000, (0, 1100))
    assert (layout.frames_per_cell, layout.cells_per_row, layout.cell_px, layout.rows) == (
        1,
        64,
        16,
        47,
    )
    assert layout.gap_rows == ()  # 1100 is not a row start
    image = rgb(out)
    assert image.shape == (layout.height, layout.width, 3)
    box = image[
        layout.map_y0 : layout.map_y0 + layout.map_height,
        layout.map_x0 : layout.map_x0 + layout.map_width,
    ]
    counts = fmap.category_counts
    assert counts[Category.RESERVED] == 34 + 76 + 50
    assert colour_counts(box, [COLOURS[c] for c in Category]) == [
        counts[c] * 16 * 16 for c in Category
    ]
    # The rest of the last row is background: 47 rows of 64 cells less 3000 frames.
    assert colour_counts(box, [BACKGROUND]) == [(47 * 64 - 3000) * 16 * 16]


def test_a_zone_on_a_row_boundary_gets_a_gap_that_takes_no_frame(tmp_path: Path) -> None:
    zones = [
        ZoneSpan(0, "DMA", 0, 4096, 4000, 3900, 196),
        ZoneSpan(0, "Normal", 4096, 12288, 12000, 11800, 4584),
    ]
    fmap = synthetic(zones, seed=2)
    out = tmp_path / "map.png"
    layout = render_memory_map(fmap, out)
    assert (layout.cells_per_row, layout.cell_px, layout.rows, layout.gap_rows) == (
        128,
        8,
        128,
        (32,),
    )
    image = rgb(out)
    assert image.shape == (layout.height, layout.width, 3)
    box = image[
        layout.map_y0 : layout.map_y0 + layout.map_height,
        layout.map_x0 : layout.map_x0 + layout.map_width,
    ]
    assert box.shape[:2] == (128 * 8 + 4, 1024)
    counts = fmap.category_counts
    assert colour_counts(box, [COLOURS[c] for c in Category]) == [counts[c] * 64 for c in Category]
    gap = box[32 * 8 : 32 * 8 + 4]
    assert (gap == np.array(BACKGROUND)).all()


@pytest.mark.parametrize(
    "frames", [1, 256, 1000, 16384, 262144, EXACT_LIMIT, EXACT_LIMIT + 1, 1 << 28, 1 << 38]
)
def test_layouts_stay_bounded_and_frames_stay_whole_pixels(frames: int) -> None:
    layout = map_layout(frames)
    assert layout.width <= 4096
    assert layout.height <= 4096
    assert layout.map_width == 1024
    assert layout.rows * layout.frames_per_row >= frames
    assert (layout.rows - 1) * layout.frames_per_row < frames
    if frames <= EXACT_LIMIT:
        assert layout.exact
        assert layout.rows <= layout.cells_per_row  # about square, never taller than wide
    else:
        assert layout.cell_px == 1
        assert layout.rows <= 1024


def test_a_huge_machine_is_binned_and_its_legend_counts_stay_exact(tmp_path: Path) -> None:
    total = 1 << 28  # 1 TiB of 4 KiB pages
    zones = [
        ZoneSpan(0, "DMA", 0, 4096, 4000, 3000, 1096),
        ZoneSpan(0, "Normal", 4096, total - 4096, total - 4096, total - 8192, 8192),
    ]
    claims = [
        Claim(Source.BUDDY, [(1096, 3000), (8192 + (1 << 20), total - 8192 - (1 << 20))]),
        Claim(Source.ANON, [(8192, 1 << 20)]),
    ]
    fmap = build(Snapshot(zones, claims, 4096, "x86_64"))
    out = tmp_path / "big.png"
    layout = render_memory_map(fmap, out)
    assert layout.frames_per_cell == 256
    assert layout.rows == 1024
    image = rgb(out)
    assert image.shape == (layout.height, layout.width, 3)
    box = image[
        layout.map_y0 : layout.map_y0 + layout.map_height,
        layout.map_x0 : layout.map_x0 + layout.map_width,
    ]
    # 2^20 user frames from pfn 8192, a bin boundary: 4096 whole bins of 256.
    assert colour_counts(box, [COLOURS[Category.USER]]) == [4096]
    labels = legend_labels(fmap)
    assert labels[Category.USER].startswith("user page: 1,048,576 frames, 4 GiB")


def test_legend_lines_give_counts_and_what_they_are_made_of() -> None:
    fmap = synthetic([ZoneSpan(0, "Normal", 0, 512, 512, 500, 12)])
    free, _, _, slab, _, reserved = legend_labels(fmap)
    counts = fmap.source_counts
    assert free.startswith(f"free: {fmap.category_counts[Category.FREE]:,} frames")
    assert f"buddy {counts[Source.BUDDY]:,}" in free
    assert "pcp lists" in free
    assert "reclaimable" in slab
    assert reserved == "reserved: 12 frames, 48 KiB, 2.3%"
    assert format_size(0) == "0"
    assert format_size(1536) == "1.5 KiB"
    assert format_size(1 << 40) == "1 TiB"


def test_buddyinfo_picture_has_the_size_for_its_zones(tmp_path: Path) -> None:
    zones = [(0, "DMA"), (0, "DMA32"), (0, "Normal")]
    series = BuddySeries(zones)
    for i in range(5):
        series.add(i * 0.5, [(0, name, [i + n, n, 1, 0, 400]) for n, (_, name) in enumerate(zones)])
    out = tmp_path / "buddyinfo.png"
    size = render_buddyinfo(series, out)
    assert size == buddyinfo_size(3)
    width, height = size
    assert rgb(out).shape == (height, width, 3)
    assert series.samples[(0, "DMA32")][4] == [5, 1, 1, 0, 400]
    for zones_count in (1, 2, 6, 40):
        w, h = buddyinfo_size(zones_count)
        assert w <= 4096
        assert h <= 4096
