"""The slab service's configuration: the machine's profile and where zone is."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from memsim.profiles.loader import MachineProfile
from memsim.runtime.config import peer_address
from memsim.services.zone.config import ZoneConfig


@dataclass(frozen=True)
class SlabConfig:
    profile: MachineProfile
    zone_address: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SlabConfig:
        """The zone's profile variables and MEMSIM_ZONE_ADDR."""
        env = os.environ if env is None else env
        return cls(ZoneConfig.from_env(env).profile, peer_address("zone", env))
