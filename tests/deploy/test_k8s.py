"""deploy/k8s: the kustomize base and every overlay, rendered by kubectl
kustomize, validated against the Kubernetes schemas (kubernetes-validate,
strict: an unknown field is an error), then read: a Deployment and a Service
per memsim service, native gRPC probes, resources, the profile from a
ConfigMap, the admin token from a Secret, Prometheus annotations, the load Job,
and an environment that each service's own config class accepts."""

from __future__ import annotations

import copy
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from memsim.clients.cli.machine import SERVICES, split_services
from memsim.clients.process.workload import build_parser as workload_parser
from memsim.profiles.loader import load_profile
from memsim.runtime import healthcheck
from memsim.runtime.config import DEFAULT_PORTS, ServerConfig, parse_address
from memsim.services.mmu.config import MmuConfig
from memsim.services.policy.config import PolicyConfig
from memsim.services.slab.config import SlabConfig
from memsim.services.zone.config import ZoneConfig

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="pip install kubernetes-validate==1.37.0 (make install)"
)

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUBECTL = shutil.which("kubectl")
# The oldest and the newest Kubernetes the manifests are checked against.
KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")
KUSTOMIZATIONS = [
    "base",
    *sorted(f"overlays/{p.parent.name}" for p in K8S.glob("overlays/*/kustomization.yaml")),
]
# The services each one calls (what its init container waits for).
CALLS: dict[str, set[str]] = {
    "buddy": set(),
    "policy": {"buddy"},
    "zone": {"buddy", "policy"},
    "slab": {"zone"},
    "mmu": {"zone", "slab", "policy"},
}
# The overlays that run a zone and a buddy per node (zone-0, buddy-0, ...),
# and how many nodes.
SPLIT_NODES = {"overlays/numa": 2}
# They register their listen address with another service: it must be the pod's IP.
ADVERTISE = {"slab", "mmu"}
POD_IP = "10.1.2.3"

pytestmark = pytest.mark.skipif(
    KUBECTL is None,
    reason="kubectl is not installed (its `kubectl kustomize` renders deploy/k8s offline: "
    "https://kubernetes.io/docs/tasks/tools/)",
)

Resource = dict[str, Any]


def services_of(kustomization: str) -> tuple[str, ...]:
    """The memsim services a kustomization runs, in start order."""
    nodes = SPLIT_NODES.get(kustomization)
    return SERVICES if nodes is None else tuple(split_services(nodes))


def kind_of(name: str) -> str:
    """zone-1 -> zone: the service an instance runs."""
    return name.partition("-")[0]


def calls_of(kustomization: str) -> dict[str, set[str]]:
    """CALLS, for a split kustomization with each node's zone and buddy."""
    nodes = SPLIT_NODES.get(kustomization)
    if nodes is None:
        return CALLS
    zones = {f"zone-{n}" for n in range(nodes)}
    calls: dict[str, set[str]] = {f"buddy-{n}": set() for n in range(nodes)}
    calls.update({f"zone-{n}": {f"buddy-{n}", "policy"} for n in range(nodes)})
    calls["policy"] = {f"buddy-{n}" for n in range(nodes)}
    calls["slab"] = zones
    calls["mmu"] = zones | {"slab", "policy"}
    return calls


# Every (kustomization, memsim service instance) pair.
INSTANCES = [(k, name) for k in KUSTOMIZATIONS for name in services_of(k)]


