"""The /metrics endpoint, served on the service's own event loop.

Serving it from the loop (not prometheus_client's thread) means collectors
read the core between two RPCs, never in the middle of one.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from memsim.runtime.config import parse_address


class MetricsEndpoint:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/", self._index)
        self._runner = web.AppRunner(app, access_log=None)
        self.address = ""

    async def _metrics(self, request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encoder(self._registry), headers={"Content-Type": content_type})

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(text="memsim metrics: see /metrics\n")

    async def start(self, listen: str) -> str:
        host, port = parse_address(listen, "metrics address")
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        await site.start()
        bound_host, bound_port = self._runner.addresses[0][:2]
        self.address = f"{bound_host}:{bound_port}"
        return self.address

    async def stop(self) -> None:
        await self._runner.cleanup()
