"""Machine profiles, sizes, service configuration and /proc/buddyinfo's format."""

from __future__ import annotations

import pytest

from memsim.procfs.buddyinfo import format_buddyinfo
from memsim.profiles.loader import ProfileError, ZoneSpan, available_profiles, load_profile
from memsim.profiles.sizes import format_size, parse_size
from memsim.runtime.config import ConfigError, ServerConfig, peer_address


def test_sizes() -> None:
    assert parse_size("4K") == 4096
    assert parse_size("16m") == 16 << 20
    assert parse_size("1TiB") == 1 << 40
    assert parse_size("4096") == 4096
    assert format_size(1 << 30) == "1G"
    assert format_size(896 << 20) == "896M"
    assert format_size(1000) == "1000"
    with pytest.raises(ValueError, match=r"'1\.5G' is not a size"):
        parse_size("1.5G")


def test_default_profile_is_a_1g_x86_32_pc() -> None:
    profile = load_profile()
    assert "x86_32" in available_profiles()
    assert (profile.mem_bytes, profile.page_size, profile.max_order) == (1 << 30, 4096, 11)
    assert profile.zones == (
        ZoneSpan(0, "DMA", 0, 4096),  # 0-16 MiB
        ZoneSpan(0, "Normal", 4096, 225280),  # 16-896 MiB
        ZoneSpan(0, "HighMem", 229376, 32768),  # 896 MiB-1 GiB
    )


def test_options_override_the_profile() -> None:
    small = load_profile(mem="64M", page_size="16K", max_order=9)
    # 64 MiB of 16 KiB pages: DMA 0-16 MiB = 1024 pages, Normal the rest; no HighMem.
    assert small.zones == (ZoneSpan(0, "DMA", 0, 1024), ZoneSpan(0, "Normal", 1024, 3072))
    assert small.max_order == 9
    big = load_profile(mem="1T")
    assert big.zones[-1] == ZoneSpan(0, "HighMem", 229376, (1 << 28) - 229376)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mem": "512K"}, "memory size 512K is outside 1M"),
        ({"mem": "2P"}, "outside"),
        ({"page_size": "32K"}, "page size 32K is not one of 4K, 8K, 16K, 64K"),
        ({"max_order": 0}, "MAX_ORDER 0 is outside 1..20"),
        ({"mem": "big"}, "memory size: 'big' is not a size"),
    ],
)
def test_bad_options_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        load_profile(**kwargs)  # type: ignore[arg-type]


def test_unknown_profile_names_the_known_ones() -> None:
    with pytest.raises(ProfileError, match=r"no profile 'vax' \(profiles: .*x86_32"):
        load_profile("vax")


def test_buddyinfo_is_the_kernels_format() -> None:
    text = format_buddyinfo([(0, "DMA", [1, 0, 12]), (1, "HighMem", [123456, 7, 0])])
    assert text == (
        "Node 0, zone      DMA      1      0     12 \nNode 1, zone  HighMem 123456      7      0 \n"
    )


def test_server_config_from_the_environment() -> None:
    default = ServerConfig.from_env("buddy", env={})
    assert (default.listen, default.metrics_listen) == ("127.0.0.1:50053", "127.0.0.1:9153")
    custom = ServerConfig.from_env(
        "buddy",
        env={
            "MEMSIM_BUDDY_LISTEN": "0.0.0.0:7000",
            "MEMSIM_BUDDY_METRICS_LISTEN": "off",
            "MEMSIM_LOG_LEVEL": "debug",
            "MEMSIM_READY_FILE": "/tmp/r.json",
        },
    )
    assert (custom.listen, custom.metrics_listen, custom.log_level, custom.ready_file) == (
        "0.0.0.0:7000",
        None,
        "DEBUG",
        "/tmp/r.json",
    )
    assert peer_address("buddy", env={"MEMSIM_BUDDY_ADDR": "10.0.0.1:1"}) == "10.0.0.1:1"
    with pytest.raises(ConfigError, match="MEMSIM_BUDDY_LISTEN='nowhere' is not host:port"):
        ServerConfig.from_env("buddy", env={"MEMSIM_BUDDY_LISTEN": "nowhere"})
    with pytest.raises(ConfigError, match="MEMSIM_LOG_FORMAT='xml'"):
        ServerConfig.from_env("buddy", env={"MEMSIM_LOG_FORMAT": "xml"})


def test_negative_indices_print_as_the_kernels_printf_does() -> None:
    from memsim.procfs.extfrag import format_milli

    # "%d.%03d" of (index / 1000, index % 1000) in C: both parts truncate to zero.
    assert format_milli(-1000) == "-1.000"
    assert format_milli(-500) == "0.-500"
    assert format_milli(-1) == "0.-01"
    assert format_milli(1500) == "1.500"
