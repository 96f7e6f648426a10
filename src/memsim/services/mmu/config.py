"""The MMU service's configuration: the machine's profile and where zone is."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from memsim.profiles.loader import MachineProfile
from memsim.profiles.sizes import parse_size
from memsim.runtime.config import peer_address
from memsim.services.zone.config import ZoneConfig


@dataclass(frozen=True)
class MmuConfig:
    profile: MachineProfile
    zone_address: str
    seed: int = 0
    swap_bytes: int = 0
    data_dir: Path = Path(tempfile.gettempdir()) / f"memsim-{os.getuid()}-data"
    swappiness: int = 60  # vm.swappiness

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> MmuConfig:
        """The zone's profile variables, MEMSIM_ZONE_ADDR, MEMSIM_SEED,
        MEMSIM_SWAP (size of the swap area, default half of RAM) and
        MEMSIM_DATA_DIR (where the swap file lives)."""
        env = os.environ if env is None else env
        profile = ZoneConfig.from_env(env).profile
        swap = env.get("MEMSIM_SWAP")
        defaults = cls(profile, "")
        return cls(
            profile,
            peer_address("zone", env),
            int(env.get("MEMSIM_SEED", "0")),
            parse_size(swap) if swap else profile.mem_bytes // 2 if profile.mmu else 0,
            Path(env["MEMSIM_DATA_DIR"]) if env.get("MEMSIM_DATA_DIR") else defaults.data_dir,
        )
