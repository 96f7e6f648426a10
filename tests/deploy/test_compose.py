"""docker-compose.yml, deploy/Dockerfile and deploy/prometheus/prometheus-compose.yml.

The compose file is checked by docker-compose itself (`config -q`, which
validates it against the compose schema and resolves every variable), then
its rendering (`docker-compose config`) is read: each service's environment
must parse with that service's own config class and point at the compose
service that serves it, in the start order of `memsim up`. The Dockerfile's
build stage is replayed without Docker (there is no engine here): the same
files, the same generator, a wheel that holds what the containers run.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from memsim.clients.cli.machine import SERVICES
from memsim.clients.process.workload import build_parser as workload_parser
from memsim.runtime import healthcheck
from memsim.runtime.config import DEFAULT_PORTS, ServerConfig, parse_address
from memsim.services.mmu.config import MmuConfig
from memsim.services.policy.config import PolicyConfig
from memsim.services.slab.config import SlabConfig
from memsim.services.zone.config import ZoneConfig

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
PROMETHEUS = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana"
DOCKER_COMPOSE = shutil.which("docker-compose")
PROMTOOL = shutil.which("promtool")
INSTALL_HINT = "(apt-get install docker-compose, as .ci/run does)"

# The services each one calls, as its config reads them; policy calls the
# MMU too, but only once the MMU has told it where it is (ConnectTaskSource).
CALLS: dict[str, set[str]] = {
    "buddy": set(),
    "policy": set(),
    "zone": {"buddy", "policy"},
    "slab": {"zone"},
    "mmu": {"zone", "slab", "policy"},
}
# They tell another service where to call them back, with their listen address.
ADVERTISE = {"slab", "mmu"}
MEMSIM_IMAGE_SERVICES = (*SERVICES, "procfs-export", "load")
NODE_EXPORTER_PORT = 9100

needs_compose = pytest.mark.skipif(
    DOCKER_COMPOSE is None, reason=f"docker-compose is not installed {INSTALL_HINT}"
)


def compose_env() -> dict[str, str]:
    """The environment without the variables the file reads: its defaults."""
    return {
        k: v for k, v in os.environ.items() if not k.startswith(("MEMSIM_", "COMPOSE_", "DOCKER_"))
    }


@cache
def rendered() -> dict[str, Any]:
    assert DOCKER_COMPOSE is not None
    out = subprocess.run(
        [DOCKER_COMPOSE, "-f", str(COMPOSE_FILE), "config"],
        cwd=ROOT,
        env=compose_env(),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    data = yaml.safe_load(out)
    assert isinstance(data, dict)
    return data


def service(name: str) -> dict[str, Any]:
    services = rendered()["services"]
    assert name in services, f"no service {name} in docker-compose.yml"
    result: dict[str, Any] = services[name]
    return result


def env_of(name: str) -> dict[str, str]:
    return {k: str(v) for k, v in service(name).get("environment", {}).items()}


def mounts(name: str) -> dict[str, tuple[str, str]]:
    """Container path -> (source, mode) of a service's volumes."""
    result = {}
    for volume in service(name).get("volumes", []):
        source, target, *mode = str(volume).split(":")
        result[target] = (source, mode[0] if mode else "rw")
    return result


# -- the compose file as docker-compose sees it ------------------------------------


