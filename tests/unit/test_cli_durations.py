"""Durations as the memsim commands read them, and each command's bounds."""

from __future__ import annotations

import pytest

from memsim.clients.cli import load, main, plot
from memsim.clients.cli.durations import duration_seconds


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("10s", 10.0), ("2m", 120.0), ("1h", 3600.0), ("0.25", 0.25)],
)
def test_units_and_plain_seconds(text: str, seconds: float) -> None:
    assert duration_seconds(text, "1s") == pytest.approx(seconds)


def test_a_text_that_names_no_duration_says_what_would() -> None:
    with pytest.raises(ValueError, match="'soon' is not a duration such as 1s or 500ms"):
        duration_seconds("soon", "1s or 500ms")


def test_each_command_keeps_its_own_bounds() -> None:
    assert plot.parse_duration(" 2s ") == 2.0
    assert load.parse_duration("1h") == 3600.0
    with pytest.raises(ValueError, match="shorter than 10ms"):
        plot.parse_duration("1ms")
    with pytest.raises(ValueError, match="must be more than 0"):
        load.parse_duration("0s")
    with pytest.raises(ValueError, match="shorter than 10ms"):
        main.parse_interval("5ms")
    # An export's period has no hours.
    with pytest.raises(ValueError, match="'1h' is not a duration such as 1s or 500ms"):
        main.parse_interval("1h")
