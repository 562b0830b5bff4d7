"""docker-compose.yml, deploy/Dockerfile and deploy/kubernetes/, checked without a
container engine: by the Compose specification's JSON schema (as vendored by
check-jsonschema, from github.com/compose-spec/compose-spec), by kubernetes-validate's
Kubernetes 1.37 schemas (strict: unknown fields fail), and against config/demo."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import kubernetes_validate
import pytest
import yaml

from xds_server.bootstrap import split_host_port
from xds_server.galley.loader import load_paths

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
KUBERNETES = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.37.0"


def compose_renderer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("render", ROOT / "deploy/compose/render.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def check_compose_schema(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
         str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


# -- docker-compose ------------------------------------------------------------------


def test_compose_files_are_up_to_date_with_config_demo() -> None:
    renderer = compose_renderer()
    stale = [
        str(path.relative_to(ROOT))
        for path, text in renderer.render().items()
        if not path.exists() or path.read_text() != text
    ]
    stale += [str(path.relative_to(ROOT)) for path in renderer.stale()]
    assert not stale, f"out of date, run `python deploy/compose/render.py`: {stale}"


def test_compose_file_is_valid_for_the_compose_specification(tmp_path: Path) -> None:
    result = check_compose_schema(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr
    # The validator is real: a broken file fails it.
    broken = compose()
    broken["services"]["productpage"]["network_mode"] = {"service": "x"}
    (tmp_path / "broken.yml").write_text(yaml.safe_dump(broken))
    assert check_compose_schema(tmp_path / "broken.yml").returncode == 1


def test_compose_file_runs_on_compose_v1_too() -> None:
    # docker-compose 1.29 (Debian 12's) refuses a top-level `name:` and anything but
    # these; tests/compose/ runs the file with it.
    assert set(compose()) <= {"version", "services", "networks", "volumes", "secrets", "configs"}


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """A service's volumes, container path -> source (`./path` or a volume's name)."""
    out = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        out[target] = source
    return out


def flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_each_sidecar_alone_gets_its_bootstrap_from_the_control_plane() -> None:
    """Proxy authentication on: the control plane writes each WorkloadEntry's bootstrap
    (its token) into a volume only that workload's sidecar mounts."""
    demo = load_paths([ROOT / "config" / "demo"]).config
    assert demo is not None
    spec = compose()
    services = spec["services"]
    plane = services["pocketmesh"]
    command = plane["command"]
    assert "--no-proxy-auth" not in command and "--no-identity" not in command
    assert "--xds-tls" in command  # the token and the keys cross the network encrypted
    xds_host, xds_port = split_host_port(flag(command, "--bootstrap-xds-address"))
    assert (
        xds_host == "pocketmesh" and xds_port == split_host_port(flag(command, "--xds-address"))[1]
    )
    bootstrap_dir = flag(command, "--bootstrap-dir")
    written = {
        source: target.removeprefix(bootstrap_dir + "/")
        for target, source in mounts(plane).items()
        if target.startswith(bootstrap_dir + "/")
    }  # volume -> the proxy id whose bootstrap the control plane writes there
    assert sorted(written.values()) == sorted(we.proxy_id for we in demo.workload_entries)
    sidecars = {name: s for name, s in services.items() if s["image"].startswith("envoyproxy/")}
    assert len(sidecars) == len(demo.workload_entries)
    for name, sidecar in sidecars.items():
        ((target, volume),) = mounts(sidecar).items()
        assert sidecar["volumes"][0].endswith(":ro")
        assert f"{target}/bootstrap.yaml" == flag(sidecar["command"], "-c")
        assert "--disable-hot-restart" in sidecar["command"]
        assert sidecar["depends_on"]["pocketmesh"]["condition"] == "service_healthy"
        # No other service mounts it; it lives in memory, owned by the image's user.
        others = [n for n, s in services.items() if volume in mounts(s).values()]
        assert sorted(others) == sorted([name, "pocketmesh"]), (volume, others)
        options = spec["volumes"][volume]["driver_opts"]
        assert options["type"] == "tmpfs" and "uid=10001" in options["o"]
        # The sidecar shares its app's network namespace, whose address is its
        # WorkloadEntry's in the compose mesh (a gateway's sidecar has its own).
        workload, _, namespace = written[volume].partition(".")
        entry = demo.workload(workload, namespace)
        assert entry is not None
        owner = sidecar
        if "network_mode" in sidecar:
            owner = services[sidecar["network_mode"].removeprefix("service:")]
        address = owner["networks"]["mesh"]["ipv4_address"]
        assert address == compose_renderer().container_address(str(entry.address))


