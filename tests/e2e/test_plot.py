"""memsim plot: pictures of a real run, their sizes, and colours that match
the frame counts the services report through their ordinary calls."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from matplotlib.image import imread

from memsim.clients.process.process import Process
from memsim.plots.buddyinfo import buddyinfo_size
from memsim.plots.frames import Category
from memsim.plots.memory_map import COLOURS, map_layout
from memsim.runtime.channel import open_channel
from memsim.services.buddy.client import BuddyClient
from memsim.services.mmu.client import MmuClient
from memsim.services.slab.client import SlabClient
from memsim.services.zone.client import ZoneClient
from tests.e2e.harness import Cli

pytestmark = pytest.mark.e2e
MIB = 1 << 20


async def run_workload(mmu_address: str) -> None:
    """Two processes map and touch memory; one of them exits."""
    async with open_channel(mmu_address) as channel:
        keeper = await Process.spawn(channel, "keeper")
        leaver = await Process.spawn(channel, "leaver")
        for proc, size in ((keeper, 6 * MIB), (leaver, 3 * MIB)):
            addr = await proc.mmap(size)
            await proc.touch(addr, size)
        await leaver.exit()


def frame_cache_pages(metrics_address: str) -> int:
    """memsim_mmu_frame_cache_pages summed over its labels, from /metrics."""
    with urllib.request.urlopen(f"http://{metrics_address}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith("memsim_mmu_frame_cache_pages{")
    )


async def reported_counts(
    addresses: dict[str, str], mmu_metrics: str
) -> tuple[int, tuple[int, ...], dict[Category, int]]:
    """(frames, zone starts, frames per category) from the services' ordinary
    calls: ListArenas, GetZoneInfo, GetStats, GetSlabInfo, GetVmallocInfo."""
    async with (
        open_channel(addresses["buddy"]) as b,
        open_channel(addresses["zone"]) as z,
        open_channel(addresses["mmu"]) as m,
        open_channel(addresses["slab"]) as s,
    ):
        arenas = await BuddyClient(b).list_arenas()
        info = await ZoneClient(z).zoneinfo()
        stats = await MmuClient(m).stats()
        slab = await SlabClient(s).slabinfo()
        vmalloc = await SlabClient(s).vmallocinfo()
    zones = [zone for node in info.nodes for zone in node.zones]
    total = max(zone.start_pfn + zone.spanned_pages for zone in zones)
    pcp = sum(p.count for zone in zones for p in zone.pagesets)
    free = sum(a.free_pages for a in arenas) + pcp + frame_cache_pages(mmu_metrics)
    counts = {
        Category.FREE: free,
        Category.USER: stats.active_pages + stats.inactive_pages,
        Category.PAGE_TABLE: stats.page_table_pages,
        Category.SLAB: slab.reclaimable_pages + slab.unreclaimable_pages,
        Category.VMALLOC: sum(area.pages for area in vmalloc.areas),
        Category.RESERVED: total - sum(zone.managed_pages for zone in zones),
    }
    return total, tuple(zone.start_pfn for zone in zones), counts


def pixels(path: Path) -> npt.NDArray[np.int64]:
    image: npt.NDArray[np.float32] = imread(path)
    return np.rint(image[..., :3] * 255).astype(np.int64)


def test_memory_map_and_buddyinfo_of_a_real_run(cli: Cli, tmp_path: Path) -> None:
    up = cli.run("up", "-d", "--ephemeral-ports", "--mem", "64M")
    assert up.returncode == 0, up.stderr
    try:
        addresses = cli.addresses()
        state = json.loads((cli.run_dir / "machine.json").read_text())
        mmu_metrics = state["services"]["mmu"]["metrics_address"]
        asyncio.run(run_workload(addresses["mmu"]))

        out = tmp_path / "out.png"
        # The slab's cache_reap runs every 2 s: draw again if the machine
        # changed between the picture and the counts.
        for _ in range(5):
            before = asyncio.run(reported_counts(addresses, mmu_metrics))
            plotted = cli.run("plot", "memory-map", str(out))
            assert plotted.returncode == 0, plotted.stderr
            after = asyncio.run(reported_counts(addresses, mmu_metrics))
            if before == after:
                break
        total, zone_starts, counts = after
        assert total == 64 * MIB // 4096
        assert sum(counts.values()) == total
        assert counts[Category.USER] == 6 * MIB // 4096  # the keeper's pages
        assert counts[Category.PAGE_TABLE] > 0
        assert counts[Category.SLAB] > 0

        layout = map_layout(total, zone_starts)
        image = pixels(out)
        assert image.shape[:2] == (layout.height, layout.width)
        assert "1244x1290 px" in plotted.stdout
        box = image[
            layout.map_y0 : layout.map_y0 + layout.map_height,
            layout.map_x0 : layout.map_x0 + layout.map_width,
        ]
        seen = {
            category: int((box == np.array(COLOURS[category])).all(axis=-1).sum())
            for category in Category
        }
        square = layout.cell_px**2
        assert seen == {category: count * square for category, count in counts.items()}

        out2 = tmp_path / "out2.png"
        sampled = cli.run("plot", "buddyinfo", str(out2), "--duration", "2s", "--interval", "0.5s")
        assert sampled.returncode == 0, sampled.stderr
        assert "5 samples" in sampled.stdout
        width, height = buddyinfo_size(2)  # DMA and Normal
        assert pixels(out2).shape[:2] == (height, width)
    finally:
        assert cli.run("down").returncode == 0


def test_plot_errors_are_plain_messages(cli: Cli, tmp_path: Path) -> None:
    nothing = cli.run("plot", "memory-map", str(tmp_path / "x.png"))
    assert nothing.returncode == 1
    assert "no machine is running" in nothing.stderr
    for args, message in (
        (("--duration", "soon"), "not a duration"),
        (("--duration", "1s", "--interval", "2s"), "shorter than --interval"),
        (("--interval", "1ms"), "shorter than 10ms"),
        (("--duration", "2h"), "longer than 1 hour"),
    ):
        refused = cli.run("plot", "buddyinfo", str(tmp_path / "x.png"), *args)
        assert refused.returncode == 1, args
        assert message in refused.stderr, (args, refused.stderr)
    missing_dir = cli.run("plot", "memory-map", str(tmp_path / "no" / "such" / "x.png"))
    assert missing_dir.returncode == 1
    assert "is not a directory" in missing_dir.stderr
    assert not (tmp_path / "x.png").exists()
