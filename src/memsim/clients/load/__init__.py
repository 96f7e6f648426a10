"""`memsim load`: seeded, replayable workloads of simulated processes against
a running machine (see schema.py for the workload and mix files)."""
