"""The MMU service's configuration: the machine's profile and where zone is."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from memsim.profiles.loader import MachineProfile
from memsim.profiles.sizes import parse_size
from memsim.runtime.config import ConfigError, peer_address
from memsim.services.zone.config import ZoneConfig, parse_node_addresses


@dataclass(frozen=True)
class MmuConfig:
    profile: MachineProfile
    zone_address: str
    seed: int = 0
    swap_bytes: int = 0
    data_dir: Path = Path(tempfile.gettempdir()) / f"memsim-{os.getuid()}-data"
    swappiness: int = 60  # vm.swappiness
    # Where the slab service is; None: the MMU keeps no kernel objects there.
    slab_address: str | None = None
    # How often the commit check's copy of the zone's and slab's counters is
    # refreshed, in milliseconds; 0: never (the boot values stay).
    counters_refresh_ms: int = 1000
    # The policy service: sysctls to follow, and to tell where the MMU is (the
    # OOM killer's tasks). None: the MMU's boot sysctls, and no OOM killer.
    policy_address: str | None = None
    # A machine split by node: each node's zone instance (node -> host:port);
    # empty: the one zone at zone_address.
    zone_nodes: dict[int, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> MmuConfig:
        """The zone's profile variables, MEMSIM_ZONE_ADDR, MEMSIM_SEED,
        MEMSIM_SWAP (size of the swap area, default half of RAM),
        MEMSIM_DATA_DIR (where the swap file lives) and MEMSIM_SLAB_ADDR (the
        slab service for task_struct, mm_struct and vm_area_struct; unset:
        none) and MEMSIM_COUNTERS_REFRESH_MS (how often the zone's and the
        slab's counters that the commit check reads are refreshed, default
        1000; 0: never) and MEMSIM_POLICY_ADDR (unset: no policy service);
        MEMSIM_ZONE_NODES ("0=host:port,1=host:port") instead of
        MEMSIM_ZONE_ADDR for a machine with a zone instance per node."""
        env = os.environ if env is None else env
        refresh = env.get("MEMSIM_COUNTERS_REFRESH_MS", "1000")
        if not refresh.isdigit():
            raise ConfigError(f"MEMSIM_COUNTERS_REFRESH_MS={refresh!r} is not a number of ms")
        profile = ZoneConfig.from_env(env).profile
        swap = env.get("MEMSIM_SWAP")
        defaults = cls(profile, "")
        return cls(
            profile,
            peer_address("zone", env),
            int(env.get("MEMSIM_SEED", "0")),
            parse_size(swap) if swap else profile.mem_bytes // 2 if profile.mmu else 0,
            Path(env["MEMSIM_DATA_DIR"]) if env.get("MEMSIM_DATA_DIR") else defaults.data_dir,
            slab_address=peer_address("slab", env) if env.get("MEMSIM_SLAB_ADDR") else None,
            counters_refresh_ms=int(refresh),
            policy_address=peer_address("policy", env) if env.get("MEMSIM_POLICY_ADDR") else None,
            zone_nodes=parse_node_addresses(env.get("MEMSIM_ZONE_NODES", ""), "MEMSIM_ZONE_NODES"),
        )
