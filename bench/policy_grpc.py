"""The overcommit check on mmap over gRPC: what vm.overcommit_memory=2 costs.

Echo, buddy, policy, zone and mmu run as their own processes, started by this
benchmark; zone and mmu follow the policy's sysctls through its WatchSysctls
stream. One process maps and unmaps 1 MiB private writable anonymous memory
(charged: VM_ACCOUNT) in a loop, in paired rounds under
vm.overcommit_memory=0 (the heuristic) and =2 (strict accounting against
CommitLimit), the order alternating from round to round. Before each round
the sysctl is written through the policy service and the benchmark waits
until the MMU's GetStats reports the new mode. The goal: mode 2 costs the
mmap nothing noticeable, as the MMU checks with the sysctls it caches.

The policy's share is counted, not timed: its grpc_server_started_total, read
from its own Prometheus endpoint just before and after each mode-2 window,
less the watch stream and the calls this benchmark makes itself (none in a
window, excluded by name all the same). In steady state it is 0 per mmap.
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import time
import urllib.request

import grpc
from prometheus_client.parser import text_string_to_metric_families

from bench.report import Report, Result
from bench.rounds import ROUNDS, calls_per_second, echo_call, warm_up
from bench.services import running
from memsim.clients.cli.state import ServiceRecord
from memsim.mmu.v1 import mmu_pb2 as pb
from memsim.mmu.v1 import mmu_pb2_grpc
from memsim.profiles.loader import load_profile
from memsim.runtime.channel import open_channel
from memsim.services.mmu.client import MmuClient
from memsim.services.mmu.vma import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE
from memsim.services.policy.client import PolicyClient

PROFILE = "x86_64"
MEM = "4G"  # CommitLimit 2 GiB (no swap, overcommit_ratio 50): far above one mapping
LENGTH = 1 << 20  # bytes per mmap: 256 pages charged
GOAL = 0.9
MODE_TIMEOUT_S = 10.0
# Not the policy's work for mmap: the watch the MMU and zone keep open, and
# the benchmark's own writes of the sysctl.
NOT_COUNTED = {"WatchSysctls", "SetSysctls"}


def _policy_calls(metrics_address: str | None) -> dict[str, float]:
    """grpc_server_started_total of the policy service by method, from its /metrics."""
    assert metrics_address is not None, "the policy serves no metrics"
    with urllib.request.urlopen(f"http://{metrics_address}/metrics", timeout=5) as response:
        text = response.read().decode()
    calls: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "grpc_server_started_total":
                method = sample.labels.get("grpc_method", "")
                calls[method] = calls.get(method, 0.0) + sample.value
    return calls


def _counted(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """The calls made between two readings, by method, less NOT_COUNTED."""
    return {
        method: after[method] - before.get(method, 0.0)
        for method in after
        if method not in NOT_COUNTED and after[method] > before.get(method, 0.0)
    }


async def _check_refusal(
    mmu: MmuClient, stub: mmu_pb2_grpc.MmuAsyncStub, caller: pb.Caller, page: int
) -> None:
    """Under mode 2 the check runs: a mapping one page past CommitLimit is refused."""
    stats = await mmu.stats()
    refusals = stats.commit_refusals
    pages = stats.commit_limit_pages - stats.committed_as_pages + 1
    try:
        response = await stub.Mmap(
            pb.MmapRequest(
                caller=caller,
                length_bytes=pages * page,
                prot=PROT_READ | PROT_WRITE,
                flags=MAP_PRIVATE | MAP_ANONYMOUS,
            )
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() is not grpc.StatusCode.RESOURCE_EXHAUSTED:
            raise
    else:
        await stub.Munmap(
            pb.MunmapRequest(caller=caller, address=response.address, length_bytes=pages * page)
        )
        raise AssertionError(f"overcommit 2 let {pages} pages past CommitLimit be mapped")
    assert (await mmu.stats()).commit_refusals == refusals + 1


async def _measure(
    report: Report,
    services: dict[str, ServiceRecord],
    admin_token: str,
    page: int,
) -> None:
    async with (
        open_channel(services["echo"].address) as echo_ch,
        open_channel(services["mmu"].address) as mmu_ch,
        open_channel(services["policy"].address) as policy_ch,
    ):
        echo = echo_call(echo_ch)
        mmu_stub = mmu_pb2_grpc.MmuStub(mmu_ch)
        mmu = MmuClient(mmu_ch)
        policy = PolicyClient(policy_ch)
        policy_metrics = services["policy"].metrics_address

        async def set_mode(mode: int) -> None:
            """Writes vm.overcommit_memory and waits until the MMU checks with it."""
            await policy.set_sysctls(
                values={"vm.overcommit_memory": str(mode)}, admin_token=admin_token
            )
            deadline = time.monotonic() + MODE_TIMEOUT_S
            while (await mmu.stats()).overcommit_memory != mode:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the MMU still reports vm.overcommit_memory="
                        f"{(await mmu.stats()).overcommit_memory} {MODE_TIMEOUT_S:g} s "
                        f"after the policy service was told {mode}"
                    )
                await asyncio.sleep(0.01)

        await set_mode(0)  # also: the MMU follows the policy's watch at all
        pid, token = await mmu.create_process("bench", uid=1000)
        caller = pb.Caller(pid=pid, token=token)
        mmap_request = pb.MmapRequest(
            caller=caller,
            length_bytes=LENGTH,
            prot=PROT_READ | PROT_WRITE,
            flags=MAP_PRIVATE | MAP_ANONYMOUS,
        )

        async def mmap_munmap() -> int:
            """One mmap (counted) and the munmap that gives its charge back."""
            address = (await mmu_stub.Mmap(mmap_request)).address
            await mmu_stub.Munmap(
                pb.MunmapRequest(caller=caller, address=address, length_bytes=LENGTH)
            )
            return 1

        # The mapping is charged: Committed_AS grows by its pages while it lives.
        for mode in (0, 2):
            await set_mode(mode)
            before = (await mmu.stats()).committed_as_pages
            address = (await mmu_stub.Mmap(mmap_request)).address
            charged = (await mmu.stats()).committed_as_pages - before
            await mmu_stub.Munmap(
                pb.MunmapRequest(caller=caller, address=address, length_bytes=LENGTH)
            )
            assert charged == LENGTH // page, f"mode {mode}: {charged} pages charged"
            if mode == 2:
                await _check_refusal(mmu, mmu_stub, caller, page)
            await warm_up(echo, mmap_munmap)  # connections and caches

        mmaps_mode2 = 0
        policy_calls: dict[str, float] = {}

        async def window(mode: int) -> float:
            """One timed window of mmap+munmap under `mode`: mmaps per second."""
            nonlocal mmaps_mode2
            await set_mode(mode)
            if mode != 2:
                return await calls_per_second(1, mmap_munmap)
            before = await asyncio.to_thread(_policy_calls, policy_metrics)
            count = 0

            async def counted() -> int:
                nonlocal count
                count += await mmap_munmap()
                return 1

            rate = await calls_per_second(1, counted)
            after = await asyncio.to_thread(_policy_calls, policy_metrics)
            mmaps_mode2 += count
            for method, calls in _counted(before, after).items():
                policy_calls[method] = policy_calls.get(method, 0.0) + calls
            return rate

        echo_rates: list[float] = []
        rates: dict[int, list[float]] = {0: [], 2: []}
        ratios: list[float] = []
        for i in range(ROUNDS):
            echo_rates.append(await calls_per_second(1, echo))
            for mode in (0, 2) if i % 2 == 0 else (2, 0):  # drift hits both alike
                rates[mode].append(await window(mode))
            ratios.append(rates[2][-1] / rates[0][-1])

        report.add(
            Result(
                "echo calls/s, 1 in flight (policy run)", statistics.median(echo_rates), "calls/s"
            )
        )
        for mode, what in ((0, "heuristic"), (2, "strict")):
            report.add(
                Result(
                    f"mmu mmap+munmap of {LENGTH >> 20} MiB, overcommit {mode} ({what}), mmaps/s",
                    statistics.median(rates[mode]),
                    "mmaps/s",
                    detail="rounds: " + ", ".join(f"{r:.0f}" for r in rates[mode]),
                )
            )
        ratio = statistics.median(ratios)
        report.add(
            Result(
                "mmu mmap calls/s, overcommit 2 / overcommit 0",
                ratio,
                "ratio",
                f">= {GOAL}",
                ratio >= GOAL,
                detail="rounds: " + ", ".join(f"{r:.3f}" for r in ratios),
            )
        )
        total = sum(policy_calls.values())
        per_mmap = total / mmaps_mode2
        report.add(
            Result(
                "policy RPCs per mmap in steady state (overcommit 2)",
                per_mmap,
                "calls",
                "== 0",
                total == 0,
                detail=f"{total:.0f} calls in {mmaps_mode2} mmaps"
                + "".join(f"; {m} {n:.0f}" for m, n in sorted(policy_calls.items())),
            )
        )


def run(report: Report) -> None:
    print(f"policy over gRPC: overcommit check on mmap (own processes, {PROFILE} {MEM})")
    profile = load_profile(PROFILE, mem=MEM)
    admin_token = secrets.token_urlsafe(16)
    env = {"MEMSIM_ADMIN_TOKEN": admin_token, "MEMSIM_ALLOW_EMPTY_ADMIN_TOKEN": "0"}
    with running(profile, "echo", "buddy", "policy", "zone", "mmu", env=env) as services:
        asyncio.run(_measure(report, services, admin_token, profile.page_size))
