"""The bootstrap every service shares, written once: server start-up (health,
reflection, metrics endpoint, RPC interceptors), graceful shutdown, structured
logs, configuration from the environment and the channel helper."""