def test_compose_control_plane_reads_a_directory_of_config_demo_with_container_addresses() -> None:
    plane = compose()["services"]["pocketmesh"]
    config_dir = flag(plane["command"], "--config")
    # A directory mount: a single-file one would not see the host's edits.
    mesh = ROOT / mounts(plane)[config_dir]
    assert mesh.is_dir() and mesh == ROOT / "deploy" / "compose" / "mesh"
    demo_files = sorted(p.name for p in (ROOT / "config" / "demo").glob("*.yaml"))
    assert sorted(p.name for p in mesh.glob("*.yaml")) == demo_files
    for path in mesh.glob("*.yaml"):
        assert "127.0.10." not in path.read_text(), path
    result = load_paths([mesh])
    assert result.config is not None, [str(e) for e in result.errors]
    assert {str(we.address) for we in result.config.workload_entries} <= {
        s["networks"]["mesh"]["ipv4_address"]
        for s in compose()["services"].values()
        if isinstance(s.get("networks"), dict)
    }
    # The CA is kept in a named volume, where the image keeps its state.
    assert mounts(plane)["/var/lib/pocketmesh"] == "pocketmesh-state"
    assert "pocketmesh-state" in compose()["volumes"]
    assert plane["build"]["dockerfile"] == "deploy/Dockerfile"


def test_dockerfile_is_slim_non_root_with_a_healthcheck() -> None:
    lines = [
        line.strip()
        for line in (ROOT / "deploy" / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    instructions = [(line.split()[0], line) for line in lines]
    froms = [line for op, line in instructions if op == "FROM"]
    assert len(froms) == 1 and "slim" in froms[0], froms
    users = [line.split()[1] for op, line in instructions if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    (health,) = [line for op, line in instructions if op == "HEALTHCHECK"]
    assert "/healthz" in health and "15014" in health
    assert any(op == "RUN" and "pip install ." in line for op, line in instructions)
    cmd = json.loads(next(line for op, line in instructions if op == "CMD")[len("CMD") :])
    assert cmd[:2] == ["pocketmesh", "serve"] and "0.0.0.0:15014" in cmd


# -- Kubernetes -----------------------------------------------------------------------


def manifests() -> list[tuple[str, dict[str, Any]]]:
    return [
        (path.name, doc)
        for path in sorted(KUBERNETES.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def by_kind(kind: str, name: str) -> dict[str, Any]:
    return next(d for _, d in manifests() if d["kind"] == kind and d["metadata"]["name"] == name)


@pytest.mark.parametrize(
    "doc", [d for _, d in manifests()], ids=[f"{f}:{d['kind']}" for f, d in manifests()]
)
def test_kubernetes_manifest_is_valid(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_kubernetes_validation_is_real() -> None:
    deployment = by_kind("Deployment", "pocketmesh")
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_kubernetes_mesh_config_map_is_valid_mesh_config(tmp_path: Path) -> None:
    data = by_kind("ConfigMap", "pocketmesh-mesh")["data"]
    for name, text in data.items():
        (tmp_path / name).write_text(text)
    result = load_paths([tmp_path])
    assert result.config is not None, [str(e) for e in result.errors]
    # The control plane reads it where the ConfigMap is mounted.
    pod = by_kind("Deployment", "pocketmesh")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "mesh")
    assert container["args"][container["args"].index("--config") + 1] == mount["mountPath"]
    assert pod["volumes"][0]["configMap"]["name"] == "pocketmesh-mesh"

    # The example workload's sidecar is one of its WorkloadEntries, and finds the
    # control plane's Service.
    boot = yaml.safe_load(
        by_kind("ConfigMap", "productpage-sidecar-bootstrap")["data"]["bootstrap.yaml"]
    )
    workload, _, namespace = boot["node"]["id"].partition(".")
    assert result.config.workload(workload, namespace) is not None
    xds = boot["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]
    socket = xds["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    service = by_kind("Service", "pocketmesh")
    meta = service["metadata"]
    assert socket["address"] == f"{meta['name']}.{meta['namespace']}.svc.cluster.local"
    assert socket["port_value"] in [p["port"] for p in service["spec"]["ports"]]
    # The app listens where the Sidecar's ingress sends traffic.
    app = by_kind("Deployment", "productpage")["spec"]["template"]["spec"]["containers"][0]
    listen = app["args"][app["args"].index("--listen") + 1]
    (sidecar,) = result.config.sidecars
    assert split_host_port(listen) == split_host_port(sidecar.ingress[0].default_endpoint)
