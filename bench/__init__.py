"""make bench: benchmarks that report ratios measured within one run."""
