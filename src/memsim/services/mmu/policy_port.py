"""The policy service as the MMU needs it for memory cgroups: charges,
uncharges and the group's OOM killer. One port, one adapter (the policy over
gRPC); an MMU with no policy service has none (MmuService.policy is None)
and charges nothing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import grpc
import structlog

from memsim.policy.v1 import policy_pb2 as policy_pb
from memsim.services.mmu.errors import MachineHalted, NoMemory
from memsim.services.policy.client import PolicyClient

log = structlog.get_logger("memsim.mmu.policy")

DECISIONS = {
    policy_pb.OOM_DECISION_KILLED: "killed",
    policy_pb.OOM_DECISION_WAIT: "wait",
    policy_pb.OOM_DECISION_PANIC: "panic",
    policy_pb.OOM_DECISION_GIVE_UP: "give_up",
}


@dataclass(frozen=True)
class CgroupCharge:
    """res_counter_charge's answer: ok, or refused over the limit (nothing
    charged); gone: the group no longer exists (the policy rebooted)."""

    ok: bool
    usage_pages: int = 0
    limit_pages: int = 0
    gone: bool = False

    @property
    def room_pages(self) -> int:
        return max(self.limit_pages - self.usage_pages, 0)


@dataclass(frozen=True)
class OomVerdict:
    """One round of mem_cgroup_out_of_memory: "killed", "wait", "panic" or
    "give_up", and why."""

    decision: str
    message: str = ""


class PolicyPort(Protocol):
    async def charge(self, group: str, pages: int) -> CgroupCharge:
        """Charges pages to group, all or none. MachineHalted if the machine
        has panicked; NoMemory if the policy cannot be asked."""
        ...

    async def uncharge(self, group: str, pages: int) -> None:
        """Gives pages back to group; a failure is logged, never raised (the
        pages are gone either way)."""
        ...

    async def out_of_memory(self, gfp_mask: int, pid: int, group: str) -> OomVerdict:
        """The OOM killer of group for pid's charge (CONSTRAINT_MEMORY_CGROUP)."""
        ...


def _failure(exc: grpc.aio.AioRpcError, what: str) -> Exception:
    details = exc.details() or ""
    if exc.code() is grpc.StatusCode.FAILED_PRECONDITION and "panic" in details.lower():
        return MachineHalted(details)
    return NoMemory(f"{what}: the policy service failed: {exc.code().name}: {details}")


class GrpcPolicy:
    def __init__(self, client: PolicyClient, page_size: int) -> None:
        self.client = client
        self.page_size = page_size

    async def charge(self, group: str, pages: int) -> CgroupCharge:
        try:
            response = await self.client.charge_cgroup(pages, name=group)
        except grpc.aio.AioRpcError as exc:
            if exc.code() is grpc.StatusCode.NOT_FOUND:
                return CgroupCharge(False, gone=True)
            raise _failure(exc, f"charging {pages} pages to memory cgroup {group}") from None
        return CgroupCharge(
            response.ok,
            response.usage_bytes // self.page_size,
            response.limit_bytes // self.page_size,
        )

    async def uncharge(self, group: str, pages: int) -> None:
        try:
            await self.client.uncharge_cgroup(pages, name=group)
        except grpc.aio.AioRpcError as exc:
            log.warning(
                "memcg_uncharge_failed",
                cgroup=group,
                pages=pages,
                code=exc.code().name,
                details=exc.details(),
            )

    async def out_of_memory(self, gfp_mask: int, pid: int, group: str) -> OomVerdict:
        try:
            response = await self.client.out_of_memory(
                gfp_mask, 0, pid, policy_pb.CONSTRAINT_MEMORY_CGROUP, memcg=group
            )
        except grpc.aio.AioRpcError as exc:
            raise _failure(exc, f"the OOM killer of memory cgroup {group}") from None
        return OomVerdict(DECISIONS.get(response.decision, "give_up"), response.message)
