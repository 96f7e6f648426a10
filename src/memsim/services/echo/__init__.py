"""The echo service: the benchmarks' ceiling, on the same bootstrap as the rest."""
