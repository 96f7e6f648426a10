"""The zone service with the policy service, all in process on loopback: the
zone follows vm.min_free_kbytes and vm.lowmem_reserve_ratio through the
policy's watch, closes its gate on the policy's panic and opens it on a
reboot, calls the OOM killer when reclaim fails (a cpuset's OOM as
CONSTRAINT_CPUSET); and a whole OOM round over the real MMU."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from memsim.common.v1 import common_pb2
from memsim.mmu.v1 import mmu_pb2 as mmu_pb
from memsim.policy.v1 import policy_pb2 as policy_pb
from memsim.profiles.loader import MachineProfile, load_profile
from memsim.runtime.channel import open_channel
from memsim.runtime.server import RunningServer, start_server
from memsim.services.buddy.local import LocalBuddy
from memsim.services.policy.badness import Task
from memsim.services.policy.config import PolicyConfig
from memsim.services.policy.ports import TaskSource
from memsim.services.zone import gfp as g
from memsim.services.zone.client import ZoneClient
from memsim.services.zone.config import ZoneConfig
from memsim.services.zone.machine import Machine
from memsim.services.zone.server import zone_service
from memsim.zone.v1 import zone_pb2 as zone_pb
from memsim.zone.v1 import zone_pb2_grpc
from tests.integration.conftest import UNREACHABLE, running_servers, until
from tests.integration.policy_fixtures import (
    ADMIN,
    FakeTasks,
    PolicyHarness,
    running_policy,
)

if TYPE_CHECKING:
    from memsim.mmu.v1.mmu_pb2_grpc import MmuAsyncStub
    from memsim.zone.v1.zone_pb2_grpc import ZoneAllocatorAsyncStub

PANIC_PREFIX = "Kernel panic - not syncing: "
CALL_S = 30.0
PAGE = 4096
RW = 0x3
PRIVATE_ANON = 0x02 | 0x20
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


@dataclass
class ZoneOverPolicy:
    policy: PolicyHarness
    zone: RunningServer
    client: ZoneClient
    stub: ZoneAllocatorAsyncStub
    profile: MachineProfile
    tasks: FakeTasks | None


@contextlib.asynccontextmanager
async def zone_over_policy(
    profile: MachineProfile, tasks: FakeTasks | None = None
) -> AsyncIterator[ZoneOverPolicy]:
    """The policy (over fake tasks, or over no MMU at all) and a zone over an
    in-process buddy following it; the zone's first state is in on return."""
    config = PolicyConfig(profile, UNREACHABLE, ADMIN)
    source: TaskSource | None = tasks
    async with running_policy(config, source) as policy:
        zone = await start_server(
            zone_service(ZoneConfig(profile, UNREACHABLE, policy.running.address), LocalBuddy()),
            "127.0.0.1:0",
            None,
        )
        channel = open_channel(zone.address)
        try:
            fx = ZoneOverPolicy(
                policy,
                zone,
                ZoneClient(channel),
                zone_pb2_grpc.ZoneAllocatorStub(channel),
                profile,
                tasks,
            )
            await until(lambda: watchers(policy), lambda n: n >= 1)
            yield fx
        finally:
            await channel.close(None)
            await zone.stop(0)


def watchers(policy: PolicyHarness) -> Awaitable[float]:
    async def read() -> float:
        return policy.registry.get_sample_value("memsim_policy_sysctl_watchers") or 0.0

    return read()


def marks(info: zone_pb.GetZoneInfoResponse) -> dict[tuple[int, str], tuple[Any, ...]]:
    return {
        (z.ref.node, z.ref.zone): (
            z.min_pages,
            z.low_pages,
            z.high_pages,
            tuple(z.lowmem_reserve_pages),
        )
        for n in info.nodes
        for z in n.zones
    }


def expected_marks(
    profile: MachineProfile, min_free_kbytes: int | None = None, ratio: list[int] | None = None
) -> dict[tuple[int, str], tuple[Any, ...]]:
    """What setup_per_zone_pages_min and _lowmem_reserve make of the values."""
    machine = Machine(profile)
    if min_free_kbytes is not None:
        machine.min_free_kbytes = min_free_kbytes
    if ratio is not None:
        machine.lowmem_reserve_ratio = ratio
    machine.setup_watermarks()
    return {
        key: (z.marks.min, z.marks.low, z.marks.high, tuple(z.lowmem_reserve))
        for key, z in machine.zones.items()
    }


