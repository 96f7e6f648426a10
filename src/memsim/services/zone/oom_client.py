"""The OOM killer as the zone reaches it: the policy service over gRPC."""

from __future__ import annotations

import grpc

from memsim.policy.v1 import policy_pb2 as policy_pb
from memsim.services.policy.client import PolicyClient
from memsim.services.zone.errors import KillerUnavailable
from memsim.services.zone.ports import OomVerdict

PANIC_PREFIX = "Kernel panic - not syncing"

DECISIONS = {
    policy_pb.OOM_DECISION_KILLED: "killed",
    policy_pb.OOM_DECISION_WAIT: "wait",
    policy_pb.OOM_DECISION_PANIC: "panic",
    policy_pb.OOM_DECISION_GIVE_UP: "give_up",
}


class PolicyOom:
    def __init__(self, client: PolicyClient, nodes: int) -> None:
        self.client = client
        self.nodes = nodes

    async def out_of_memory(
        self, gfp_mask: int, order: int, pid: int, nodes: tuple[int, ...]
    ) -> OomVerdict:
        # constrained_alloc: a task held to some of the machine's nodes (its
        # cpuset) is an OOM in that constraint.
        constrained = bool(nodes) and set(range(self.nodes)) - set(nodes)
        try:
            response = await self.client.out_of_memory(
                gfp_mask,
                order,
                pid,
                policy_pb.CONSTRAINT_CPUSET if constrained else policy_pb.CONSTRAINT_NONE,
                nodes if constrained else (),
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
