"""The OOM killer as the zone reaches it: the policy service over gRPC."""

from __future__ import annotations

from memsim.policy.v1 import policy_pb2 as policy_pb
from memsim.services.policy.client import PolicyClient
from memsim.services.zone.ports import OomVerdict

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
        response = await self.client.out_of_memory(
            gfp_mask,
            order,
            pid,
            policy_pb.CONSTRAINT_CPUSET if constrained else policy_pb.CONSTRAINT_NONE,
            nodes if constrained else (),
        )
        killed = (response.victim_pid, *response.also_killed_pids) if response.victim_pid else ()
        return OomVerdict(DECISIONS.get(response.decision, "give_up"), killed, response.message)