async def alloc(
    fx: ZoneOverPolicy,
    count: int = 1,
    gfp_mask: int = g.GFP_HIGHUSER_MOVABLE,
    pid: int = 0,
    nodes: tuple[int, ...] = (),
    cpu: int = 0,
) -> zone_pb.AllocPagesResponse:
    request = zone_pb.AllocPagesRequest(
        gfp_mask=gfp_mask, order=0, count=count, cpu=cpu, pid=pid, nodes=list(nodes)
    )
    return await fx.stub.AllocPages(request, timeout=CALL_S)


async def refusal(call: Awaitable[object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value.code(), info.value.details() or ""


async def take_until_refused(
    stub: ZoneAllocatorAsyncStub, request: zone_pb.AllocPagesRequest
) -> tuple[int, grpc.aio.AioRpcError]:
    """Pages taken until the zone says no, and its no."""
    taken = 0
    for _ in range(1000):
        try:
            taken += (await stub.AllocPages(request, timeout=CALL_S)).allocated
        except grpc.aio.AioRpcError as exc:
            return taken, exc
    raise AssertionError("the zone never refused")


# -- sysctls ------------------------------------------------------------------------------


async def test_min_free_kbytes_written_through_the_policy_moves_the_watermarks() -> None:
    profile = load_profile("x86_32", mem="64M")
    async with zone_over_policy(profile) as fx:
        assert marks(await fx.client.zoneinfo()) == expected_marks(profile)
        await fx.policy.client.set_sysctls(["vm.min_free_kbytes=8192"], admin_token=ADMIN)
        want = expected_marks(profile, min_free_kbytes=8192)
        assert want != expected_marks(profile)
        await until(fx.client.zoneinfo, lambda info: marks(info) == want)
        settings = await fx.stub.GetWatermarkSettings(zone_pb.GetWatermarkSettingsRequest())
        assert settings.min_free_kbytes == 8192
        # And back down: the zone applies every write, not just the first.
        await fx.policy.client.set_sysctls(["vm.min_free_kbytes=256"], admin_token=ADMIN)
        want = expected_marks(profile, min_free_kbytes=256)
        await until(fx.client.zoneinfo, lambda info: marks(info) == want)


async def test_lowmem_reserve_ratio_written_through_the_policy_moves_the_reserves() -> None:
    # x86_32 with 1 GiB: DMA, Normal and HighMem (and Movable): three ratios.
    profile = load_profile("x86_32", mem="1G")
    async with zone_over_policy(profile) as fx:
        before = await fx.client.zoneinfo()
        assert marks(before) == expected_marks(profile)
        await fx.policy.client.set_sysctls(
            values={"vm.lowmem_reserve_ratio": "64 8 4"}, admin_token=ADMIN
        )
        want = expected_marks(profile, ratio=[64, 8, 4])
        assert want != marks(before)
        await until(fx.client.zoneinfo, lambda info: marks(info) == want)
        settings = await fx.stub.GetWatermarkSettings(zone_pb.GetWatermarkSettingsRequest())
        assert list(settings.lowmem_reserve_ratio) == [64, 8, 4]


# -- panic and reboot ------------------------------------------------------------------


async def test_a_policy_panic_halts_the_zone_until_reboot() -> None:
    profile = load_profile("x86_32", mem="64M")
    tasks = FakeTasks([Task(1, "init", total_vm=100, rss=10), Task(2, "hog", total_vm=9000)])
    async with zone_over_policy(profile, tasks) as fx:
        got = await alloc(fx, 4)
        c = fx.policy.client
        await c.set_sysctls(["vm.panic_on_oom=1"], admin_token=ADMIN)
        response = await c.out_of_memory(g.GFP_HIGHUSER, pid=2)
        assert response.decision == policy_pb.OOM_DECISION_PANIC
        line = response.message
        assert line.startswith(PANIC_PREFIX)

        async def try_alloc() -> tuple[grpc.StatusCode, str] | None:
            try:
                await alloc(fx)
            except grpc.aio.AioRpcError as exc:
                return exc.code(), exc.details() or ""
            return None

        assert await until(try_alloc, lambda r: r is not None) == (PRECONDITION, line)
        free = zone_pb.FreePagesRequest(
            blocks=[common_pb2.PageBlock(pfn=p, order=0) for b in got.blocks for p in b.pfns]
        )
        assert await refusal(fx.stub.FreePages(free)) == (PRECONDITION, line)
        # Looking still works.
        info = await fx.client.zoneinfo()
        assert info.nodes
        assert info.nodes[0].zones
        assert await fx.client.vmstat()
        # A reboot of the policy opens the gate again.
        await c.reboot(admin_token=ADMIN)
        assert await until(try_alloc, lambda r: r is None) is None
        assert (await fx.stub.FreePages(free)).freed_pages == 4


async def test_the_zones_own_oom_reaches_the_policy_rounds_of_kills_then_panic() -> None:
    """Reclaim fails (no reclaimer): the zone calls the policy's killer. The
    fake kills free nothing, so round after round kills the next task, until
    nothing killable is left and the kernel panics; the zone's caller gets
    that panic, and the zone halts."""
    profile = load_profile("x86_32", mem="16M")
    tasks = FakeTasks(
        [
            Task(1, "init", total_vm=100, rss=10),
            Task(2, "small", uid=1000, total_vm=1000, rss=100),
            Task(3, "big", uid=1000, total_vm=5000, rss=500),
        ]
    )
    async with zone_over_policy(profile, tasks) as fx:

        async def hog() -> None:
            while True:  # a kernel allocation (pid 0), until refused
                await alloc(fx, 256)

        code, details = await refusal(hog())
        assert code is PRECONDITION
        assert details.startswith(PANIC_PREFIX + "Out of memory and no killable processes")
        assert tasks.killed == [(3, 9), (2, 9)]
        assert (await fx.policy.client.stats()).panicked
        log = [line.text for line in (await fx.policy.client.kernel_log()).lines]
        kill = re.compile(r"Out of memory: kill process 3 \(big\) score \d+ or a child")
        assert any(kill.fullmatch(text) for text in log), log
        assert any(text.startswith("Killed process 3 (big)") for text in log), log
        # The zone is halted now: even a small allocation is refused.
        assert (await refusal(alloc(fx)))[0] is PRECONDITION


async def test_a_cpuset_oom_is_constrained_and_panic_on_oom_1_spares_it() -> None:
    """numa, 64 MiB: a process held to node 1 fills node 1; its OOM reaches
    the policy as CONSTRAINT_CPUSET, which panic_on_oom = 1 does not panic
    for: a task is killed instead. An unconstrained OOM then panics."""
    profile = load_profile("numa", mem="64M")
    tasks = FakeTasks(
        [
            Task(1, "init", total_vm=100, rss=10),
            Task(2, "pinned", uid=1000, total_vm=9000, rss=8000, nodes=frozenset({1})),
            Task(3, "other", uid=1000, total_vm=4000, rss=100),
        ]
    )
    async with zone_over_policy(profile, tasks) as fx:
        await fx.policy.client.set_sysctls(["vm.panic_on_oom=1"], admin_token=ADMIN)
        pfns: list[int] = []
        nodes: set[int] = set()

        async def pinned() -> None:
            while True:
                got = await alloc(fx, 256, pid=2, nodes=(1,))
                pfns.extend(p for b in got.blocks for p in b.pfns)
                nodes.update(b.zone.node for b in got.blocks)

        with pytest.raises(grpc.aio.AioRpcError) as info:
            await pinned()
        assert nodes == {1}
        # The pinned task was the killer's choice (the caller itself here):
        # its allocation fails, and no panic.
        assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "killed by the OOM killer" in (info.value.details() or "")
        assert tasks.killed == [(2, 9)]
        assert not (await fx.policy.client.stats()).panicked
        node1 = [z for n in (await fx.client.zoneinfo()).nodes for z in n.zones if n.node == 1]
        assert all(z.start_pfn <= p < z.start_pfn + z.spanned_pages for z in node1 for p in pfns)
        events = [e async for e in _events(fx)]
        assert events[0].decision == policy_pb.OOM_DECISION_KILLED

        async def kernel() -> None:
            while True:
                await alloc(fx, 256)

        code, details = await refusal(kernel())
        assert code is PRECONDITION
        assert details == PANIC_PREFIX + "out of memory. panic_on_oom is selected"


async def _events(fx: ZoneOverPolicy) -> AsyncIterator[policy_pb.WatchOomEventsResponse]:
    """The OOM events kept so far."""
    stream = fx.policy.client.watch_oom_events(since_seq=0)
    try:
        while True:
            try:
                event = await asyncio.wait_for(stream.read(), 0.5)
            except TimeoutError:
                return
            if not isinstance(event, policy_pb.WatchOomEventsResponse):
                return
            yield event
    finally:
        stream.cancel()


async def test_an_oom_with_the_policy_away_is_unavailable_and_allocates_nothing() -> None:
    profile = load_profile("x86_32", mem="16M")
    zone = await start_server(
        zone_service(ZoneConfig(profile, UNREACHABLE, UNREACHABLE), LocalBuddy()),
        "127.0.0.1:0",
        None,
    )
    channel = open_channel(zone.address)
    try:
        stub = zone_pb2_grpc.ZoneAllocatorStub(channel)
        request = zone_pb.AllocPagesRequest(gfp_mask=g.GFP_HIGHUSER_MOVABLE, count=256, pid=3)
        taken, error = await take_until_refused(stub, request)
        assert error.code() is grpc.StatusCode.UNAVAILABLE
        assert "the OOM killer (policy service) could not be asked" in (error.details() or "")
        zones = (await ZoneClient(channel).zoneinfo()).nodes[0].zones
        assert (
            sum(z.managed_pages - z.free_pages - sum(p.count for p in z.pagesets) for z in zones)
            == taken
        )
    finally:
        await channel.close(None)
        await zone.stop(0)


# -- a whole OOM round over the real MMU ---------------------------------------------


@dataclass
class FullMachine:
    policy: PolicyHarness
    zone: ZoneClient
    mmu: MmuAsyncStub


@contextlib.asynccontextmanager
async def full_machine(profile: MachineProfile, data_dir: Path) -> AsyncIterator[FullMachine]:
    """Policy, zone (over an in-process buddy) and MMU, no swap; the MMU
    tells the policy where it is at start (ConnectTaskSource)."""
    async with (
        running_policy(PolicyConfig(profile, UNREACHABLE, ADMIN)) as policy,
        running_servers(profile, data_dir, policy_address=policy.running.address) as servers,
    ):
        yield FullMachine(policy, servers.zone, servers.mmu_stub)


async def spawn(m: FullMachine, name: str, mapping_bytes: int) -> tuple[mmu_pb.Caller, int]:
    created = await m.mmu.CreateProcess(mmu_pb.CreateProcessRequest(name=name, uid=1000))
    caller = mmu_pb.Caller(pid=created.pid, token=created.token)
    mapped = await m.mmu.Mmap(
        mmu_pb.MmapRequest(caller=caller, length_bytes=mapping_bytes, prot=RW, flags=PRIVATE_ANON),
        timeout=CALL_S,
    )
    return caller, mapped.address


async def free_pages(m: FullMachine) -> int:
    await m.zone.drain()  # the per-CPU lists (the zone's and the MMU's) back to buddy
    return sum(z.free_pages for n in (await m.zone.zoneinfo()).nodes for z in n.zones)


async def test_an_oom_round_over_the_mmu_kills_the_bigger_process(tmp_path: Path) -> None:
    profile = load_profile("x86_32", mem="16M")  # one DMA zone, ~3000 pages
    async with full_machine(profile, tmp_path) as m:
        await m.policy.client.set_sysctls(["vm.overcommit_memory=1"], admin_token=ADMIN)
        await until(
            lambda: m.mmu.GetStats(mmu_pb.GetStatsRequest()),
            lambda stats: stats.overcommit_memory == 1,
        )
        small, small_at = await spawn(m, "small", 8 << 20)
        big, big_at = await spawn(m, "big", 32 << 20)
        boot_free = await free_pages(m)

        async def touch(caller: mmu_pb.Caller, address: int, length: int) -> None:
            await m.mmu.Touch(
                mmu_pb.TouchRequest(caller=caller, address=address, length_bytes=length),
                timeout=CALL_S,
            )

        # The small one takes 2 MiB first; then both touch at once, the big
        # one far more than the machine has, the small one 2 MiB more.
        await touch(small, small_at, 2 << 20)
        big_call = asyncio.create_task(touch(big, big_at, 32 << 20))
        small_call = asyncio.create_task(touch(small, small_at + (2 << 20), 2 << 20))
        code, details = await refusal(asyncio.wait_for(big_call, CALL_S))
        await asyncio.wait_for(small_call, CALL_S)  # the survivor's touch completes
        assert code is PRECONDITION, details
        assert "killed by the OOM killer" in details

        listed = await m.mmu.ListProcesses(mmu_pb.ListProcessesRequest(all=True))
        alive = {p.pid: p for p in listed.processes}
        assert (alive[big.pid].state, alive[big.pid].rss_pages) == ("X", 0)  # dead
        assert alive[small.pid].state == "R"
        assert alive[small.pid].rss_pages >= (4 << 20) // PAGE
        # The victim's memory is back: all but what the small one holds.
        free = await free_pages(m)
        assert free >= boot_free - (4 << 20) // PAGE - 64, (free, boot_free)

        log = [line.text for line in (await m.policy.client.kernel_log()).lines]
        kill = re.compile(rf"Out of memory: kill process {big.pid} \(big\) score \d+ or a child")
        assert any(kill.fullmatch(text) for text in log), log
        assert any(text.startswith(f"Killed process {big.pid} (big)") for text in log), log
        assert not any(f"kill process {small.pid} " in text for text in log)
        stats = await m.policy.client.stats()
        assert not stats.panicked
        assert stats.processes_killed == 1


async def free_by_node(m: FullMachine) -> dict[int, int]:
    await m.zone.drain()
    return {n.node: sum(z.free_pages for z in n.zones) for n in (await m.zone.zoneinfo()).nodes}


async def test_a_process_in_a_cpuset_faults_only_there_and_its_oom_kills_inside(
    tmp_path: Path,
) -> None:
    """numa, 64 MiB: node 1 has ~8000 pages. A process held to node 1 gets
    its frames (and page tables) there only; when it outgrows node 1 the OOM
    is the cpuset's: panic_on_oom = 1 spares it, the pinned hog dies, node 0
    is never touched."""
    profile = load_profile("numa", mem="64M")
    async with full_machine(profile, tmp_path) as m:
        c = m.policy.client
        await c.set_sysctls(["vm.overcommit_memory=1", "vm.panic_on_oom=1"], admin_token=ADMIN)
        await until(
            lambda: m.mmu.GetStats(mmu_pb.GetStatsRequest()),
            lambda stats: stats.overcommit_memory == 1,
        )
        created = await m.mmu.CreateProcess(
            mmu_pb.CreateProcessRequest(name="pinned", uid=1000, nodes=[1])
        )
        pinned = mmu_pb.Caller(pid=created.pid, token=created.token)
        mapped = await m.mmu.Mmap(
            mmu_pb.MmapRequest(caller=pinned, length_bytes=48 << 20, prot=RW, flags=PRIVATE_ANON)
        )
        other, other_at = await spawn(m, "other", 1 << 20)
        before = await free_by_node(m)
        touch = mmu_pb.TouchRequest(caller=pinned, address=mapped.address, length_bytes=4 << 20)
        await m.mmu.Touch(touch, timeout=CALL_S)
        after = await free_by_node(m)
        assert after[0] == before[0]
        assert before[1] - after[1] >= (4 << 20) // PAGE
        # Now all of it: more than node 1 has.
        touch.length_bytes = 48 << 20
        code, details = await refusal(m.mmu.Touch(touch, timeout=CALL_S))
        assert code is PRECONDITION, details
        assert "killed by the OOM killer" in details
        assert not (await c.stats()).panicked
        log = [line.text for line in (await c.kernel_log()).lines]
        kill = re.compile(
            rf"Out of memory: kill process {pinned.pid} \(pinned\) score \d+ or a child"
        )
        assert any(kill.fullmatch(text) for text in log), log
        end = await free_by_node(m)
        # Node 0 never gave the cpuset a page (the victim's pgd, taken at
        # CreateProcess in init's context, comes back there).
        assert end[0] >= before[0]
        assert end[1] >= before[1] - 16  # the victim's frames are back
        # The other process, allowed every node, goes on.
        await m.mmu.Touch(
            mmu_pb.TouchRequest(caller=other, address=other_at, length_bytes=1 << 20),
            timeout=CALL_S,
        )
