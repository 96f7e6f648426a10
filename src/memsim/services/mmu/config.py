"""The MMU service's configuration: the machine's profile and where zone is."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from memsim.profiles.loader import MachineProfile
from memsim.runtime.config import peer_address
from memsim.services.zone.config import ZoneConfig


@dataclass(frozen=True)
class MmuConfig:
    profile: MachineProfile
    zone_address: str
    seed: int = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> MmuConfig:
        """The zone's profile variables, MEMSIM_ZONE_ADDR and MEMSIM_SEED."""
        env = os.environ if env is None else env
        profile = ZoneConfig.from_env(env).profile
        return cls(profile, peer_address("zone", env), int(env.get("MEMSIM_SEED", "0")))
