"""The policy service's configuration: the machine it decides for, where the
MMU is, the admin credential and the simulated HZ.

The admin credential (root: sysctl -w and -p, reboot, memory cgroups, and a
write of /proc/PID/oom_adj as root) is chosen at start, in this order:

- MEMSIM_ADMIN_TOKEN=<token>: a call is root when it carries exactly this
  token (compared with hmac.compare_digest); every other token, the empty
  one included, is refused with PERMISSION_DENIED.
- MEMSIM_ALLOW_EMPTY_ADMIN_TOKEN=1 and no MEMSIM_ADMIN_TOKEN: the empty
  token is root's, so that any caller may make root's calls (tests, a
  single-user machine). A non-empty token is still refused: a caller that
  sends one expects a machine that checks it.
- neither: no token is root's; every root-only call is refused (the service
  logs a warning at start). The service never makes up a token of its own.

Setting both is a configuration error, not a silent choice.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

from memsim.profiles.loader import MachineProfile
from memsim.runtime.config import ConfigError, peer_address
from memsim.runtime.logs import get_logger
from memsim.services.mmu.config import MmuConfig
from memsim.services.policy.badness import HZ, shift_hz
from memsim.services.policy.errors import BadValue
from memsim.services.policy.overcommit import MemState
from memsim.services.policy.sysctl import Sysctls
from memsim.services.zone.machine import Machine

# Values a boolean variable may take.
FLAGS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False, "": False}


@dataclass(frozen=True)
class MachineFacts:
    """What the killer and the commit check need of the machine, fixed at boot."""

    page_size: int
    totalram_pages: int  # managed pages: MemTotal
    total_swap_pages: int
    nodes: int
    node_spanned_pages: dict[int, int] = field(default_factory=dict)

    def mem_state(self) -> MemState:
        return MemState(self.totalram_pages, self.total_swap_pages, page_size=self.page_size)


@dataclass(frozen=True)
class PolicyConfig:
    profile: MachineProfile
    # None: unknown until the MMU says where it is (ConnectTaskSource).
    mmu_address: str | None
    # The admin credential: root's calls (sysctl -w, reboot, cgroups) carry
    # it. None: no token is accepted (unless allow_empty_admin_token).
    admin_token: str | None
    hz: int = HZ
    # The MMU's swap area: CommitLimit counts it, and the modern killer's
    # totalpages. Fixed at boot, as memsim has no swapon.
    swap_bytes: int = 0
    # With no admin_token: the empty token is root's (see the module's text).
    allow_empty_admin_token: bool = False

    def __post_init__(self) -> None:
        try:
            shift_hz(self.hz)
        except BadValue as exc:
            raise ConfigError(f"MEMSIM_HZ={self.hz}: {exc}") from None
        if self.admin_token == "":
            raise ConfigError(
                "the admin token must not be empty: leave it unset and allow the empty "
                "token (MEMSIM_ALLOW_EMPTY_ADMIN_TOKEN=1) instead"
            )
        if self.admin_token is not None and self.allow_empty_admin_token:
            raise ConfigError(
                "MEMSIM_ADMIN_TOKEN and MEMSIM_ALLOW_EMPTY_ADMIN_TOKEN=1 contradict each "
                "other: set one of them"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PolicyConfig:
        """The zone's profile variables (MEMSIM_PROFILE, MEMSIM_MEM,
        MEMSIM_PAGE_SIZE, MEMSIM_MAX_ORDER), the MMU's MEMSIM_SWAP,
        MEMSIM_MMU_ADDR, MEMSIM_ADMIN_TOKEN and MEMSIM_ALLOW_EMPTY_ADMIN_TOKEN
        (see the module's text) and MEMSIM_HZ (default 250)."""
        env = os.environ if env is None else env
        # The MMU's own reading, so that both agree on RAM and swap.
        mmu = MmuConfig.from_env(env)
        token = env.get("MEMSIM_ADMIN_TOKEN") or None
        allow_text = env.get("MEMSIM_ALLOW_EMPTY_ADMIN_TOKEN", "0").strip().lower()
        if allow_text not in FLAGS:
            raise ConfigError(f"MEMSIM_ALLOW_EMPTY_ADMIN_TOKEN={allow_text!r} is not 0 or 1")
        allow_empty = FLAGS[allow_text]
        if token is None and not allow_empty:
            get_logger("memsim.policy").warning(
                "MEMSIM_ADMIN_TOKEN is unset: no client can make root's calls (sysctl -w, "
                "reboot, cgroups); set it, or MEMSIM_ALLOW_EMPTY_ADMIN_TOKEN=1 to let anyone"
            )
        hz_text = env.get("MEMSIM_HZ", str(HZ))
        if not hz_text.isdigit():
            raise ConfigError(f"MEMSIM_HZ={hz_text!r} is not a number")
        return cls(
            profile=mmu.profile,
            mmu_address=peer_address("mmu", env) if env.get("MEMSIM_MMU_ADDR") else None,
            admin_token=token,
            hz=int(hz_text),
            swap_bytes=mmu.swap_bytes,
            allow_empty_admin_token=allow_empty,
        )

    @cached_property
    def _machine(self) -> Machine:
        # The zone service's own boot computations: the sysctl defaults and
        # the page counts are the same figures the zones show.
        return Machine(self.profile)

    @property
    def machine(self) -> MachineFacts:
        machine = self._machine
        spanned: dict[int, int] = {}
        for zone in machine.zones.values():
            spanned[zone.node] = spanned.get(zone.node, 0) + zone.spanned
        return MachineFacts(
            page_size=self.profile.page_size,
            totalram_pages=sum(z.managed for z in machine.zones.values()),
            total_swap_pages=self.swap_bytes // self.profile.page_size,
            nodes=self.profile.nodes,
            node_spanned_pages=spanned,
        )

    def boot_sysctls(self) -> Sysctls:
        """The vm.* values at boot: min_free_kbytes and lowmem_reserve_ratio as
        the zone computes them, the reserves from free memory at boot."""
        machine = self._machine
        kb = self.profile.page_size // 1024
        return Sysctls(
            min_free_kbytes=machine.min_free_kbytes,
            lowmem_reserve_ratio=machine.lowmem_reserve_ratio,
            free_kbytes=sum(z.managed for z in machine.zones.values()) * kb,
        )
