"""The zone service's configuration: the machine it boots and where buddy is."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from memsim.profiles.loader import MachineProfile, load_profile
from memsim.runtime.config import ConfigError, parse_address, peer_address


@dataclass(frozen=True)
class ZoneConfig:
    profile: MachineProfile
    buddy_address: str
    # The policy service: sysctls to follow and the OOM killer to call.
    # None: the zone runs alone (its defaults, and no OOM killer).
    policy_address: str | None = None
    # A machine split by node: this instance owns node `node` only (its
    # zones, arenas and kswapd); None: every node of the profile.
    node: int | None = None
    # The zone instances of the other nodes (node -> host:port), asked when
    # this instance's zonelist reaches their zones and sent frees of their pfns.
    peers: dict[int, str] = field(default_factory=dict)
    # False: no kswapd (direct reclaim only), for runs compared call by call
    # (MEMSIM_KSWAPD=0). The kernel always has one.
    kswapd: bool = True

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ZoneConfig:
        """MEMSIM_PROFILE, MEMSIM_MEM, MEMSIM_PAGE_SIZE, MEMSIM_MAX_ORDER,
        MEMSIM_BUDDY_ADDR and MEMSIM_POLICY_ADDR (unset: no policy service);
        for a machine split by node MEMSIM_ZONE_NODE (the node this instance
        owns) and MEMSIM_ZONE_PEERS ("0=host:port,1=host:port": the zone
        instances of the nodes, its own may be listed too)."""
        env = os.environ if env is None else env
        max_order = env.get("MEMSIM_MAX_ORDER")
        profile = load_profile(
            env.get("MEMSIM_PROFILE", "x86_32"),
            mem=env.get("MEMSIM_MEM") or None,
            page_size=env.get("MEMSIM_PAGE_SIZE") or None,
            max_order=int(max_order) if max_order else None,
        )
        policy = peer_address("policy", env) if env.get("MEMSIM_POLICY_ADDR") else None
        node_value = env.get("MEMSIM_ZONE_NODE", "")
        node: int | None = None
        if node_value:
            if not node_value.isdigit() or int(node_value) >= profile.nodes:
                raise ConfigError(
                    f"MEMSIM_ZONE_NODE={node_value!r} is not a node of {profile.name} "
                    f"(0..{profile.nodes - 1})"
                )
            node = int(node_value)
        peers = parse_node_addresses(env.get("MEMSIM_ZONE_PEERS", ""), "MEMSIM_ZONE_PEERS")
        bad = sorted(n for n in peers if n >= profile.nodes)
        if bad:
            raise ConfigError(f"MEMSIM_ZONE_PEERS names nodes {bad} that {profile.name} lacks")
        if peers and node is None:
            raise ConfigError("MEMSIM_ZONE_PEERS needs MEMSIM_ZONE_NODE")
        if node is not None:
            peers.pop(node, None)
        kswapd = env.get("MEMSIM_KSWAPD", "1")
        if kswapd not in ("0", "1"):
            raise ConfigError(f"MEMSIM_KSWAPD={kswapd!r} is not 0 or 1")
        return cls(profile, peer_address("buddy", env), policy, node, peers, kswapd == "1")


def parse_node_addresses(value: str, variable: str) -> dict[int, str]:
    """ "0=host:port,1=host:port" as {0: "host:port", 1: "host:port"}."""
    result: dict[int, str] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        node, sep, address = item.partition("=")
        if not sep or not node.strip().isdigit():
            raise ConfigError(f"{variable}: {item!r} is not node=host:port")
        parse_address(address.strip(), variable)
        if int(node) in result:
            raise ConfigError(f"{variable}: node {int(node)} is given twice")
        result[int(node)] = address.strip()
    return result
