"""The policy service's configuration from the environment, and who is root:
MEMSIM_ADMIN_TOKEN, MEMSIM_ALLOW_EMPTY_ADMIN_TOKEN, or neither."""

from __future__ import annotations

import pytest

from memsim.runtime.config import ConfigError
from memsim.services.policy.config import PolicyConfig
from memsim.services.policy.core import Policy
from memsim.services.policy.errors import NotPermitted
from memsim.services.policy.ports import Unconnected
from memsim.services.policy.service import PolicyService

BASE = {"MEMSIM_PROFILE": "x86_32", "MEMSIM_MEM": "64M", "MEMSIM_SWAP": "8M"}


def service(config: PolicyConfig) -> PolicyService:
    return PolicyService(
        Policy(config.boot_sysctls()),
        Unconnected(),
        admin_token=config.admin_token,
        allow_empty_admin_token=config.allow_empty_admin_token,
        machine=config.machine,
    )


def test_defaults_from_the_environment() -> None:
    config = PolicyConfig.from_env(BASE)
    assert config.mmu_address is None  # until the MMU says where it is (ConnectTaskSource)
    assert config.hz == 250
    assert config.swap_bytes == 8 << 20
    assert config.machine.total_swap_pages == (8 << 20) // 4096
    assert config.profile.mem_bytes == 64 << 20
    env = {**BASE, "MEMSIM_MMU_ADDR": "10.0.0.5:7000", "MEMSIM_HZ": "1000"}
    config = PolicyConfig.from_env(env)
    assert (config.mmu_address, config.hz) == ("10.0.0.5:7000", 1000)


@pytest.mark.parametrize(
    "env",
    [
        {"MEMSIM_HZ": "fast"},
        {"MEMSIM_HZ": "5"},
        {"MEMSIM_MMU_ADDR": "nowhere"},
        {"MEMSIM_ALLOW_EMPTY_ADMIN_TOKEN": "maybe"},
        {"MEMSIM_ADMIN_TOKEN": "t", "MEMSIM_ALLOW_EMPTY_ADMIN_TOKEN": "1"},
    ],
)
def test_bad_environment_is_a_config_error(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        PolicyConfig.from_env({**BASE, **env})


def test_with_a_token_only_that_token_is_root() -> None:
    config = PolicyConfig.from_env({**BASE, "MEMSIM_ADMIN_TOKEN": "s3cret"})
    assert (config.admin_token, config.allow_empty_admin_token) == ("s3cret", False)
    s = service(config)
    assert s.is_admin("s3cret")
    assert not s.is_admin("")
    assert not s.is_admin("s3cre")
    assert not s.is_admin("s3cret ")
    with pytest.raises(NotPermitted, match="wrong admin token"):
        s.reboot("guess")


def test_allowing_the_empty_token_makes_anyone_root() -> None:
    config = PolicyConfig.from_env({**BASE, "MEMSIM_ALLOW_EMPTY_ADMIN_TOKEN": "1"})
    assert (config.admin_token, config.allow_empty_admin_token) == (None, True)
    s = service(config)
    assert s.is_admin("")
    assert not s.is_admin("anything")


def test_with_neither_nobody_is_root() -> None:
    config = PolicyConfig.from_env(BASE)
    assert (config.admin_token, config.allow_empty_admin_token) == (None, False)
    s = service(config)
    assert not s.is_admin("")
    with pytest.raises(NotPermitted, match="no admin credential is configured"):
        s.reboot("")
    with pytest.raises(NotPermitted):
        s.set_sysctls(["vm.swappiness=1"], [], "")


def test_an_empty_token_in_code_is_refused() -> None:
    config = PolicyConfig.from_env(BASE)
    with pytest.raises(ConfigError):
        PolicyConfig(config.profile, config.mmu_address, "")
    with pytest.raises(ValueError, match="must not be empty"):
        PolicyService(
            Policy(config.boot_sysctls()), Unconnected(), admin_token="", machine=config.machine
        )
