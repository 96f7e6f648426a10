"""set_mempolicy end to end, all in process on loopback: the policy, the
zone (over an in-process buddy) and the MMU on the `numa` profile with
64 MiB (node 0: DMA and DMA32, about 6000 pages; node 1: DMA32, about 8000).
SetMempolicy refuses as sys_set_mempolicy does and changes nothing; the
process client library maps its refusals to errno; a forked child inherits
the policy; a bound process's frames come from its nodes; and when it
outgrows them 2.6.24's out_of_memory kills it (CONSTRAINT_MEMORY_POLICY:
"No available memory (MPOL_BIND)"), which vm.panic_on_oom = 1 does not turn
into a panic."""

from __future__ import annotations

import contextlib
import errno
import re
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest

from memsim.clients.process.errors import InvalidArgument, NotYourProcess
from memsim.clients.process.process import MPOL_BIND, MPOL_DEFAULT, Process
from memsim.mmu.v1 import mmu_pb2 as mmu_pb
from memsim.profiles.loader import MachineProfile, load_profile
from memsim.services.mmu.client import MmuClient
from memsim.services.policy.config import PolicyConfig
from memsim.services.zone.client import ZoneClient
from tests.integration.conftest import UNREACHABLE, running_servers, until
from tests.integration.policy_fixtures import ADMIN, PolicyHarness, running_policy

if TYPE_CHECKING:
    from memsim.mmu.v1.mmu_pb2_grpc import MmuAsyncStub

CALL_S = 30.0
PAGE = 4096
RW = 0x3
PRIVATE_ANON = 0x02 | 0x20
BIND = mmu_pb.MEMPOLICY_MODE_BIND
DEFAULT = mmu_pb.MEMPOLICY_MODE_DEFAULT
INVALID = grpc.StatusCode.INVALID_ARGUMENT


@dataclass
class Machine:
    policy: PolicyHarness
    zone: ZoneClient
    mmu: MmuAsyncStub
    client: MmuClient
    mmu_channel: grpc.aio.Channel


@contextlib.asynccontextmanager
async def numa_machine(data_dir: Path) -> AsyncIterator[Machine]:
    """Policy, zone and MMU (no swap) on numa with 64 MiB, overcommit_memory
    = 1 and panic_on_oom = 1 in force at the MMU and the zone."""
    profile: MachineProfile = load_profile("numa", mem="64M")
    async with (
        running_policy(PolicyConfig(profile, UNREACHABLE, ADMIN)) as policy,
        running_servers(profile, data_dir, policy_address=policy.running.address) as servers,
    ):
        m = Machine(policy, servers.zone, servers.mmu_stub, servers.mmu, servers.mmu_channel)
        await policy.client.set_sysctls(
            ["vm.overcommit_memory=1", "vm.panic_on_oom=1"], admin_token=ADMIN
        )
        await until(
            lambda: m.mmu.GetStats(mmu_pb.GetStatsRequest()),
            lambda stats: stats.overcommit_memory == 1,
        )
        yield m


