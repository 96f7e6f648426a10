"""One package per service: core (pure domain), server (gRPC edge), metrics,
config, client (typed wrapper other services and the CLI use)."""
