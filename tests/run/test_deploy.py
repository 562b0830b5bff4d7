"""docker-compose.yml, deploy/Dockerfile and deploy/kubernetes/, checked without a
container engine: by the Compose specification's JSON schema (as vendored by
check-jsonschema, from github.com/compose-spec/compose-spec), by kubernetes-validate's
Kubernetes 1.37 schemas (strict: unknown fields fail), and against config/demo."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import stat
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


def test_kubernetes_mesh_is_valid_mesh_config_mounted_where_the_server_reads_it() -> None:
    result = load_paths([KUBERNETES / "mesh"])
    assert result.config is not None, [str(e) for e in result.errors]
    pod = by_kind("Deployment", "pocketmesh")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "mesh")
    assert flag(container["args"], "--config") == mount["mountPath"]
    volume = next(v for v in pod["volumes"] if v["name"] == "mesh")
    assert volume["configMap"]["name"] == "pocketmesh-mesh"
    # Proxy authentication on, over TLS: no pod gets a key without its own certificate.
    assert "--xds-tls" in container["args"] and "--no-proxy-auth" not in container["args"]
    # The app listens where the Sidecar's ingress sends traffic.
    app = by_kind("Deployment", "productpage")["spec"]["template"]["spec"]["containers"][0]
    (sidecar,) = result.config.sidecars
    assert split_host_port(flag(app["args"], "--listen")) == split_host_port(
        sidecar.ingress[0].default_endpoint
    )


def kubernetes_steps() -> list[list[str]]:
    """The `$ ` lines of docs/beside-envoy.md's "On Kubernetes" block, as argv."""
    page = (ROOT / "docs" / "beside-envoy.md").read_text()
    block = page.split("## On Kubernetes", 1)[1].split("```console\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line[2:]) for line in block.splitlines() if line.startswith("$ ")]


def kubectl_creates(steps: list[list[str]]) -> dict[tuple[str, str, str], dict[str, str]]:
    """(kind, namespace, name) -> {key or "": --from-file source} of each `kubectl create`."""
    out: dict[tuple[str, str, str], dict[str, str]] = {}
    for argv in steps:
        if argv[:1] != ["kubectl"] or "create" not in argv:
            continue
        namespace = flag(argv, "-n")
        words = argv[argv.index("create") + 1 :]
        kind, name = ("secret", words[2]) if words[0] == "secret" else (words[0], words[1])
        sources = {}
        for word in words:
            if word.startswith("--from-file="):
                key, _, source = word.removeprefix("--from-file=").rpartition("=")
                sources[key] = source
        out[(kind, namespace, name)] = sources
    return out


def volume_source(deployment: str, volume: str) -> tuple[str, str, dict[str, Any]]:
    doc = by_kind("Deployment", deployment)
    (spec,) = [v for v in doc["spec"]["template"]["spec"]["volumes"] if v["name"] == volume]
    kind = "configmap" if "configMap" in spec else "secret"
    source = spec["configMap"] if kind == "configmap" else spec["secret"]
    return kind, doc["metadata"]["namespace"], source


def test_kubernetes_steps_make_what_the_manifests_mount() -> None:
    creates = kubectl_creates(kubernetes_steps())
    mesh_kind, mesh_ns, mesh = volume_source("pocketmesh", "mesh")
    assert creates[(mesh_kind, mesh_ns, mesh["name"])] == {"": "deploy/kubernetes/mesh/"}
    ca_kind, ca_ns, ca = volume_source("pocketmesh", "ca")
    assert creates[(ca_kind, ca_ns, ca["secretName"])] == {"": "k8s-ca/"}
    boot_kind, boot_ns, boot = volume_source("productpage", "bootstrap")
    made = creates[(boot_kind, boot_ns, boot["secretName"])]
    sidecar = by_kind("Deployment", "productpage")["spec"]["template"]["spec"]["containers"][1]
    (mount,) = sidecar["volumeMounts"]
    assert flag(sidecar["args"], "-c") == f"{mount['mountPath']}/{next(iter(made))}"
    # Key material is readable by the pod's fsGroup only, never by others.
    for source in (ca, boot):
        assert source["defaultMode"] & 0o007 == 0


def test_kubernetes_steps_run_without_a_cluster(tmp_path: Path) -> None:
    """The documented steps, as far as they go without a cluster: the two `pocketmesh`
    commands as written, the CA Secret copied by the init container's own command, the
    control plane with the Deployment's arguments, and the sidecar's bootstrap in a real
    Envoy (only its xDS and admin addresses moved here): a request reaches the app
    through it, so the client certificate it carries is one the server accepts."""
    from tests.e2e.harness import Envoy, free_port, get, running, wait_until

    shutil.copytree(KUBERNETES / "mesh", tmp_path / "deploy" / "kubernetes" / "mesh")
    steps = kubernetes_steps()
    for argv in steps:
        if argv[0] == "pocketmesh":
            done = subprocess.run(
                [sys.executable, "-m", "xds_server", *argv[1:]],
                cwd=tmp_path, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
    made = kubectl_creates(steps)[("secret", "default", "productpage-sidecar-bootstrap")]
    boot_path = tmp_path / made["bootstrap.yaml"]
    assert stat.S_IMODE(boot_path.stat().st_mode) == 0o600

    # The Secret as the kubelet mounts it (group-readable), then the init container.
    secret = tmp_path / "secret"
    secret.mkdir()
    for key in (tmp_path / "k8s-ca").iterdir():
        shutil.copy(key, secret / key.name)
        (secret / key.name).chmod(0o440)
    state = tmp_path / "state"
    state.mkdir()
    pod = by_kind("Deployment", "pocketmesh")["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    moved = {"/etc/pocketmesh/ca": str(secret), "/var/lib/pocketmesh": str(state)}

    def local(word: str) -> str:
        for there, here in moved.items():
            word = word.replace(there, here)
        return word

    subprocess.run([local(w) for w in init["command"]], check=True, timeout=30)
    assert stat.S_IMODE((state / "ca").stat().st_mode) == 0o700
    assert {stat.S_IMODE(f.stat().st_mode) for f in (state / "ca").iterdir()} == {0o600}

    # The pod's loopback, here: one 127/8 address of its own, free ports.
    host = f"127.0.{os.getpid() % 200 + 20}.{os.getpid() % 250 + 2}"
    inbound, app_port, xds, debug = (free_port(host) for _ in range(4))
    mesh = tmp_path / "mesh"
    mesh.mkdir()
    for file in (KUBERNETES / "mesh").iterdir():
        text = re.sub(r"\b19080\b", str(app_port), file.read_text())
        text = re.sub(r"\b9080\b", str(inbound), text).replace("127.0.0.1", host)
        (mesh / file.name).write_text(text)
    moved |= {
        "0.0.0.0:15010": f"127.0.0.1:{xds}",
        "0.0.0.0:15014": f"127.0.0.1:{debug}",
        "/etc/pocketmesh/mesh": str(mesh),
        "127.0.0.1:19080": f"{host}:{app_port}",
        "127.0.0.1:15001": f"{host}:15001",
    }
    (server,) = pod["containers"]
    app = by_kind("Deployment", "productpage")["spec"]["template"]["spec"]["containers"][0]
    assert server["args"][0] == app["args"][0] == "pocketmesh"

    bootstrap = yaml.safe_load(boot_path.read_text())
    assignment = bootstrap["static_resources"]["clusters"][0]["load_assignment"]
    (xds_endpoint,) = assignment["endpoints"][0]["lb_endpoints"]
    xds_endpoint["endpoint"]["address"]["socket_address"].update(
        address="127.0.0.1", port_value=xds
    )
    # From the "pod's" address, as a pod's connections come from its own IP: the server
    # holds a proxy to its WorkloadEntry's address (here both are on loopback).
    bootstrap["static_resources"]["clusters"][0]["upstream_bind_config"] = {
        "source_address": {"address": host, "port_value": 0}
    }
    bootstrap["admin"]["address"]["socket_address"].update(address=host, port_value=free_port(host))
    envoy = Envoy(bootstrap, tmp_path, "productpage")
    logs = {name: (tmp_path / f"{name}.log").open("wb") for name in ("serve", "app")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "xds_server", *(local(w) for w in argv[1:])],
            stdout=logs[name],
            stderr=subprocess.STDOUT,
        )
        for name, argv in (("serve", server["args"]), ("app", app["args"]))
    ]

    class Stop:
        def __init__(self, proc: subprocess.Popen[bytes]) -> None:
            self.proc = proc

        def stop(self) -> None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    with running(*(Stop(p) for p in procs), envoy):
        wait_until(
            lambda: get(f"http://127.0.0.1:{debug}/ready")[0] == 200,
            timeout=20, what="the control plane's /ready",
        )  # fmt: skip
        envoy.start().wait_ready(30)
        _status, body = wait_until(
            lambda: (r := get(f"http://{host}:{inbound}/"))[0] == 200 and r,
            timeout=20, what="productpage through its sidecar",
        )  # fmt: skip
        assert json.loads(body)["app"] == "productpage", body
        # The sidecar proved its node id: the server counted no refusal, and the key
        # it was sent is its SVID (SPIFFE ID of its service account).
        _status, certs = get(envoy.admin + "/certs")
        assert "spiffe://cluster.local/ns/default/sa/productpage" in certs
    for log in logs.values():
        log.close()
