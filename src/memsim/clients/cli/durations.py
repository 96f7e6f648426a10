"""Durations on the command line: "500ms", "10s", "2m", "1h" or plain
seconds, as every command that takes one reads them."""

from __future__ import annotations

from collections.abc import Mapping

UNITS: Mapping[str, float] = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_seconds(text: str, example: str, units: Mapping[str, float] = UNITS) -> float:
    """The seconds text names; ValueError (showing `example`) if it names none.
    Bounds are the caller's."""
    number, scale = text, 1.0
    for suffix in sorted(units, key=len, reverse=True):  # "ms" before "s"
        if text.endswith(suffix):
            number, scale = text[: -len(suffix)], units[suffix]
            break
    try:
        return float(number) * scale
    except ValueError:
        raise ValueError(f"{text!r} is not a duration such as {example}") from None
