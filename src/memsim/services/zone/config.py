"""The zone service's configuration: the machine it boots and where buddy is."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from memsim.profiles.loader import MachineProfile, load_profile
from memsim.runtime.config import peer_address


@dataclass(frozen=True)
class ZoneConfig:
    profile: MachineProfile
    buddy_address: str
    # The policy service: sysctls to follow and the OOM killer to call.
    # None: the zone runs alone (its defaults, and no OOM killer).
    policy_address: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ZoneConfig:
        """MEMSIM_PROFILE, MEMSIM_MEM, MEMSIM_PAGE_SIZE, MEMSIM_MAX_ORDER,
        MEMSIM_BUDDY_ADDR and MEMSIM_POLICY_ADDR (unset: no policy service)."""
        env = os.environ if env is None else env
        max_order = env.get("MEMSIM_MAX_ORDER")
        profile = load_profile(
            env.get("MEMSIM_PROFILE", "x86_32"),
            mem=env.get("MEMSIM_MEM") or None,
            page_size=env.get("MEMSIM_PAGE_SIZE") or None,
            max_order=int(max_order) if max_order else None,
        )
        policy = peer_address("policy", env) if env.get("MEMSIM_POLICY_ADDR") else None
        return cls(profile, peer_address("buddy", env), policy)