@cache
def render(kustomization: str) -> tuple[Resource, ...]:
    assert KUBECTL is not None
    out = subprocess.run(
        [KUBECTL, "kustomize", str(K8S / kustomization)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return tuple(doc for doc in yaml.safe_load_all(out) if doc)


def find(resources: tuple[Resource, ...], kind: str, name: str) -> Resource:
    found = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
    assert len(found) == 1, f"{len(found)} {kind}/{name}"
    return found[0]


def generated(resources: tuple[Resource, ...], kind: str, name: str) -> Resource:
    """A ConfigMap or Secret from a kustomize generator (name-hash)."""
    found = [
        r
        for r in resources
        if r["kind"] == kind and r["metadata"]["name"].rsplit("-", 1)[0] == name
    ]
    assert len(found) == 1, f"{len(found)} {kind}/{name}"
    return found[0]


def pod(resources: tuple[Resource, ...], name: str) -> Resource:
    spec: Resource = find(resources, "Deployment", f"memsim-{name}")["spec"]["template"]
    return spec


def container(resources: tuple[Resource, ...], name: str) -> Resource:
    # A node's instance (zone-1) runs its service's container (zone).
    kind = name.partition("-")[0]
    (main,) = [c for c in pod(resources, name)["spec"]["containers"] if c["name"] == kind]
    result: Resource = main
    return result


def container_env(resources: tuple[Resource, ...], c: Resource) -> dict[str, str]:
    """What the container's environment will be: its ConfigMaps and Secrets,
    then its own variables, $(VAR) expanded as the kubelet expands them."""
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        ref = source["configMapRef"]["name"]
        env.update(find(resources, "ConfigMap", ref)["data"])
    for var in c.get("env", []):
        if "value" in var:
            value = var["value"]
            for name, known in env.items():
                value = value.replace(f"$({name})", known)
            env[var["name"]] = value
        elif "fieldRef" in var["valueFrom"]:
            assert var["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
            env[var["name"]] = POD_IP
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            secret = find(resources, "Secret", ref["name"])
            assert ref["key"] in secret["data"]
            env[var["name"]] = ""  # base64 of whatever the overlay put there
    return env


# -- the schemas --------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_resource_validates_against_the_kubernetes_schemas(
    kustomization: str, version: str
) -> None:
    resources = render(kustomization)
    assert resources
    for resource in resources:
        what = f"{resource['kind']}/{resource['metadata']['name']}"
        try:
            kubernetes_validate.validate(resource, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{kustomization}: {what} against {version}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            pytest.fail(f"{kustomization}: {what}: {exc.message}")


def test_the_validator_rejects_what_kubernetes_would() -> None:
    """The check above is worth something: strict mode refuses an unknown
    field, and a probe's grpc port must be a number."""
    deployment = copy.deepcopy(find(render("base"), "Deployment", "memsim-buddy"))
    kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)
    typo = copy.deepcopy(deployment)
    typo["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grcp"] = {"port": 1}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, KUBERNETES_VERSIONS[0], strict=True)
    named = copy.deepcopy(deployment)
    named["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["grpc"]["port"] = "grpc"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(named, KUBERNETES_VERSIONS[0], strict=True)


# -- what the manifests say ------------------------------------------------------------


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_one_deployment_and_one_service_per_memsim_service(kustomization: str) -> None:
    resources = render(kustomization)
    deployments = {r["metadata"]["name"] for r in resources if r["kind"] == "Deployment"}
    services = {r["metadata"]["name"] for r in resources if r["kind"] == "Service"}
    names = services_of(kustomization)
    assert deployments == services == {f"memsim-{name}" for name in names}
    for name in names:
        grpc_port, metrics_port = DEFAULT_PORTS[kind_of(name)]
        deployment = find(resources, "Deployment", f"memsim-{name}")
        # One instance, never two at once: the state is in its memory.
        assert deployment["spec"]["replicas"] == 1
        assert deployment["spec"]["strategy"] == {"type": "Recreate"}
        labels = pod(resources, name)["metadata"]["labels"]
        service = find(resources, "Service", f"memsim-{name}")
        assert service["spec"]["selector"].items() <= labels.items()
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ports = {p["name"]: p["containerPort"] for p in container(resources, name)["ports"]}
        assert ports == {"grpc": grpc_port, "metrics": metrics_port}
        service_ports = {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]}
        assert service_ports == {
            "grpc": (grpc_port, "grpc"),
            "metrics": (metrics_port, "metrics"),
        }


@pytest.mark.parametrize(("kustomization", "name"), INSTANCES)
def test_probes_are_native_grpc_health_checks(kustomization: str, name: str) -> None:
    main = container(render(kustomization), name)
    for probe in ("readinessProbe", "livenessProbe"):
        assert main[probe]["grpc"] == {"port": DEFAULT_PORTS[kind_of(name)][0]}, probe
        assert set(main[probe]) & {"httpGet", "tcpSocket", "exec"} == set()


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_container_has_requests_and_limits(kustomization: str) -> None:
    resources = render(kustomization)
    templates = [pod(resources, name) for name in services_of(kustomization)]
    templates.append(find(resources, "Job", "memsim-load")["spec"]["template"])
    for template in templates:
        spec = template["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        for c in [*spec.get("initContainers", []), *spec["containers"]]:
            for kind in ("requests", "limits"):
                assert set(c["resources"][kind]) == {"cpu", "memory"}, (c["name"], kind)
            assert c["securityContext"]["allowPrivilegeEscalation"] is False


@pytest.mark.parametrize(("kustomization", "name"), INSTANCES)
def test_prometheus_scrapes_every_pod(kustomization: str, name: str) -> None:
    annotations = pod(render(kustomization), name)["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(DEFAULT_PORTS[kind_of(name)][1])
    assert annotations["prometheus.io/path"] == "/metrics"


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_the_profile_comes_from_a_configmap_and_the_token_from_a_secret(
    kustomization: str,
) -> None:
    resources = render(kustomization)
    profile = generated(resources, "ConfigMap", "memsim-profile")
    for key in ("MEMSIM_PROFILE", "MEMSIM_MEM", "MEMSIM_PAGE_SIZE", "MEMSIM_MAX_ORDER"):
        assert key in profile["data"]
    assert "MEMSIM_SWAP" in profile["data"]
    secret = generated(resources, "Secret", "memsim-admin")
    for name in services_of(kustomization):
        refs = [s["configMapRef"]["name"] for s in container(resources, name)["envFrom"]]
        assert profile["metadata"]["name"] in refs
        from_secret = [
            v["valueFrom"]["secretKeyRef"]
            for v in container(resources, name).get("env", [])
            if "secretKeyRef" in v.get("valueFrom", {})
        ]
        # Only the policy service checks root's credential.
        expected = (
            [{"name": secret["metadata"]["name"], "key": "MEMSIM_ADMIN_TOKEN"}]
            if name == "policy"
            else []
        )
        assert from_secret == expected


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_each_services_environment_parses_and_points_at_the_services(
    kustomization: str,
) -> None:
    resources = render(kustomization)
    names = services_of(kustomization)
    envs = {name: container_env(resources, container(resources, name)) for name in names}
    for name, env in envs.items():
        config = ServerConfig.from_env(kind_of(name), env)
        host, port = parse_address(config.listen, "listen")
        assert port == DEFAULT_PORTS[kind_of(name)][0]
        # A service that registers its listen address must listen on an
        # address other pods can dial.
        assert host == (POD_IP if name in ADVERTISE else "0.0.0.0")
        assert config.metrics_listen == f"0.0.0.0:{DEFAULT_PORTS[kind_of(name)][1]}"
    addresses = {f"memsim-{n}:{DEFAULT_PORTS[kind_of(n)][0]}" for n in names}
    nodes = SPLIT_NODES.get(kustomization)
    slab_config = SlabConfig.from_env(envs["slab"])
    mmu = MmuConfig.from_env(envs["mmu"])
    if nodes is None:
        zone = ZoneConfig.from_env(envs["zone"])
        assert {zone.buddy_address, zone.policy_address} <= addresses
        assert zone.node is None
        assert slab_config.zone_address in addresses
        assert mmu.zone_address in addresses
        assert slab_config.zone_nodes == mmu.zone_nodes == {}
    else:
        # Each node's zone owns its node, over its node's buddy, and knows
        # the other nodes' zones; the slab and the MMU know every node's.
        by_node = {n: f"memsim-zone-{n}:{DEFAULT_PORTS['zone'][0]}" for n in range(nodes)}
        for n in range(nodes):
            zone = ZoneConfig.from_env(envs[f"zone-{n}"])
            assert zone.node == n
            assert zone.buddy_address == f"memsim-buddy-{n}:{DEFAULT_PORTS['buddy'][0]}"
            assert zone.policy_address in addresses
            assert zone.peers == {m: a for m, a in by_node.items() if m != n}
        assert slab_config.zone_nodes == mmu.zone_nodes == by_node
    assert {mmu.slab_address, mmu.policy_address} <= addresses
    policy = PolicyConfig.from_env(envs["policy"])
    assert policy.mmu_address in addresses
    assert policy.profile == zone.profile == mmu.profile
    # The swap file is on a volume of the pod, large enough for the swap area.
    mounts = {m["mountPath"]: m["name"] for m in container(resources, "mmu")["volumeMounts"]}
    volume_name = mounts[str(mmu.data_dir)]
    (volume,) = [v for v in pod(resources, "mmu")["spec"]["volumes"] if v["name"] == volume_name]
    size = volume["emptyDir"]["sizeLimit"]
    assert size.endswith("Gi")
    assert int(size[:-2]) << 30 >= mmu.swap_bytes


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_services_wait_for_the_ones_they_call_in_the_start_order(kustomization: str) -> None:
    resources = render(kustomization)
    names = services_of(kustomization)
    calls = calls_of(kustomization)
    for position, name in enumerate(names):
        waits: set[str] = set()
        for init in pod(resources, name)["spec"].get("initContainers", []):
            assert init["command"][:3] == ["python", "-m", "memsim.runtime.healthcheck"]
            args = healthcheck.build_parser().parse_args(init["command"][3:])
            assert args.wait > 0
            for address in args.addresses:
                host, port = parse_address(address, "init")
                peer = host.removeprefix("memsim-")
                assert port == DEFAULT_PORTS[kind_of(peer)][0]
                waits.add(peer)
        assert waits == calls[name], name
        assert waits <= set(names[:position])


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_the_load_job_runs_a_bounded_workload_against_the_mmu(kustomization: str) -> None:
    job = find(render(kustomization), "Job", "memsim-load")
    spec = job["spec"]["template"]["spec"]
    assert spec["restartPolicy"] == "Never"
    (load,) = spec["containers"]
    assert load["command"][:3] == ["python", "-m", "memsim.clients.process.workload"]
    args = workload_parser().parse_args(load["command"][3:])
    assert args.mmu == f"memsim-mmu:{DEFAULT_PORTS['mmu'][0]}"
    assert 0 < args.processes <= 10_000
    assert 0 < args.seconds < job["spec"]["activeDeadlineSeconds"]
    assert args.wait > 0


def test_the_base_boots_the_machine_of_memsim_up() -> None:
    data = generated(render("base"), "ConfigMap", "memsim-profile")["data"]
    profile = load_profile(
        data["MEMSIM_PROFILE"],
        mem=data["MEMSIM_MEM"],
        page_size=data["MEMSIM_PAGE_SIZE"],
        max_order=int(data["MEMSIM_MAX_ORDER"]),
    )
    assert profile == load_profile("x86_32")


def test_the_numa_overlay_runs_a_zone_and_buddy_pair_per_node() -> None:
    """The numa profile's two nodes, each with its own zone and buddy
    deployment and Service (memsim-zone-0/memsim-buddy-0, memsim-zone-1/
    memsim-buddy-1); the base's single zone and buddy are gone."""
    resources = render("overlays/numa")
    zones = {
        n: ZoneConfig.from_env(container_env(resources, container(resources, f"zone-{n}")))
        for n in (0, 1)
    }
    profile = zones[0].profile
    assert (profile.name, profile.nodes) == ("numa", 2)
    assert {z.node for z in profile.zones} == {0, 1}
    assert zones[1].profile == profile
    assert [zones[n].node for n in (0, 1)] == [0, 1]
    for kind in ("zone", "buddy"):
        for resource_kind in ("Deployment", "Service"):
            named = sorted(
                r["metadata"]["name"]
                for r in resources
                if r["kind"] == resource_kind and r["metadata"]["name"].startswith(f"memsim-{kind}")
            )
            assert named == [f"memsim-{kind}-0", f"memsim-{kind}-1"]
        for n in (0, 1):
            service = find(resources, "Service", f"memsim-{kind}-{n}")
            labels = pod(resources, f"{kind}-{n}")["metadata"]["labels"]
            assert service["spec"]["selector"].items() <= labels.items()
            assert labels["memsim.io/node"] == str(n)
    # The MMU may hold every page of the 8 GiB machine.
    limit = container(resources, "mmu")["resources"]["limits"]["memory"]
    assert limit.endswith("Gi")
    assert int(limit[:-2]) << 30 > profile.mem_bytes
