"""python -m bench (make bench): every benchmark, one table, results/ as JSON."""

from __future__ import annotations

import sys

from bench import (
    buddy_core,
    buddy_grpc,
    load_footprint,
    load_grpc,
    mmu_core,
    mmu_grpc,
    policy_core,
    policy_grpc,
    slab_grpc,
    zone_core,
    zone_grpc,
)
from bench.report import NAME_WIDTH, Report


def main() -> int:
    report = Report()
    print(f"  {'benchmark':{NAME_WIDTH}} {'value':>14} {'unit':10} {'goal':10} met")
    buddy_core.run(report)
    buddy_grpc.run(report)
    zone_core.run(report)
    zone_grpc.run(report)
    slab_grpc.run(report)
    mmu_core.run(report)
    mmu_grpc.run(report)
    policy_core.run(report)
    policy_grpc.run(report)
    load_grpc.run(report)
    load_footprint.run(report)
    path = report.write("bench")
    print(f"results: {path} and {path.with_suffix('.md')}")
    return 0 if report.all_passed else 1


if __name__ == "__main__":
    sys.exit(main())
