"""The slab service over gRPC against an echo service on the same bootstrap.

Echo, buddy, zone and slab run as their own processes, started by this
benchmark. A kmalloc of a small object is served from a partial slab of its
size-N cache, and the kfree after it leaves the slab on the free list, so the
ratios say what the slab's own work costs on top of a gRPC call that does
nothing.

The zone's share is counted, not timed: its AllocPages calls, read from its
own Prometheus endpoint before and after 10,000 objects are allocated (and
held until the count is read) from a cache with no slabs. The slab asks for
one block per new slab at most, so the goal is the slabs 10,000 objects fill:
10,000 / objects_per_slab of the size-N cache, rounded up, since the last slab
is a whole call however little of it is used.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from bench.buddy_grpc import ROUNDS, _calls_per_second
from bench.report import Report, Result
from bench.services import running
from memsim.clients.cli.state import ServiceRecord
from memsim.echo.v1 import echo_pb2, echo_pb2_grpc
from memsim.profiles.loader import load_profile
from memsim.runtime.channel import open_channel
from memsim.services.slab.client import SlabClient

PROFILE = "x86_64"
MEM = "4G"  # pages never run out: no reclaim, and no swap (MEMSIM_SWAP=0)
SIZE = 32  # bytes per object: size-32
BULK = 256
BULK_GOAL = 100
SINGLE_GOAL = 0.8
OBJECTS = 10_000  # allocated, and held, while the zone's calls are counted


def _zone_alloc_calls(metrics_address: str | None) -> float:
    """grpc_server_started_total of the zone's AllocPages, from its /metrics."""
    assert metrics_address is not None, "the zone serves no metrics"
    with urllib.request.urlopen(f"http://{metrics_address}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "grpc_server_started_total"
        and sample.labels.get("grpc_method") == "AllocPages"
    )


async def _measure(report: Report, echo_addr: str, slab_addr: str, zone: ServiceRecord) -> None:
    async with open_channel(echo_addr) as echo_ch, open_channel(slab_addr) as slab_ch:
        echo = echo_pb2_grpc.EchoStub(echo_ch)
        slab = SlabClient(slab_ch)
        request = echo_pb2.EchoRequest(payload=b"x" * 16)

        async def echo_call() -> int:
            await echo.Echo(request)
            return 1

        async def kmalloc_kfree() -> int:
            allocated = await slab.kmalloc(SIZE)
            await slab.kfree(allocated.addresses)
            return 2

        objects = 0
        alloc_s = free_s = 0.0

        async def bulk() -> int:
            """Kmalloc of BULK objects then Kfree of them, each call timed alone."""
            nonlocal alloc_s, free_s, objects
            start = time.perf_counter()
            allocated = await slab.kmalloc(SIZE, BULK)
            middle = time.perf_counter()
            await slab.kfree(allocated.addresses)
            objects += len(allocated.addresses)
            alloc_s += middle - start
            free_s += time.perf_counter() - middle
            return 2

        for fn in (echo_call, kmalloc_kfree, bulk):  # warm up connections and slabs
            await _calls_per_second(1, fn)

        echo_rates, slab_rates, ratios = [], [], []
        for _ in range(ROUNDS):
            echo_rates.append(await _calls_per_second(1, echo_call))
            slab_rates.append(await _calls_per_second(1, kmalloc_kfree))
            ratios.append(slab_rates[-1] / echo_rates[-1])
        ratio = statistics.median(ratios)
        report.add(
            Result("echo calls/s, 1 in flight (slab run)", statistics.median(echo_rates), "calls/s")
        )
        report.add(
            Result(
                f"slab kmalloc({SIZE})/kfree calls/s, 1 in flight",
                statistics.median(slab_rates),
                "calls/s",
            )
        )
        report.add(
            Result(
                "slab kmalloc/kfree / echo calls/s, 1 in flight",
                ratio,
                "ratio",
                f">= {SINGLE_GOAL}",
                ratio >= SINGLE_GOAL,
            )
        )

        ratios_by_call: dict[str, list[float]] = {"Kmalloc": [], "Kfree": []}
        rates_by_call: dict[str, list[float]] = {"Kmalloc": [], "Kfree": []}
        for _ in range(ROUNDS):
            echo_rate = await _calls_per_second(1, echo_call)
            alloc_s = free_s = 0.0
            objects = 0
            await _calls_per_second(1, bulk)
            for what, seconds in (("Kmalloc", alloc_s), ("Kfree", free_s)):
                rates_by_call[what].append(objects / seconds)
                ratios_by_call[what].append(objects / seconds / echo_rate)
        for what, ratios in ratios_by_call.items():
            ratio = statistics.median(ratios)
            report.add(
                Result(
                    f"slab {what} of {BULK} size-{SIZE} objects, objects/s",
                    statistics.median(rates_by_call[what]),
                    "objects/s",
                )
            )
            report.add(
                Result(
                    f"slab {what} objects/s / echo calls/s",
                    ratio,
                    "ratio",
                    f">= {BULK_GOAL}",
                    ratio >= BULK_GOAL,
                )
            )

        cache = next(c for c in (await slab.slabinfo()).caches if c.name == f"size-{SIZE}")
        goal = math.ceil(OBJECTS / cache.objects_per_slab)
        for name, batch in (("in batches of 256", BULK), ("one per call", 1)):
            await slab.shrink_cache(cache.name)  # no slabs: every object needs a new one
            before = await asyncio.to_thread(_zone_alloc_calls, zone.metrics_address)
            held: list[int] = []
            while len(held) < OBJECTS:
                count = min(batch, OBJECTS - len(held))
                held += (await slab.kmalloc(SIZE, count)).addresses
            calls = await asyncio.to_thread(_zone_alloc_calls, zone.metrics_address) - before
            for start in range(0, len(held), BULK):
                await slab.kfree(held[start : start + BULK])
            report.add(
                Result(
                    f"zone AllocPages calls per {OBJECTS} size-{SIZE} objects, {name}",
                    calls,
                    "calls",
                    f"<= {goal}",
                    calls <= goal,
                    detail=f"{cache.objects_per_slab} objects per slab",
                )
            )


def run(report: Report) -> None:
    print(f"slab over gRPC (own processes, {PROFILE} {MEM}, against echo)")
    profile = load_profile(PROFILE, mem=MEM)
    with running(profile, "echo", "buddy", "zone", "slab") as services:
        asyncio.run(
            _measure(report, services["echo"].address, services["slab"].address, services["zone"])
        )
