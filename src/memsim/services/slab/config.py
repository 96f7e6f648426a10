"""The slab service's configuration: the machine's profile and where zone is."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from memsim.profiles.loader import MachineProfile
from memsim.runtime.config import ConfigError, peer_address
from memsim.services.zone.config import ZoneConfig, parse_node_addresses


@dataclass(frozen=True)
class SlabConfig:
    profile: MachineProfile
    zone_address: str
    # A machine split by node: each node's zone instance (node -> host:port);
    # empty: the one zone at zone_address.
    zone_nodes: dict[int, str] = field(default_factory=dict)
    # cache_reap every REAPTIMEOUT_CPUC (2 s); 0: never (a test that compares
    # two runs' pages wants no timer moving them).
    reap_interval_s: float = 2.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SlabConfig:
        """The zone's profile variables and MEMSIM_ZONE_ADDR, or
        MEMSIM_ZONE_NODES ("0=host:port,1=host:port") for a machine with a
        zone instance per node, and MEMSIM_SLAB_REAP_MS (cache_reap's period,
        default 2000; 0: never)."""
        env = os.environ if env is None else env
        reap = env.get("MEMSIM_SLAB_REAP_MS", "2000")
        if not reap.isdigit():
            raise ConfigError(f"MEMSIM_SLAB_REAP_MS={reap!r} is not a number of ms")
        return cls(
            ZoneConfig.from_env(env).profile,
            peer_address("zone", env),
            parse_node_addresses(env.get("MEMSIM_ZONE_NODES", ""), "MEMSIM_ZONE_NODES"),
            reap_interval_s=int(reap) / 1000,
        )
