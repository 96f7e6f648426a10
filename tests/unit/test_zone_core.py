"""The zone service's machine model: sizes, watermarks, lowmem_reserve and pcp
sizes of the x86_32 1 GiB profile, worked out by hand from 2.6.24's formulas."""

from __future__ import annotations

from memsim.profiles.loader import load_profile
from memsim.services.zone import gfp as g
from memsim.services.zone.machine import Machine
from memsim.services.zone.watermarks import Watermarks


def test_x86_32_present_managed_and_min_free_kbytes() -> None:
    machine = Machine(load_profile("x86_32"))
    dma, normal, high = (machine.zones[(0, t)] for t in ("DMA", "Normal", "HighMem"))
    # present = spanned - spanned * sizeof(struct page) / PAGE_SIZE
    assert dma.present == 4096 - 4096 * 32 // 4096 == 4064
    assert normal.present == 225280 - 225280 * 32 // 4096 == 223520
    assert high.present == 32768 - 32768 * 32 // 4096 == 32512
    assert dma.managed < dma.present <= dma.spanned
    # int_sqrt(lowmem_kbytes * 16), lowmem = DMA + Normal present, 4 KiB pages
    assert machine.min_free_kbytes == 3816  # isqrt((4064 + 223520) * 4 * 16)


def test_x86_32_watermarks() -> None:
    machine = Machine(load_profile("x86_32"))
    marks = {t: machine.zones[(0, t)].marks for t in ("DMA", "Normal", "HighMem")}
    # pages_min = 3816 KiB >> 2 = 954; lowmem = 4064 + 223520 = 227584
    # DMA: tmp = 954 * 4064 // 227584 = 17; low = 17 + 17>>2, high = 17 + 17>>1
    assert marks["DMA"] == Watermarks(17, 21, 25)
    # Normal: tmp = 954 * 223520 // 227584 = 936; 936 + 234, 936 + 468
    assert marks["Normal"] == Watermarks(936, 1170, 1404)
    # HighMem: min = clamp(32512 // 1024 = 31, 32, 128) = 32;
    # tmp = 954 * 32512 // 227584 = 136; 32 + 34, 32 + 68
    assert marks["HighMem"] == Watermarks(32, 66, 100)


def test_x86_32_lowmem_reserve() -> None:
    machine = Machine(load_profile("x86_32"))
    assert machine.lowmem_reserve_ratio == [256, 32, 32]
    # DMA[Normal] = 223520 // 256 = 873; DMA[HighMem] = (32512 + 223520) // 256 = 1000
    assert machine.zones[(0, "DMA")].lowmem_reserve == [0, 873, 1000, 1000]
    # Normal[HighMem] = 32512 // 32 = 1016
    assert machine.zones[(0, "Normal")].lowmem_reserve == [0, 0, 1016, 1016]
    assert machine.zones[(0, "HighMem")].lowmem_reserve == [0, 0, 0, 0]


def test_x86_32_pcp_sizes() -> None:
    machine = Machine(load_profile("x86_32"))
    sizes = {}
    for t in ("DMA", "Normal", "HighMem"):
        zone = machine.zones[(0, t)]
        assert len(zone.pcp) == 2  # one (hot, cold) pair per CPU
        hot, cold = zone.pcp[1]
        sizes[t] = (hot.high, hot.batch, cold.high, cold.batch)
    # DMA: 4064 // 1024 = 3, // 4 = 0 -> 1; (1 << (fls(1) - 1)) - 1 = 0
    # hot: high 6 * 0, batch max(1, 0); cold: 2 * 0, max(1, 0)
    assert sizes["DMA"] == (0, 1, 0, 1)
    # Normal: 223520 // 1024 = 218 pages = 872 KiB > 512 KiB -> 128; // 4 = 32;
    # (1 << (fls(48) - 1)) - 1 = 31; hot 186/31, cold 62/15
    assert sizes["Normal"] == (186, 31, 62, 15)
    # HighMem: 32512 // 1024 = 31; // 4 = 7; (1 << (fls(10) - 1)) - 1 = 7
    assert sizes["HighMem"] == (42, 7, 14, 3)