async def refusal(call: Awaitable[object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value.code(), info.value.details() or ""


async def create(m: Machine, name: str, nodes: list[int] | None = None) -> mmu_pb.Caller:
    created = await m.mmu.CreateProcess(
        mmu_pb.CreateProcessRequest(name=name, uid=1000, nodes=nodes or [])
    )
    return mmu_pb.Caller(pid=created.pid, token=created.token)


async def free_by_node(m: Machine) -> dict[int, int]:
    await m.zone.drain()  # the per-CPU lists (the zone's and the MMU's) back to buddy
    return {n.node: sum(z.free_pages for z in n.zones) for n in (await m.zone.zoneinfo()).nodes}


def policy_of(info: mmu_pb.ProcessInfo) -> tuple[int, list[int]]:
    return info.mempolicy, list(info.mempolicy_nodes)


async def test_set_mempolicy_refuses_each_bad_input_and_changes_nothing(tmp_path: Path) -> None:
    async with numa_machine(tmp_path) as m:
        app = await create(m, "app")
        pinned = await create(m, "pinned", [1])
        assert policy_of(await m.client.process(app.pid)) == (DEFAULT, [])
        info = await m.client.set_mempolicy(app.pid, app.token, BIND, [1])
        assert policy_of(info) == (BIND, [1])
        cases: list[tuple[mmu_pb.Caller, int, list[int], grpc.StatusCode, str]] = [
            (app, 0, [1], INVALID, "unknown mempolicy mode"),  # _UNSPECIFIED
            (app, 7, [1], INVALID, "unknown mempolicy mode '7'"),  # MPOL_MAX < 7
            (app, BIND, [], INVALID, "MPOL_BIND needs at least one node"),
            (app, DEFAULT, [0], INVALID, "MPOL_DEFAULT takes no nodes"),
            (app, BIND, [2], INVALID, r"nodes \[2\] are outside 0\.\.1"),
            (app, BIND, [0, 1 << 20], INVALID, "outside 0..1"),
            (pinned, BIND, [0], INVALID, r"nodes \[0\] are outside the cpuset of pid"),
            (pinned, BIND, [0, 1], INVALID, "outside the cpuset"),
        ]
        for caller, mode, nodes, code, match in cases:
            request = mmu_pb.SetMempolicyRequest(caller=caller, mode=mode, nodes=nodes)  # type: ignore[arg-type]
            got, details = await refusal(m.mmu.SetMempolicy(request))
            assert got is code, (mode, nodes, details)
            assert re.search(match, details), details
        assert policy_of(await m.client.process(app.pid)) == (BIND, [1])
        assert policy_of(await m.client.process(pinned.pid)) == (DEFAULT, [])
        # Not that process: PERMISSION_DENIED; no such process: NOT_FOUND.
        wrong = mmu_pb.Caller(pid=app.pid, token="0" * 32)
        got, _ = await refusal(m.client.set_mempolicy(wrong.pid, wrong.token, DEFAULT))
        assert got is grpc.StatusCode.PERMISSION_DENIED
        got, _ = await refusal(m.client.set_mempolicy(999, app.token, DEFAULT))
        assert got is grpc.StatusCode.NOT_FOUND
        assert policy_of(await m.client.process(app.pid)) == (BIND, [1])
        # The pinned one may bind inside its cpuset; MPOL_DEFAULT undoes it.
        info = await m.client.set_mempolicy(pinned.pid, pinned.token, BIND, [1])
        assert policy_of(info) == (BIND, [1])
        info = await m.client.set_mempolicy(app.pid, app.token, DEFAULT)
        assert policy_of(info) == (DEFAULT, [])


async def test_the_process_library_binds_forks_and_maps_refusals_to_errno(
    tmp_path: Path,
) -> None:
    async with numa_machine(tmp_path) as m:
        proc = await Process.spawn(m.mmu_channel, "lib", uid=1000)
        for nodes, mode in (((), MPOL_BIND), ((5,), MPOL_BIND), ((0,), MPOL_DEFAULT)):
            with pytest.raises(InvalidArgument) as bad:
                await proc.set_mempolicy(nodes, mode)
            assert bad.value.errno == errno.EINVAL
            assert bad.value.code is INVALID
        with pytest.raises(InvalidArgument, match="not one memsim models"):
            await proc.set_mempolicy([1], 1)  # MPOL_PREFERRED
        with pytest.raises(InvalidArgument, match="not node numbers"):
            await proc.set_mempolicy([-1])
        assert policy_of(await proc.info()) == (DEFAULT, [])
        stranger = Process(proc._stub, proc.pid, "0" * 32, "lib")
        with pytest.raises(NotYourProcess) as denied:
            await stranger.set_mempolicy([1])
        assert denied.value.errno == errno.EPERM

        before = await free_by_node(m)
        await proc.set_mempolicy([1])
        assert policy_of(await proc.info()) == (BIND, [1])
        at = await proc.mmap(2 << 20)
        await proc.touch(at, 2 << 20)
        after = await free_by_node(m)
        assert after[0] == before[0]
        assert before[1] - after[1] >= (2 << 20) // PAGE
        child = await proc.fork("child")
        assert policy_of(await child.info()) == (BIND, [1])
        await child.touch(at, 1 << 20)  # copy-on-write, onto node 1
        assert (await free_by_node(m))[0] == before[0]
        await child.set_mempolicy([], MPOL_DEFAULT)
        assert policy_of(await child.info()) == (DEFAULT, [])
        assert policy_of(await proc.info()) == (BIND, [1])
        await child.exit()
        await proc.exit()


async def test_a_bound_process_that_outgrows_its_node_is_killed_without_a_panic(
    tmp_path: Path,
) -> None:
    """48 MiB touched by a process bound to node 1 (about 8000 pages): the
    OOM is CONSTRAINT_MEMORY_POLICY, so 2.6.24 kills the allocating task
    itself (score 0) and panic_on_oom = 1 does not panic; node 0 is never
    touched, and a process with no policy goes on."""
    async with numa_machine(tmp_path) as m:
        c = m.policy.client
        bound = await create(m, "bound")
        await m.client.set_mempolicy(bound.pid, bound.token, BIND, [1])
        mapped = await m.mmu.Mmap(
            mmu_pb.MmapRequest(caller=bound, length_bytes=48 << 20, prot=RW, flags=PRIVATE_ANON)
        )
        other = await create(m, "other")
        other_at = await m.mmu.Mmap(
            mmu_pb.MmapRequest(caller=other, length_bytes=1 << 20, prot=RW, flags=PRIVATE_ANON)
        )
        before = await free_by_node(m)
        touch = mmu_pb.TouchRequest(caller=bound, address=mapped.address, length_bytes=4 << 20)
        await m.mmu.Touch(touch, timeout=CALL_S)
        after = await free_by_node(m)
        assert after[0] == before[0]  # its page tables too
        assert before[1] - after[1] >= (4 << 20) // PAGE
        touch.length_bytes = 48 << 20
        code, details = await refusal(m.mmu.Touch(touch, timeout=CALL_S))
        assert code is grpc.StatusCode.FAILED_PRECONDITION, details
        assert "killed by the OOM killer" in details
        assert not (await c.stats()).panicked
        dead = await m.client.process(bound.pid)
        assert (dead.state, dead.exit_signal, dead.rss_pages) == ("X", 9, 0)
        log = [line.text for line in (await c.kernel_log()).lines]
        header = re.compile(
            r"bound invoked oom-killer: gfp_mask=0x[0-9a-f]+, order=0, oomkilladj=0"
        )
        assert any(header.fullmatch(text) for text in log), log
        assert (
            f"No available memory (MPOL_BIND): kill process {bound.pid} (bound) score 0 or a child"
            in log
        ), log
        assert any(text.startswith(f"Killed process {bound.pid} (bound)") for text in log), log
        end = await free_by_node(m)
        assert end[0] >= before[0]  # node 0 never gave it a page
        assert end[1] >= before[1] - 16  # the victim's frames are back
        # The other process, with no policy, goes on.
        await m.mmu.Touch(
            mmu_pb.TouchRequest(caller=other, address=other_at.address, length_bytes=1 << 20),
            timeout=CALL_S,
        )
        assert (await m.client.process(other.pid)).state == "R"
