"""python -m memsim.dashboards DIR: write the dashboards' JSON into DIR."""

from __future__ import annotations

import sys
from pathlib import Path

from memsim.dashboards import write


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: python -m memsim.dashboards DIR", file=sys.stderr)
        return 2
    for path in write(Path(argv[0])):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
