"""Configuration read from the environment, with defaults that run.

MEMSIM_<SERVICE>_LISTEN          where a service serves gRPC (host:port)
MEMSIM_<SERVICE>_METRICS_LISTEN  where it serves /metrics ("off" disables)
MEMSIM_<SERVICE>_ADDR            where its clients reach it
MEMSIM_LOG_LEVEL, MEMSIM_LOG_FORMAT (json | console), MEMSIM_READY_FILE
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

# gRPC and metrics ports of each service when nothing else is said.
DEFAULT_PORTS: dict[str, tuple[int, int]] = {
    "mmu": (50051, 9151),
    "zone": (50052, 9152),
    "buddy": (50053, 9153),
    "slab": (50054, 9154),
    "policy": (50055, 9155),
    "echo": (50059, 9159),
}
LOOPBACK = "127.0.0.1"


class ConfigError(ValueError):
    """An environment variable holds a value that cannot be used."""


def parse_address(value: str, variable: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"{variable}={value!r} is not host:port")
    return host.strip("[]"), int(port)


def _var(service: str, suffix: str) -> str:
    return f"MEMSIM_{service.upper()}_{suffix}"


@dataclass(frozen=True)
class ServerConfig:
    service: str
    listen: str
    # None: no metrics endpoint.
    metrics_listen: str | None
    log_level: str = "INFO"
    log_format: str = "json"
    ready_file: str | None = None
    # Seconds in-flight calls get to finish after SIGTERM.
    grace_s: float = 5.0

    @classmethod
    def from_env(cls, service: str, env: Mapping[str, str] | None = None) -> ServerConfig:
        env = os.environ if env is None else env
        grpc_port, metrics_port = DEFAULT_PORTS.get(service, (0, 0))
        listen = env.get(_var(service, "LISTEN"), f"{LOOPBACK}:{grpc_port}")
        parse_address(listen, _var(service, "LISTEN"))
        metrics_value = env.get(_var(service, "METRICS_LISTEN"), f"{LOOPBACK}:{metrics_port}")
        metrics: str | None = None
        if metrics_value != "off":
            parse_address(metrics_value, _var(service, "METRICS_LISTEN"))
            metrics = metrics_value
        log_format = env.get("MEMSIM_LOG_FORMAT", "json")
        if log_format not in ("json", "console"):
            raise ConfigError(f"MEMSIM_LOG_FORMAT={log_format!r} is not json or console")
        return cls(
            service=service,
            listen=listen,
            metrics_listen=metrics,
            log_level=env.get("MEMSIM_LOG_LEVEL", "INFO").upper(),
            log_format=log_format,
            ready_file=env.get("MEMSIM_READY_FILE") or None,
        )


def peer_address(service: str, env: Mapping[str, str] | None = None) -> str:
    """Where to reach another service: MEMSIM_<SERVICE>_ADDR or its default port."""
    env = os.environ if env is None else env
    address = env.get(_var(service, "ADDR"), f"{LOOPBACK}:{DEFAULT_PORTS[service][0]}")
    parse_address(address, _var(service, "ADDR"))
    return address
