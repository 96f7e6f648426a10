"""Memory cgroups end to end, in process over gRPC: buddy, zone, the policy
service (with an admin token) and the MMU dialling it. A process attached to
a limited group is charged for the pages it faults in; past the limit the
group reclaims its own pages to swap, and with no swap its OOM killer kills
inside the group (or, with vm.panic_on_oom = 2, panics the machine)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from memsim.mmu.v1 import mmu_pb2 as mmu_pb
from memsim.policy.v1 import policy_pb2 as pb
from memsim.services.mmu.client import MmuClient
from memsim.services.policy.client import PolicyClient
from tests.integration.conftest import UNREACHABLE, BuddyHarness, running_servers
from tests.integration.policy_fixtures import (
    ADMIN,
    PolicyHarness,
    policy_config,
    running_policy,
    small_machine,
)

PAGE = 4096
MIB = 1 << 20
LIMIT = 4 * MIB
RW = 0x3
PRIVATE_ANON = 0x22


@dataclass
class Stack:
    policy: PolicyHarness
    mmu: MmuClient
    stub: Any  # the grpc stub (its stubs type the calls as blocking)

    @property
    def client(self) -> PolicyClient:
        return self.policy.client

    async def spawn(self, name: str, mapped_bytes: int = 0) -> tuple[mmu_pb.Caller, int]:
        created = await self.stub.CreateProcess(mmu_pb.CreateProcessRequest(name=name, uid=1000))
        caller = mmu_pb.Caller(pid=created.pid, token=created.token)
        address = 0
        if mapped_bytes:
            response = await self.stub.Mmap(
                mmu_pb.MmapRequest(
                    caller=caller, length_bytes=mapped_bytes, prot=RW, flags=PRIVATE_ANON
                )
            )
            address = response.address
        return caller, address

    async def touch(self, caller: mmu_pb.Caller, address: int, length: int) -> None:
        await self.stub.Touch(
            mmu_pb.TouchRequest(caller=caller, address=address, length_bytes=length)
        )

    async def group(self, name: str) -> pb.Cgroup:
        (group,) = await self.client.cgroups(name)
        return group

    async def log(self) -> list[str]:
        return [line.text for line in (await self.client.kernel_log()).lines]


@contextlib.asynccontextmanager
async def machine(buddy: BuddyHarness, data_dir: Path, swap_bytes: int) -> AsyncIterator[Stack]:
    """The policy first (with nowhere to find the MMU), then zone and an MMU
    that connects itself to the policy, as `memsim up` starts them."""
    profile = small_machine()
    async with (
        running_policy(policy_config(UNREACHABLE, swap_bytes)) as policy,
        running_servers(
            profile,
            data_dir,
            buddy_address=buddy.running.address,
            policy_address=policy.running.address,
            zone_policy=False,
            swap_bytes=swap_bytes,
        ) as servers,
    ):
        yield Stack(policy, servers.mmu, servers.mmu_stub)


async def refused(code: grpc.StatusCode, call: object) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    assert info.value.code() is code, (info.value.code(), info.value.details())
    return info.value.details() or ""


async def test_a_group_is_charged_and_reclaims_its_own_pages_past_its_limit(
    buddy: BuddyHarness, tmp_path: Path
) -> None:
    async with machine(buddy, tmp_path, swap_bytes=32 * MIB) as m:
        c = m.client
        await c.create_cgroup("/batch", LIMIT, admin_token=ADMIN)
        batch, addr = await m.spawn("batch", 16 * MIB)
        outside, oaddr = await m.spawn("outside", 4 * MIB)
        await m.touch(outside, oaddr, 4 * MIB)
        group = await c.attach_to_cgroup("/batch", batch.pid, admin_token=ADMIN)
        assert list(group.pids) == [batch.pid]
        assert (await m.mmu.process(batch.pid)).cgroup == "/batch"
        assert (await m.mmu.process(outside.pid)).cgroup == "/"
        await m.touch(batch, addr, 2 * MIB)
        assert (await m.group("/batch")).usage_bytes == 2 * MIB
        assert m.policy.registry.get_sample_value(
            "memsim_policy_cgroup_usage_bytes", {"cgroup": "/batch"}
        ) == float(2 * MIB)
        # 8 MiB more: the group reclaims its own pages to swap, and stays within.
        await m.touch(batch, addr + 2 * MIB, 8 * MIB)
        group = await m.group("/batch")
        assert group.usage_bytes <= LIMIT
        assert group.max_usage_bytes <= LIMIT
        assert group.failcnt > 0
        info = await m.mmu.process(batch.pid)
        assert info.swap_pages * PAGE >= 6 * MIB
        assert info.rss_pages * PAGE == group.usage_bytes
        assert (await m.mmu.stats()).pswpout >= info.swap_pages
        # The process outside the group lost nothing to swap.
        other = await m.mmu.process(outside.pid)
        assert (other.swap_pages, other.rss_pages * PAGE) == (0, 4 * MIB)
        assert not any("out of memory" in line.lower() for line in await m.log())
        # A child inherits the group, and the killer's snapshot says so.
        child = await m.stub.Fork(mmu_pb.ForkRequest(caller=batch, name="child"))
        assert (await m.mmu.process(child.pid)).cgroup == "/batch"
        assert set((await m.group("/batch")).pids) == {batch.pid, child.pid}
        # Exit gives every charge back; the empty group can go.
        await m.stub.Exit(
            mmu_pb.ExitRequest(caller=mmu_pb.Caller(pid=child.pid, token=child.token))
        )
        await m.stub.Exit(mmu_pb.ExitRequest(caller=batch))
        assert (await m.group("/batch")).usage_bytes == 0
        await c.remove_cgroup("/batch", admin_token=ADMIN)


async def test_with_no_swap_the_groups_oom_killer_kills_inside_it(
    buddy: BuddyHarness, tmp_path: Path
) -> None:
    async with machine(buddy, tmp_path, swap_bytes=0) as m:
        c = m.client
        await c.create_cgroup("/batch", LIMIT, admin_token=ADMIN)
        outside, oaddr = await m.spawn("outside", 8 * MIB)
        await m.touch(outside, oaddr, 8 * MIB)  # the machine's biggest, but not in the group
        batch, addr = await m.spawn("batch", 16 * MIB)
        await c.attach_to_cgroup("/batch", batch.pid, admin_token=ADMIN)
        worker = await m.stub.Fork(mmu_pb.ForkRequest(caller=batch, name="worker"))
        wcaller = mmu_pb.Caller(pid=worker.pid, token=worker.token)
        await m.touch(wcaller, addr, 3 * MIB)
        # batch's 2 MiB pass the limit: nothing to reclaim, so the group's
        # OOM killer chooses batch (its child's size counts half) and kills
        # the child first, as 2.6.24's oom_kill_process does.
        await m.touch(batch, addr + 8 * MIB, 2 * MIB)
        assert (await m.mmu.process(worker.pid)).state == "X"
        assert (await m.mmu.process(batch.pid)).state == "R"
        group = await m.group("/batch")
        assert group.usage_bytes == 2 * MIB
        assert list(group.pids) == [batch.pid]
        log = await m.log()
        assert any(line.startswith("Memory cgroup out of memory: kill process") for line in log)
        assert any(f"Killed process {worker.pid}" in line for line in log)
        other = await m.mmu.process(outside.pid)
        assert (other.state, other.rss_pages * PAGE) == ("R", 8 * MIB)
        # Alone in its group, batch itself is the next victim, mid-fault.
        details = await refused(grpc.StatusCode.FAILED_PRECONDITION, m.touch(batch, addr, 4 * MIB))
        assert "killed by the OOM killer" in details
        assert (await m.mmu.process(batch.pid)).state == "X"
        assert (await m.group("/batch")).usage_bytes == 0
        assert (await m.mmu.process(outside.pid)).state == "R"


async def test_with_panic_on_oom_2_the_groups_oom_panics_the_machine(
    buddy: BuddyHarness, tmp_path: Path
) -> None:
    async with machine(buddy, tmp_path, swap_bytes=0) as m:
        c = m.client
        await c.create_cgroup("/batch", LIMIT, admin_token=ADMIN)
        await c.set_sysctls(["vm.panic_on_oom=2"], admin_token=ADMIN)
        outside, _ = await m.spawn("outside")
        batch, addr = await m.spawn("batch", 8 * MIB)
        await c.attach_to_cgroup("/batch", batch.pid, admin_token=ADMIN)
        details = await refused(grpc.StatusCode.FAILED_PRECONDITION, m.touch(batch, addr, 8 * MIB))
        assert details.startswith("Kernel panic - not syncing: out of memory(memcg)")
        panicked, message = await c.panic_state()
        assert panicked
        assert message == details
        assert (await m.mmu.process(outside.pid)).state == "R"
        assert (await m.mmu.process(batch.pid)).state == "R"  # nobody was killed


async def test_set_cgroup_and_attach_refuse_bad_input_and_change_nothing(
    buddy: BuddyHarness, tmp_path: Path
) -> None:
    async with machine(buddy, tmp_path, swap_bytes=0) as m:
        c = m.client
        await c.create_cgroup("/batch", LIMIT, admin_token=ADMIN)
        proc, _ = await m.spawn("proc")
        dead, _ = await m.spawn("dead")
        await m.stub.Exit(mmu_pb.ExitRequest(caller=dead))

        async def state() -> tuple[object, ...]:
            return (
                [(p.pid, p.cgroup) for p in (await m.mmu.processes(all=True)).processes],
                await c.cgroups(),
            )

        before = await state()
        # The MMU's own call.
        await refused(grpc.StatusCode.NOT_FOUND, m.mmu.set_cgroup(999, "/batch"))
        await refused(grpc.StatusCode.FAILED_PRECONDITION, m.mmu.set_cgroup(dead.pid, "/batch"))
        for bad in ("", "batch", "/batch/", "/a//b", "/a/../b"):
            details = await refused(
                grpc.StatusCode.INVALID_ARGUMENT, m.mmu.set_cgroup(proc.pid, bad)
            )
            assert "cgroup" in details
        # Through the policy.
        await refused(
            grpc.StatusCode.NOT_FOUND, c.attach_to_cgroup("/batch", 999, admin_token=ADMIN)
        )
        await refused(
            grpc.StatusCode.NOT_FOUND, c.attach_to_cgroup("/batch", dead.pid, admin_token=ADMIN)
        )
        await refused(
            grpc.StatusCode.NOT_FOUND, c.attach_to_cgroup("/none", proc.pid, admin_token=ADMIN)
        )
        await refused(grpc.StatusCode.PERMISSION_DENIED, c.attach_to_cgroup("/batch", proc.pid))
        assert await state() == before
        # Busy while it has a member, even one that charged nothing.
        await c.attach_to_cgroup("/batch", proc.pid, admin_token=ADMIN)
        await refused(
            grpc.StatusCode.FAILED_PRECONDITION, c.remove_cgroup("/batch", admin_token=ADMIN)
        )
        await c.attach_to_cgroup("/", proc.pid, admin_token=ADMIN)
        assert (await m.mmu.process(proc.pid)).cgroup == "/"
        await c.remove_cgroup("/batch", admin_token=ADMIN)