def test_changing_min_free_kbytes_changes_marks() -> None:
    machine = Machine(load_profile("x86_32"))
    machine.min_free_kbytes = 7632
    machine.setup_watermarks()
    # pages_min = 7632 >> 2 = 1908
    # DMA: tmp = 1908 * 4064 // 227584 = 34 -> 34, 34 + 8, 34 + 17
    assert machine.zones[(0, "DMA")].marks == Watermarks(34, 42, 51)
    # Normal: tmp = 1908 * 223520 // 227584 = 1873 -> 1873, +468, +936
    assert machine.zones[(0, "Normal")].marks == Watermarks(1873, 2341, 2809)
    # HighMem: min stays 32; tmp = 1908 * 32512 // 227584 = 272 -> +68, +136
    assert machine.zones[(0, "HighMem")].marks == Watermarks(32, 100, 168)
    # lowmem_reserve depends on present pages and ratios only
    assert machine.zones[(0, "DMA")].lowmem_reserve == [0, 873, 1000, 1000]
    machine.lowmem_reserve_ratio = [128, 32, 32]
    machine.setup_watermarks()
    # 223520 // 128 = 1746; 256032 // 128 = 2000
    assert machine.zones[(0, "DMA")].lowmem_reserve == [0, 1746, 2000, 2000]


def test_x86_32_zonelists() -> None:
    machine = Machine(load_profile("x86_32"))
    names = {
        flags: [z.name for z in machine.zonelist(0, g.gfp_zone(flags, machine.zone_types))]
        for flags in (g.GFP_KERNEL, g.GFP_HIGHUSER_MOVABLE, g.GFP_DMA, g.GFP_HIGHUSER)
    }
    assert names[g.GFP_KERNEL] == ["Normal", "DMA"]
    # __GFP_HIGHMEM|__GFP_MOVABLE names ZONE_MOVABLE, which is empty here
    assert names[g.GFP_HIGHUSER_MOVABLE] == ["HighMem", "Normal", "DMA"]
    assert names[g.GFP_HIGHUSER] == ["HighMem", "Normal", "DMA"]
    assert names[g.GFP_DMA] == ["DMA"]


def test_nommu_machine() -> None:
    machine = Machine(load_profile("nommu"))
    (zone,) = machine.zones.values()
    # 2048 - 2048 * 32 / 4096 = 2032 present; less 1 MiB of kernel = 256 pages
    assert (zone.present, zone.managed) == (2032, 1776)
    # isqrt(2032 * 4 * 16) = 360 KiB -> 90 pages; 90 + 22, 90 + 45
    assert zone.marks == Watermarks(90, 112, 135)


def test_numa_zonelists_start_on_the_local_node() -> None:
    machine = Machine(load_profile("numa"))
    assert machine.zonelist_order == "node"
    normal = g.gfp_zone(g.GFP_KERNEL, machine.zone_types)
    assert [z.key for z in machine.zonelist(0, normal)] == [(0, "DMA32"), (0, "DMA"), (1, "Normal")]
    assert [z.key for z in machine.zonelist(1, normal)] == [(1, "Normal"), (0, "DMA32"), (0, "DMA")]
    assert [z.key for z in machine.zonelist(1, normal, this_node_only=True)] == [(1, "Normal")]


def test_gfp_parse_and_format() -> None:
    assert g.parse_gfp("GFP_KERNEL|__GFP_NOWARN") == 0xD0 | 0x200
    assert g.parse_gfp("0x20") == g.GFP_ATOMIC
    assert g.format_gfp(g.GFP_KERNEL | g.NOWARN) == "GFP_KERNEL|__GFP_NOWARN"