@needs_compose
def test_docker_compose_accepts_the_file() -> None:
    assert DOCKER_COMPOSE is not None
    result = subprocess.run(
        [DOCKER_COMPOSE, "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=ROOT,
        env=compose_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no warning, such as an unset variable


@needs_compose
def test_every_service_of_the_deployment_is_there() -> None:
    assert set(rendered()["services"]) == {
        *SERVICES,
        "procfs-export",
        "node-exporter",
        "prometheus",
        "grafana",
        "load",
    }


@needs_compose
@pytest.mark.parametrize("name", MEMSIM_IMAGE_SERVICES)
def test_memsim_containers_run_the_one_image(name: str) -> None:
    s = service(name)
    assert s["image"].startswith("memsim:")
    assert Path(s["build"]["context"]) == ROOT
    assert (ROOT / s["build"]["dockerfile"]).resolve() == DOCKERFILE


@needs_compose
@pytest.mark.parametrize("name", ["node-exporter", "prometheus", "grafana"])
def test_other_images_are_pinned(name: str) -> None:
    image = service(name)["image"]
    assert re.fullmatch(r"[a-z/-]+:v?\d+\.\d+\.\d+", image), image


@needs_compose
@pytest.mark.parametrize("name", SERVICES)
def test_each_service_runs_its_module_and_listens_where_others_reach_it(name: str) -> None:
    s = service(name)
    assert s["command"] == ["python", "-m", f"memsim.services.{name}"]
    # Restarted alone it would boot empty while the others remember it.
    assert s["restart"] == "no"
    grpc_port, metrics_port = DEFAULT_PORTS[name]
    config = ServerConfig.from_env(name, env_of(name))
    host, port = parse_address(config.listen, "listen")
    assert port == grpc_port
    if name in ADVERTISE:
        # The address it registers is its listen address: it must be its own
        # name on the compose network, which resolves to its container.
        assert (host, s["hostname"]) == (name, name)
    else:
        assert host == "0.0.0.0"
    assert config.metrics_listen == f"0.0.0.0:{metrics_port}"


@needs_compose
@pytest.mark.parametrize("name", SERVICES)
def test_peer_addresses_point_at_the_compose_services(name: str) -> None:
    for peer in SERVICES:
        assert env_of(name)[f"MEMSIM_{peer.upper()}_ADDR"] == f"{peer}:{DEFAULT_PORTS[peer][0]}"


@needs_compose
def test_each_services_environment_parses_with_its_own_config() -> None:
    zone = ZoneConfig.from_env(env_of("zone"))
    assert (zone.buddy_address, zone.policy_address) == ("buddy:50053", "policy:50055")
    assert (zone.profile.name, zone.profile.mem_bytes) == ("x86_32", 1 << 30)
    assert SlabConfig.from_env(env_of("slab")).zone_address == "zone:50052"
    mmu = MmuConfig.from_env(env_of("mmu"))
    assert (mmu.zone_address, mmu.slab_address, mmu.policy_address) == (
        "zone:50052",
        "slab:50054",
        "policy:50055",
    )
    assert mmu.swap_bytes == 512 << 20
    # The swap file lives on a volume, not in the container's layer.
    assert str(mmu.data_dir) in mounts("mmu")
    policy = PolicyConfig.from_env(env_of("policy"))
    assert policy.mmu_address == "mmu:50051"
    assert policy.swap_bytes == mmu.swap_bytes
    # Unset, the token is no token: root's calls are refused, not open to all.
    assert (policy.admin_token, policy.allow_empty_admin_token) == (None, False)


@needs_compose
@pytest.mark.parametrize("name", SERVICES)
def test_healthchecks_ask_the_grpc_health_service(name: str) -> None:
    check = service(name)["healthcheck"]
    assert check["test"][:4] == ["CMD", "python", "-m", "memsim.runtime.healthcheck"]
    args = healthcheck.build_parser().parse_args(check["test"][4:])
    (address,) = args.addresses
    host, port = parse_address(address, "healthcheck")
    listen_host, listen_port = parse_address(ServerConfig.from_env(name, env_of(name)).listen, "")
    assert port == listen_port
    assert host == ("127.0.0.1" if listen_host == "0.0.0.0" else listen_host)


@needs_compose
def test_services_start_in_the_order_of_memsim_up_once_their_peers_serve() -> None:
    for position, name in enumerate(SERVICES):
        depends = service(name).get("depends_on", {})
        assert all(d == {"condition": "service_healthy"} for d in depends.values()), name
        assert CALLS[name] <= set(depends), f"{name} starts before a service it calls"
        assert set(depends) <= set(SERVICES[:position]), f"{name} waits for a later service"
    assert set(service("policy")["depends_on"]) == {"buddy"}


# -- procfs, node_exporter, Prometheus, Grafana, the load --------------------------


@needs_compose
def test_node_exporter_reads_the_exported_procfs() -> None:
    export = service("procfs-export")
    assert export["command"] == ["memsim", "procfs", "export", "/export", "--interval", "1s"]
    assert mounts("procfs-export")["/export"] == ("procfs", "rw")
    assert set(export["depends_on"]) == {"mmu"}
    # The memsim command finds every service through MEMSIM_<NAME>_ADDR.
    for peer in SERVICES:
        assert env_of("procfs-export")[f"MEMSIM_{peer.upper()}_ADDR"] == (
            f"{peer}:{DEFAULT_PORTS[peer][0]}"
        )
    exporter = service("node-exporter")
    assert mounts("node-exporter")["/host/proc"] == ("procfs", "ro")
    assert "--path.procfs=/host/proc" in exporter["command"]
    for collector in ("meminfo", "vmstat", "buddyinfo", "zoneinfo", "slabinfo"):
        assert f"--collector.{collector}" in exporter["command"]
    assert "procfs" in rendered()["volumes"]


def _load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def _jobs(config: dict[str, Any]) -> dict[str, list[str]]:
    return {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
        for job in config["scrape_configs"]
    }


@needs_compose
def test_prometheus_scrapes_the_compose_services() -> None:
    prometheus = service("prometheus")
    assert mounts("prometheus")["/etc/prometheus"] == (str(PROMETHEUS), "ro")
    assert "--config.file=/etc/prometheus/prometheus-compose.yml" in prometheus["command"]
    jobs = _jobs(_load_yaml(PROMETHEUS / "prometheus-compose.yml"))
    for name in SERVICES:
        metrics = ServerConfig.from_env(name, env_of(name)).metrics_listen
        assert metrics is not None
        assert jobs[name] == [f"{name}:{parse_address(metrics, '')[1]}"]
    assert jobs["node"] == [f"node-exporter:{NODE_EXPORTER_PORT}"]
    assert set(jobs) == {*SERVICES, "node"}


def test_the_compose_prometheus_config_is_the_one_host_config_with_other_targets() -> None:
    host_config = PROMETHEUS / "prometheus.yml"
    if not host_config.exists():
        pytest.skip("deploy/prometheus/prometheus.yml is not there yet")
    ours, theirs = _load_yaml(PROMETHEUS / "prometheus-compose.yml"), _load_yaml(host_config)
    assert ours["rule_files"] == theirs["rule_files"]
    assert ours["global"] == theirs["global"]
    assert list(_jobs(ours)) == list(_jobs(theirs))


@pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (apt-get install prometheus)"
)
def test_promtool_accepts_the_compose_prometheus_config() -> None:
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "check", "config", str(PROMETHEUS / "prometheus-compose.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@needs_compose
def test_grafana_is_provisioned_with_the_compose_prometheus() -> None:
    grafana = service("grafana")
    assert grafana["environment"]["PROMETHEUS_URL"] == "http://prometheus:9090"
    volumes = mounts("grafana")
    assert volumes["/etc/grafana/provisioning"] == (str(GRAFANA / "provisioning"), "ro")
    (dashboards,) = [t for t, (src, _) in volumes.items() if src == str(GRAFANA / "dashboards")]
    providers = sorted((GRAFANA / "provisioning" / "dashboards").glob("*.y*ml"))
    if not providers:
        pytest.skip("deploy/grafana/provisioning is not there yet")
    paths = {p["options"]["path"] for f in providers for p in _load_yaml(f)["providers"]}
    assert paths == {dashboards}
    sources = (GRAFANA / "provisioning" / "datasources").glob("*.y*ml")
    urls = {d["url"] for f in sources for d in _load_yaml(f)["datasources"]}
    assert urls == {"${PROMETHEUS_URL}"}


@needs_compose
def test_the_load_client_is_bounded_and_waits_for_the_mmu() -> None:
    load = service("load")
    assert load["command"][:3] == ["python", "-m", "memsim.clients.process.workload"]
    args = workload_parser().parse_args(load["command"][3:])
    assert args.mmu == f"mmu:{DEFAULT_PORTS['mmu'][0]}"
    assert 0 < args.processes <= 10_000
    assert 0 < args.seconds <= 3600
    assert load["restart"] == "no"
    assert load["depends_on"] == {"mmu": {"condition": "service_healthy"}}


# -- the image -------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def dev_pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pins = project["project"]["optional-dependencies"]["dev"]
    return dict(pin.split("==", 1) for pin in pins)


def test_the_image_is_python_311_slim_and_runs_as_a_user() -> None:
    steps = dockerfile_instructions()
    args = dict(a.split("=", 1) for word, a in steps if word == "ARG" and "=" in a)
    bases = [a.split()[0] for word, a in steps if word == "FROM"]
    assert bases, "no FROM"
    for base in bases:
        name = re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], base)
        assert name == "python:3.11-slim"
    users = [a for word, a in steps if word == "USER"]
    assert users, "the image runs as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit()
    assert int(uid) != 0  # numeric, so that Kubernetes' runAsNonRoot can check it


