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
import urllib.request
from collections.abc import Sequence

from prometheus_client.parser import text_string_to_metric_families

from bench.report import Report, Result
from bench.rounds import TimedPair, add_paired, bulk_rounds, echo_call, paired_rounds, warm_up
from bench.services import running
from memsim.clients.cli.state import ServiceRecord
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
        echo = echo_call(echo_ch)
        slab = SlabClient(slab_ch)

        async def kmalloc_kfree() -> int:
            allocated = await slab.kmalloc(SIZE)
            await slab.kfree(allocated.addresses)
            return 2

        async def kmalloc_bulk() -> Sequence[int]:
            return (await slab.kmalloc(SIZE, BULK)).addresses

        async def kfree(addresses: Sequence[int]) -> None:
            await slab.kfree(addresses)

        # warm up connections and slabs
        await warm_up(echo, kmalloc_kfree, TimedPair(kmalloc_bulk, kfree))

        add_paired(
            report,
            await paired_rounds(1, echo, kmalloc_kfree),
            echo="echo calls/s, 1 in flight (slab run)",
            rate=f"slab kmalloc({SIZE})/kfree calls/s, 1 in flight",
            ratio="slab kmalloc/kfree / echo calls/s, 1 in flight",
            goal=SINGLE_GOAL,
        )

        await bulk_rounds(
            report,
            echo,
            kmalloc_bulk,
            kfree,
            calls=("slab Kmalloc", "slab Kfree"),
            items=f"{BULK} size-{SIZE} objects",
            unit="objects/s",
            goal=BULK_GOAL,
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
