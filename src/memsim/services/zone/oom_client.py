"""The OOM killer as the zone reaches it: the policy service over gRPC."""

from __future__ import annotations

import grpc

from memsim.policy.v1 import policy_pb2 as policy_pb
from memsim.services.policy.client import PolicyClient
from memsim.services.zone.errors import KillerUnavailable
from memsim.services.zone.ports import (
    CONSTRAINT_CPUSET,
    CONSTRAINT_MEMORY_POLICY,
    CONSTRAINT_NONE,
    Constraint,
    OomVerdict,
)

PANIC_PREFIX = "Kernel panic - not syncing"

DECISIONS = {
    policy_pb.OOM_DECISION_KILLED: "killed",
    policy_pb.OOM_DECISION_WAIT: "wait",
    policy_pb.OOM_DECISION_PANIC: "panic",
    policy_pb.OOM_DECISION_GIVE_UP: "give_up",
}

CONSTRAINTS: dict[Constraint, policy_pb.Constraint.ValueType] = {
    CONSTRAINT_NONE: policy_pb.CONSTRAINT_NONE,
    CONSTRAINT_CPUSET: policy_pb.CONSTRAINT_CPUSET,
    CONSTRAINT_MEMORY_POLICY: policy_pb.CONSTRAINT_MEMORY_POLICY,
}


class PolicyOom:
    def __init__(self, client: PolicyClient, nodes: int) -> None:
        self.client = client
        self.nodes = nodes

    async def out_of_memory(
        self,
        gfp_mask: int,
        order: int,
        pid: int,
        nodes: tuple[int, ...],
        constraint: Constraint | None = None,
    ) -> OomVerdict:
        if constraint is None:
            # A caller that does not say: a task held to some of the
            # machine's nodes (its cpuset) is an OOM in that constraint.
            held = bool(nodes) and bool(set(range(self.nodes)) - set(nodes))
            constraint = CONSTRAINT_CPUSET if held else CONSTRAINT_NONE
        nodemask = () if constraint == CONSTRAINT_NONE else nodes
        try:
            response = await self.client.out_of_memory(
                gfp_mask,
                order,
                pid,
                CONSTRAINTS[constraint],
                nodemask,
            )
        except grpc.aio.AioRpcError as exc:
            details = exc.details() or ""
            if exc.code() is grpc.StatusCode.FAILED_PRECONDITION and details.startswith(
                PANIC_PREFIX
            ):
                # The policy has panicked already (its gate refuses the call
                # with the panic line) and the watch has not told us yet.
                return OomVerdict("panic", (), details)
            raise KillerUnavailable(
                f"the OOM killer (policy service) could not be asked: {exc.code().name}: {details}"
            ) from None
        killed = (response.victim_pid, *response.also_killed_pids) if response.victim_pid else ()
        return OomVerdict(DECISIONS.get(response.decision, "give_up"), killed, response.message)