def test_the_image_exposes_every_services_ports() -> None:
    exposed = {
        int(p) for word, a in dockerfile_instructions() if word == "EXPOSE" for p in a.split()
    }
    assert exposed == {port for name in SERVICES for port in DEFAULT_PORTS[name]}


def test_the_image_generates_the_code_with_the_projects_pinned_tools() -> None:
    runs = " ".join(a for word, a in dockerfile_instructions() if word == "RUN")
    assert "scripts/gen_protos.py --out src" in runs
    pins = dev_pins()
    for tool in ("grpcio-tools", "mypy-protobuf"):
        assert f"{tool}=={pins[tool]}" in runs


def _ignored(path: str, patterns: list[str]) -> bool:
    return any(
        fnmatch.fnmatch(path, p.strip("/")) or fnmatch.fnmatch(path, p.strip("/") + "/*")
        for p in patterns
    )


def _ignore_in(patterns: list[str]) -> Callable[[str, list[str]], list[str]]:
    def ignore(directory: str, names: list[str]) -> list[str]:
        relative = Path(directory).relative_to(ROOT)
        return [n for n in names if _ignored(str(relative / n), patterns)]

    return ignore


def test_the_image_build_stage_replayed_makes_a_wheel_with_what_the_containers_run(
    tmp_path: Path,
) -> None:
    """The build stage's COPY and RUN steps, without Docker: the files it
    copies (less what .dockerignore leaves out of the context), the
    generator, and a wheel built with the project's own build backend."""
    pytest.importorskip("setuptools")
    ignore = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    steps = dockerfile_instructions()
    build_stage = steps[: [i for i, (w, _) in enumerate(steps) if w == "FROM"][1]]
    context = tmp_path / "context"
    for word, args in build_stage:
        if word != "COPY":
            continue
        *sources, dest = args.split()
        # Docker's rules: a directory's contents go into dest; a file goes
        # into dest when dest ends with "/" (the only form the Dockerfile uses).
        target = context / dest
        for source in sources:
            assert not _ignored(source.rstrip("/"), ignore), f"{source} is not in the context"
            src = ROOT / source
            if src.is_dir():
                shutil.copytree(src, target, dirs_exist_ok=True, ignore=_ignore_in(ignore))
            else:
                assert dest.endswith("/"), args
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy(src, target / src.name)
    assert not list((context / "src").glob("memsim/*/v1")), "generated code leaked into the context"
    subprocess.run(
        [sys.executable, "scripts/gen_protos.py", "--out", "src"],
        cwd=context,
        check=True,
        capture_output=True,
        timeout=120,
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(tmp_path / "wheels"),
            ".",
        ],
        cwd=context,
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = (tmp_path / "wheels").glob("memsim-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for proto in (ROOT / "protos").rglob("*.proto"):
        module = proto.relative_to(ROOT / "protos").with_name(proto.stem + "_pb2.py")
        assert str(module) in names
        assert str(module.with_name(proto.stem + "_pb2_grpc.py")) in names
    for name in SERVICES:
        assert f"memsim/services/{name}/__main__.py" in names
    for path in ("runtime/healthcheck.py", "clients/process/workload.py", "profiles/x86_32.toml"):
        assert f"memsim/{path}" in names
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert (
        "memsim = memsim.clients.cli.main:app" in zipfile.ZipFile(wheel).read(entry_points).decode()
    )
