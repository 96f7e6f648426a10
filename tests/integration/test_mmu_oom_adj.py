"""SetOomAdj: the MMU stores a process's oom_adj and oom_score_adj for the
OOM killer, within the kernel's ranges; anything else is refused and changes
nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
import pytest_asyncio

from memsim.mmu.v1 import mmu_pb2 as pb
from memsim.mmu.v1 import mmu_pb2_grpc
from tests.integration.conftest import BuddyHarness, mmu_stack

if TYPE_CHECKING:
    from memsim.mmu.v1.mmu_pb2_grpc import MmuAsyncStub


@pytest_asyncio.fixture
async def mmu(buddy: BuddyHarness, tmp_path: Path) -> AsyncIterator[MmuAsyncStub]:
    async with mmu_stack(buddy, tmp_path, swap_bytes=0) as stack:
        yield mmu_pb2_grpc.MmuStub(stack.mmu_channel)


async def test_oom_adj_is_stored_and_shown(mmu: MmuAsyncStub) -> None:
    pid = (await mmu.CreateProcess(pb.CreateProcessRequest(name="app", uid=1000))).pid
    info = await mmu.SetOomAdj(pb.SetOomAdjRequest(pid=pid, oom_adj=-17, oom_score_adj=-1000))
    assert (info.oom_adj, info.oom_score_adj) == (-17, -1000)
    again = await mmu.GetProcess(pb.GetProcessRequest(pid=pid))
    assert (again.oom_adj, again.oom_score_adj) == (-17, -1000)


@pytest.mark.parametrize(
    ("pid_offset", "oom_adj", "oom_score_adj", "code", "words"),
    [
        (0, 16, 0, grpc.StatusCode.INVALID_ARGUMENT, "oom_adj 16 is outside -17..15"),
        (0, -18, 0, grpc.StatusCode.INVALID_ARGUMENT, "oom_adj -18 is outside -17..15"),
        (0, 0, 1001, grpc.StatusCode.INVALID_ARGUMENT, "oom_score_adj 1001 is outside"),
        (0, 0, -1001, grpc.StatusCode.INVALID_ARGUMENT, "oom_score_adj -1001 is outside"),
        (1000, 0, 0, grpc.StatusCode.NOT_FOUND, "no process"),
    ],
)
async def test_bad_oom_adj_is_refused_and_changes_nothing(
    mmu: MmuAsyncStub,
    pid_offset: int,
    oom_adj: int,
    oom_score_adj: int,
    code: grpc.StatusCode,
    words: str,
) -> None:
    pid = (await mmu.CreateProcess(pb.CreateProcessRequest(name="app", uid=1000))).pid
    await mmu.SetOomAdj(pb.SetOomAdjRequest(pid=pid, oom_adj=3, oom_score_adj=200))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await mmu.SetOomAdj(
            pb.SetOomAdjRequest(pid=pid + pid_offset, oom_adj=oom_adj, oom_score_adj=oom_score_adj)
        )
    assert refused.value.code() == code
    assert words in (refused.value.details() or "")
    info = await mmu.GetProcess(pb.GetProcessRequest(pid=pid))
    assert (info.oom_adj, info.oom_score_adj) == (3, 200)
