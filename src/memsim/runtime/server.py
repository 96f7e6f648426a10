"""Starting and stopping a memsim service: the same for every one of them.

start_server() is what tests call (port 0 on loopback); run_service() is a
service's main: configuration from the environment, logs, signals.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

# grpc-stubs' grpc_health stubs predate the aio servicer.
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.registry import Collector

from memsim.runtime.config import ServerConfig
from memsim.runtime.interceptors import ObservingInterceptor, RpcLog, RpcMetrics
from memsim.runtime.logs import configure_logging, get_logger
from memsim.runtime.metrics_http import MetricsEndpoint
from memsim.runtime.panic import PanicGate

SERVING = health_pb2.HealthCheckResponse.SERVING


@dataclass
class Service:
    """What a service hands the bootstrap: its gRPC services and its collectors."""

    name: str
    # Full proto names ("memsim.buddy.v1.BuddyAllocator"), for health and reflection.
    service_names: Sequence[str]
    add_to_server: Callable[[grpc.aio.Server], None]
    collectors: Sequence[Collector] = field(default_factory=tuple)
    # Run on the server's loop: on_start after binding (given the bound
    # address) and before SERVING, on_stop after the last call on shutdown.
    on_start: Callable[[str], Awaitable[None]] | None = None
    on_stop: Callable[[], Awaitable[None]] | None = None
    # Closed by a kernel panic: mutating calls are refused until a reboot.
    gate: PanicGate = field(default_factory=PanicGate)


@dataclass
class RunningServer:
    service: Service
    server: grpc.aio.Server
    health: health_aio.HealthServicer
    registry: CollectorRegistry
    address: str
    metrics: MetricsEndpoint | None

    @property
    def metrics_address(self) -> str | None:
        return self.metrics.address if self.metrics else None

    async def stop(self, grace_s: float | None = 5.0) -> None:
        """Health turns NOT_SERVING first, then in-flight calls get grace_s to end."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)
        if self.service.on_stop:
            await self.service.on_stop()
        if self.metrics:
            await self.metrics.stop()


async def start_server(
    service: Service,
    listen: str = "127.0.0.1:0",
    metrics_listen: str | None = "127.0.0.1:0",
    registry: CollectorRegistry | None = None,
) -> RunningServer:
    registry = registry or CollectorRegistry()
    for collector in service.collectors:
        registry.register(collector)
    ProcessCollector(registry=registry)
    interceptor = ObservingInterceptor([RpcMetrics(registry), RpcLog(service.name)], service.gate)
    server = grpc.aio.server(interceptors=[interceptor])
    service.add_to_server(server)
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*service.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    port = server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"{service.name}: cannot bind gRPC to {listen}")
    host = listen.rpartition(":")[0]
    await server.start()
    if service.on_start:
        await service.on_start(f"{host}:{port}")
    for name in ("", *service.service_names):
        await health_servicer.set(name, SERVING)
    endpoint = None
    if metrics_listen is not None:
        endpoint = MetricsEndpoint(registry)
        await endpoint.start(metrics_listen)
    return RunningServer(service, server, health_servicer, registry, f"{host}:{port}", endpoint)


def _write_ready_file(path: str, running: RunningServer) -> None:
    """Tells whoever started us (memsim up) where we listen: written atomically."""
    target = Path(path)
    tmp = target.with_suffix(target.suffix + ".tmp")
    tmp.write_text(
        json.dumps(
            {
                "service": running.service.name,
                "pid": os.getpid(),
                "address": running.address,
                "metrics_address": running.metrics_address,
            }
        )
    )
    tmp.replace(target)


async def serve(service: Service, config: ServerConfig) -> None:
    log = get_logger(f"memsim.{service.name}")
    running = await start_server(service, config.listen, config.metrics_listen)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if config.ready_file:
        _write_ready_file(config.ready_file, running)
    log.info("serving", address=running.address, metrics=running.metrics_address)
    await stop.wait()
    log.info("stopping", grace_s=config.grace_s)
    await running.stop(config.grace_s)
    log.info("stopped")


def run_service(name: str, build: Callable[[], Service]) -> None:
    """A service process's main: read the environment, log, serve until signalled."""
    config = ServerConfig.from_env(name)
    configure_logging(config.log_level, config.log_format)
    asyncio.run(serve(build(), config))
