"""A machine started with a zone and a buddy service per node (`memsim up
--split-nodes`: zone-0, zone-1, buddy-0, buddy-1 in the machine record), read
as one: the per-node answers merged (buddyinfo and zoneinfo by node, vmstat
summed), so that /proc files and plots show every node as with one service."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import grpc

from memsim.buddy.v1 import buddy_pb2 as pb
from memsim.clients.cli.state import MachineState
from memsim.profiles.loader import MachineProfile, load_profile
from memsim.services.buddy.client import BuddyClient
from memsim.services.zone.client import ZoneClient
from memsim.services.zone.router import ZoneRouter

_PER_NODE = re.compile(r"(zone|buddy)-(\d+)")


def node_services(state: MachineState, kind: str) -> dict[int, str]:
    """node -> address of the machine's per-node `kind` services (none: not split)."""
    found: dict[int, str] = {}
    for name, record in state.services.items():
        match = _PER_NODE.fullmatch(name)
        if match is not None and match.group(1) == kind:
            found[int(match.group(2))] = record.address
    return dict(sorted(found.items()))


def is_split(state: MachineState | None) -> bool:
    return state is not None and bool(node_services(state, "zone"))


def boot_profile(state: MachineState) -> MachineProfile:
    """The profile the machine was booted with (its record's boot variables)."""
    env = state.boot_env
    max_order = env.get("MEMSIM_MAX_ORDER")
    return load_profile(
        env.get("MEMSIM_PROFILE", state.profile),
        mem=env.get("MEMSIM_MEM") or None,
        page_size=env.get("MEMSIM_PAGE_SIZE") or None,
        max_order=int(max_order) if max_order else None,
    )


class BuddyNodes:
    """What the CLI reads of buddy, over one buddy service per node."""

    def __init__(self, clients: Sequence[BuddyClient]) -> None:
        self.clients = list(clients)

    async def buddyinfo(self) -> list[pb.ArenaBuddyInfo]:
        rows = [r for c in self.clients for r in await c.buddyinfo()]
        return sorted(rows, key=lambda r: r.arena.node)

    async def fragmentation(self) -> list[pb.ArenaFragmentation]:
        rows = [r for c in self.clients for r in await c.fragmentation()]
        return sorted(rows, key=lambda r: r.arena.node)

    async def free_blocks(self) -> list[pb.ArenaFreeBlocks]:
        rows = [r for c in self.clients for r in await c.free_blocks()]
        return sorted(rows, key=lambda r: r.arena.node)

    async def audit(self) -> pb.AuditResponse:
        merged = pb.AuditResponse(ok=True)
        for client in self.clients:
            report = await client.audit()
            merged.ok = merged.ok and report.ok
            merged.problems.extend(report.problems)
            merged.arenas_checked += report.arenas_checked
            merged.blocks_checked += report.blocks_checked
        return merged


def buddy_over(channels: Sequence[grpc.aio.Channel]) -> BuddyNodes:
    return BuddyNodes([BuddyClient(c) for c in channels])


def zone_over(profile: MachineProfile, channels: Mapping[int, grpc.aio.Channel]) -> ZoneRouter:
    return ZoneRouter(profile, {node: ZoneClient(c) for node, c in channels.items()})
