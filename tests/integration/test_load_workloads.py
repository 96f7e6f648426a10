"""Each workload for a few dozen calls against a machine in process (policy,
zone over an in-process buddy, slab, MMU), and a record/replay round."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from memsim.clients.load.machine import MachineBackend, MachineInfo, machine_info
from memsim.clients.load.runner import LoadConfig, Recorder, Trace, replay, run_load
from memsim.clients.load.schema import Burst, Mix, MixEntry, load_mix
from memsim.clients.load.stats import Stats
from memsim.mmu.v1 import mmu_pb2 as mmu_pb
from memsim.profiles.loader import load_profile
from memsim.services.buddy.local import LocalBuddy
from memsim.services.policy.config import PolicyConfig
from memsim.services.slab.client import SlabClient
from memsim.services.zone.client import ZoneClient
from tests.integration.conftest import UNREACHABLE, running_servers
from tests.integration.policy_fixtures import ADMIN, PolicyHarness, running_policy

if TYPE_CHECKING:
    from memsim.mmu.v1.mmu_pb2_grpc import MmuAsyncStub


@dataclass
class Machine:
    backend: MachineBackend
    info: MachineInfo
    zone: ZoneClient
    slab: SlabClient
    policy: PolicyHarness
    mmu: MmuAsyncStub
    buddy: LocalBuddy

    async def buddyinfo(self) -> list[list[int]]:
        """nr_free of every zone once the per-CPU lists are drained."""
        await self.zone.drain()
        info = await self.zone.zoneinfo()
        return [
            await self.buddy.nr_free(z.ref.node, z.ref.zone) for n in info.nodes for z in n.zones
        ]


@contextlib.asynccontextmanager
async def machine(
    data_dir: Path, mem: str = "64M", *, background: bool = True
) -> AsyncIterator[Machine]:
    """background=False: no thread of the machine's own (cache_reap on a
    timer, kswapd when it happens to run) moves pages between the calls, for
    runs compared call by call."""
    profile = load_profile("x86_32", mem=mem)
    buddy = LocalBuddy()
    async with (
        running_policy(PolicyConfig(profile, UNREACHABLE, ADMIN)) as policy,
        running_servers(
            profile,
            data_dir,
            buddy=buddy,
            policy_address=policy.running.address,
            slab=True,
            slab_reap_s=2.0 if background else 0,
            kswapd=background,
            deadline_s=30,
        ) as servers,
    ):
        stub = servers.mmu_stub
        info = await machine_info(stub, "x86_32")
        slab_client = servers.slab
        yield Machine(
            MachineBackend(stub, slab_client, info.page_size),
            info,
            servers.zone,
            slab_client,
            policy,
            stub,
            buddy,
        )


async def processes(m: Machine) -> int:
    listed = await m.mmu.ListProcesses(mmu_pb.ListProcessesRequest())
    return sum(1 for p in listed.processes if p.pid != 1)


@pytest.mark.parametrize(
    "workload",
    ["steady", "leak", "fork_server", "hog", "kernel_churn", "fragmenter", "shm_db", "bursty"],
)
async def test_each_workload_runs_without_unexpected_errors(tmp_path: Path, workload: str) -> None:
    async with machine(tmp_path) as m:
        before = await processes(m)
        stats = Stats()
        mix = load_mix(workload)
        if workload == "bursty":  # a shorter idle, to keep the test short
            entry = mix.entries[0]
            mix = Mix(mix.name, (MixEntry(replace(entry.workload, burst=Burst(0.05, 5)), 1),))
        config = LoadConfig(processes=2, seed=4, ops=40, cleanup=True)
        session = await asyncio.wait_for(run_load(mix, config, m.backend, m.info, stats), 60)
        assert session.stopped_by == "ops"
        assert stats.unexpected == 0, stats.summary()
        assert stats.outcomes["ok"] >= 30, stats.summary()
        # The clean-up exited every process the load started.
        assert await processes(m) == before


async def test_the_fragmenter_takes_high_order_slabs(tmp_path: Path) -> None:
    async with machine(tmp_path) as m:
        stats = Stats()
        config = LoadConfig(processes=1, seed=2, ops=200, cleanup=False)
        await run_load(load_mix("fragmenter"), config, m.backend, m.info, stats)
        assert stats.ops["munmap"].calls == 128  # every other page of 1 MiB
        caches = {c.name: c for c in (await m.slab.slabinfo()).caches}
        held = [n for n in ("size-32768", "size-65536", "size-131072") if caches[n].active_objects]
        assert held, "no high-order kmalloc object is held"


async def test_a_leak_is_killed_replaced_and_a_replay_ends_in_the_same_state(
    tmp_path: Path,
) -> None:
    """16 MiB, no swap, overcommit 1: the leak grows until the OOM killer ends
    it and starts again; replaying the trace on a fresh machine gives the
    same outcomes, the same victims and the same buddyinfo."""
    mix = load_mix("pressure")
    results = []
    trace_text = ""
    for run in range(2):
        async with machine(tmp_path / str(run), mem="16M", background=False) as m:
            await m.policy.client.set_sysctls(["vm.overcommit_memory=1"], admin_token=ADMIN)
            for _ in range(100):
                if (await m.mmu.GetStats(mmu_pb.GetStatsRequest())).overcommit_memory == 1:
                    break
                await asyncio.sleep(0.02)
            stats = Stats()
            stream = io.StringIO()
            if run == 0:
                config = LoadConfig(processes=2, seed=9, ops=150, in_flight=1, cleanup=False)
                await run_load(mix, config, m.backend, m.info, stats, recorder=Recorder(stream, {}))
                trace_text = stream.getvalue()
                assert stats.replacements >= 1, stats.summary()
                assert stats.outcomes["killed"] >= 1
            else:
                lines = trace_text.splitlines()
                trace = Trace(json.loads(lines[0]), [json.loads(x) for x in lines[1:]])
                await replay(trace, m.backend, stats)
                assert stats.divergences == 0
            log = [line.text for line in (await m.policy.client.kernel_log()).lines]
            victims = [t for t in log if t.startswith("Killed process")]
            results.append((await m.buddyinfo(), victims, dict(stats.outcomes)))
    assert results[0] == results[1]
    assert results[0][1]
