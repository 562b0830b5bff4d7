"""The compose demo (docker-compose.yml) on a real Docker engine, checked from outside.

One compose project for the module, brought up as docs/compose.md says (`up --build`
from a copy of the checkout), and checked through its published gateway port: the
chain gateway -> productpage -> reviews -> ratings over mTLS with SPIFFE identities in
XFCC, STRICT mTLS refusing plaintext, the AuthorizationPolicy, a live edit of the
reviews split on the host, a control-plane restart under steady traffic, proxy
authentication against an attacker container on the compose network, the image's
user, volume and health check, and `down` leaving no container or network while the
CA's volume brings the same root back on `up`.

Skipped without an engine (with the reason); under CI=true, failed instead.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.compose.engine import (
    ComposeProject,
    chain_problems,
    copy_checkout,
    engine,
    fetch,
    remove_abandoned,
    wait_all_synced,
    wait_for_chain,
)
from tests.e2e.harness import wait_until
from tests.identity.attacker import self_signed_claiming
from xds_server.bootstrap import BootstrapOptions, sidecar_bootstrap
from xds_server.galley.loader import load_paths

pytestmark = pytest.mark.docker

TRUST_DOMAIN = "cluster.local"
XDS = "pocketmesh:15010"
ENOUGH = 40  # answers that must all come from one version: 0.5**40 by chance


def spiffe(service_account: str) -> str:
    return f"spiffe://{TRUST_DOMAIN}/ns/default/sa/{service_account}"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeProject]:
    client, command = engine()
    remove_abandoned(client)
    directory = copy_checkout(tmp_path_factory.mktemp("compose") / "pocketmesh")
    project = ComposeProject(client, command, directory)
    try:
        project.up(build=True)
        wait_for_chain(project)
        wait_all_synced(project, len(sidecars(project)))
        yield project
    finally:
        forced = project.remove()
        left = [*project.containers(), *project.networks(), *project.volumes()]
        assert not forced and not left, f"`down -v` left {forced or left}"


def compose_file(project: ComposeProject) -> dict[str, Any]:
    return dict(yaml.safe_load((project.directory / "docker-compose.yml").read_text()))


def sidecars(project: ComposeProject) -> list[str]:
    services = compose_file(project)["services"]
    return [name for name, s in services.items() if s["image"].startswith("envoyproxy/")]


def apps(project: ComposeProject) -> dict[str, dict[str, str]]:
    """Each app service: its mesh address, where it listens, its sidecar's proxy."""
    out = {}
    for name, service in compose_file(project)["services"].items():
        command = service["command"]
        if "demo-app" in command:
            out[name] = {
                "address": service["networks"]["mesh"]["ipv4_address"],
                "listen": command[command.index("--listen") + 1],
                "proxy": command[command.index("--proxy") + 1],
            }
    return out


def gateway_reply(project: ComposeProject) -> dict[str, Any]:
    status, body = fetch(project.gateway + "/")
    assert status == 200, body
    reply = dict(json.loads(body))
    assert not chain_problems(reply), chain_problems(reply)
    return reply


def root_key_ids(project: ComposeProject) -> list[str]:
    return [root["key_id"] for root in project.debug_json("/debug/ca")["roots"]]


def reviews_version(project: ComposeProject) -> str:
    return str(gateway_reply(project)["upstreams"][0]["answer"]["version"])


# -- the chain, mTLS, authorization ---------------------------------------------------


def test_chain_through_the_gateway_carries_spiffe_identities_in_xfcc(
    project: ComposeProject,
) -> None:
    versions = set()
    for _ in range(10):
        page = gateway_reply(project)
        assert page["app"] == "productpage"
        # Each hop's sidecar verified its caller's SVID and says so in XFCC.
        assert page["caller"]["uri"] == spiffe("ingressgateway"), page["caller"]
        assert page["caller"]["by"] == spiffe("productpage")
        assert spiffe("ingressgateway") in page["headers"]["x-forwarded-client-cert"]
        (reviews,) = page["upstreams"]
        review = reviews["answer"]
        assert review["app"] == "reviews"
        assert review["caller"]["uri"] == spiffe("productpage")
        assert review["caller"]["by"] == spiffe("reviews")
        (ratings,) = review["upstreams"]  # v2 and v3 call ratings; the split sends no v1
        rating = ratings["answer"]
        assert rating["app"] == "ratings"
        assert rating["caller"]["uri"] == spiffe("reviews")
        assert rating["caller"]["by"] == spiffe("ratings")
        versions.add(review["version"])
    assert versions <= {"v2", "v3"}, versions


def plaintext_answer(address: str, port: int) -> bytes:
    """What a plaintext HTTP request to address:port gets back (b"" if cut off)."""
    with socket.create_connection((address, port), timeout=5) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: reviews\r\nConnection: close\r\n\r\n")
        try:
            return conn.recv(4096)
        except ConnectionResetError:
            return b""


def test_strict_mtls_refuses_plaintext_and_no_app_is_reachable_around_its_sidecar(
    project: ComposeProject,
) -> None:
    for name, app in apps(project).items():
        # The sidecar's inbound port is open, and speaks only mutual TLS.
        answer = plaintext_answer(app["address"], 9080)
        assert not answer.startswith(b"HTTP/"), f"{name} answered plaintext: {answer[:200]!r}"
        # The app itself listens on its own loopback only.
        port = int(app["listen"].rsplit(":", 1)[1])
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((app["address"], port), timeout=5).close()


PROBE = """
import json, sys, urllib.error, urllib.request
proxy, url, method = sys.argv[1:4]
opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": "http://" + proxy}))
request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
try:
    with opener.open(request, timeout=5) as resp:
        print(json.dumps([resp.status, resp.read().decode()]))
except urllib.error.HTTPError as err:
    print(json.dumps([err.code, err.read().decode()[:500]]))
"""


def call_from(project: ComposeProject, service: str, url: str, method: str = "GET") -> Any:
    """A request from inside an app's container, through its own sidecar."""
    proxy = apps(project)[service]["proxy"]
    result = project.container(service).exec_run(["python", "-c", PROBE, proxy, url, method])
    assert result.exit_code == 0, result.output.decode(errors="replace")
    return json.loads(result.output)


def test_authorization_policy_lets_only_reviews_get_ratings(project: ComposeProject) -> None:
    status, body = call_from(project, "reviews-v2", "http://ratings:9080/")
    assert status == 200 and json.loads(body)["caller"]["uri"] == spiffe("reviews")
    assert call_from(project, "reviews-v2", "http://ratings:9080/", "POST") == [
        403, "RBAC: access denied",
    ]  # fmt: skip
    assert call_from(project, "productpage", "http://ratings:9080/") == [
        403, "RBAC: access denied",
    ]  # fmt: skip


# -- live edits on the host -----------------------------------------------------------


def set_reviews_split(project: ComposeProject, weights: dict[str, int], *, rename: bool) -> None:
    """Rewrite the reviews VirtualService's weights in the mounted config directory,
    in place or as editors do (a new file renamed over the old one)."""
    path = project.directory / "deploy" / "compose" / "mesh" / "traffic.yaml"
    docs = list(yaml.safe_load_all(path.read_text()))
    (service,) = [d for d in docs if d["kind"] == "VirtualService"]
    service["spec"]["http"][0]["route"] = [
        {"destination": {"host": "reviews", "subset": subset}, "weight": weight}
        for subset, weight in weights.items()
    ]
    text = yaml.safe_dump_all(docs, sort_keys=False)
    if rename:
        tmp = path.with_name(".traffic.yaml.swp")
        tmp.write_text(text)
        tmp.replace(path)
    else:
        path.write_text(text)


def wait_for_generation_after(project: ComposeProject, generation: int) -> float:
    started = time.monotonic()
    wait_until(
        lambda: project.debug_json("/debug/config")["generation"] > generation,
        timeout=15, interval=0.05, what=f"a config generation after {generation}",
    )  # fmt: skip
    return time.monotonic() - started


def test_a_live_edit_of_the_split_on_the_host_takes_effect(project: ComposeProject) -> None:
    original = (project.directory / "deploy/compose/mesh/traffic.yaml").read_text()
    proxies = len(sidecars(project))
    # The server chose polling by itself: its config directory is a bind mount.
    logs = project.container("pocketmesh").logs().decode(errors="replace")
    assert "by polling every 0.3 s (bind-mounted into this container" in logs, logs[-2000:]
    try:
        for weights, expected, rename in (
            ({"v2": 100, "v3": 0}, "v2", False),
            ({"v2": 0, "v3": 100}, "v3", True),
        ):
            generation = project.debug_json("/debug/config")["generation"]
            set_reviews_split(project, weights, rename=rename)
            seconds = wait_for_generation_after(project, generation)
            print(f"edit ({'rename' if rename else 'in place'}) -> reload: {seconds:.2f} s")
            wait_all_synced(project, proxies)
            answers = [reviews_version(project) for _ in range(ENOUGH)]
            assert answers == [expected] * ENOUGH, (weights, answers)
    finally:
        generation = project.debug_json("/debug/config")["generation"]
        (project.directory / "deploy/compose/mesh/traffic.yaml").write_text(original)
        wait_for_generation_after(project, generation)
        wait_all_synced(project, proxies)


# -- the control plane restarts -------------------------------------------------------


def test_a_control_plane_restart_fails_no_request(project: ComposeProject) -> None:
    roots = root_key_ids(project)
    results: list[list[str]] = []
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set() and len(results) < 10_000:
            try:
                status, body = fetch(project.gateway + "/", timeout=10)
                problems = chain_problems(json.loads(body)) if status == 200 else [str(status)]
            except Exception as err:
                problems = [repr(err)]
            results.append(problems)
            stop.wait(0.02)

    sender = threading.Thread(target=traffic, daemon=True)
    sender.start()
    plane = project.container("pocketmesh")
    try:
        wait_until(lambda: len(results) >= 20, timeout=30, what="20 requests before")
        before = len(results)
        plane.restart(timeout=10)

        def healthy() -> bool:
            plane.reload()
            return bool(plane.attrs["State"]["Health"]["Status"] == "healthy")

        wait_until(healthy, timeout=60, interval=0.2, what="the restarted control plane healthy")
        # Every sidecar reconnected and is in sync with the new process.
        wait_all_synced(project, len(sidecars(project)), timeout=90)
        during = len(results) - before
        wait_until(lambda: len(results) >= before + during + 20, timeout=30, what="20 after")
    finally:
        stop.set()
        sender.join(30)
    print(f"{len(results)} requests, {during} of them while the control plane restarted")
    failed = [(i, p) for i, p in enumerate(results) if p]
    assert not failed, f"{len(failed)} of {len(results)} requests failed: {failed[:5]}"
    assert during >= 10, f"only {during} requests while the control plane restarted"
    # The same CA, from the state volume.
    assert root_key_ids(project) == roots


# -- proxy authentication: an attacker on the compose network ------------------------


def impostor_bootstrap(project: ComposeProject, forged: bool) -> dict[str, Any]:
    """productpage's bootstrap as the attacker can make it: everything but a credential
    (none, or a self-signed client certificate naming productpage). It speaks TLS to
    xDS without verifying the server (nothing to verify it by)."""
    config = load_paths([project.directory / "deploy" / "compose" / "mesh"]).config
    assert config is not None
    workload = config.workload("productpage", "default")
    assert workload is not None
    options = BootstrapOptions(xds_address=XDS, admin_address="0.0.0.0")
    bootstrap = sidecar_bootstrap(workload, options)
    context: dict[str, Any] = {"alpn_protocols": ["h2"]}
    if forged:
        cert, key = self_signed_claiming(workload.proxy_id)
        context["tls_certificates"] = [
            {"certificate_chain": {"inline_string": cert}, "private_key": {"inline_string": key}}
        ]
    bootstrap["static_resources"]["clusters"][0]["transport_socket"] = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/"
            "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "common_tls_context": context,
        },
    }
    return bootstrap


def xds_connect_failures(admin: str) -> int:
    _status, text = fetch(admin + "/stats?filter=xds-grpc.upstream_cx_connect_fail$")
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if name.endswith("upstream_cx_connect_fail"):
            return int(value)
    return 0


ATTACKER = """
import json, socket, sys, urllib.request
out = {}
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
        out[target] = "open"
    except OSError as err:
        out[target] = type(err).__name__
url = "http://pocketmesh:15014/debug/config_dump?proxy=productpage.default&type=secret"
out["debug_secrets"] = urllib.request.urlopen(url, timeout=5).read().decode()
print(json.dumps(out))
"""


def test_an_attacker_on_the_compose_network_gets_no_workload_key(
    project: ComposeProject,
) -> None:
    envoy_image = compose_file(project)["services"][sidecars(project)[0]]["image"]
    # 1. An Envoy posing as productpage, with no client certificate and with a forged
    # one naming productpage: the xDS port (TLS, client certificates required) refuses
    # its handshake, again and again, and it holds no secret.
    for forged in (False, True):
        bootstrap = json.dumps(impostor_bootstrap(project, forged))
        impostor = project.run_beside(
            envoy_image,
            ["envoy", "--config-yaml", bootstrap, "--disable-hot-restart", "-l", "warning"],
        )
        try:
            impostor.reload()
            address = impostor.attrs["NetworkSettings"]["Networks"][project.network]["IPAddress"]
            admin = f"http://{address}:15000"
            wait_until(lambda a=admin: xds_connect_failures(a) >= 2, timeout=30,
                       what="the control plane refusing the impostor's handshake")  # fmt: skip
            certs = json.loads(wait_until(lambda a=admin: fetch(a + "/certs")[1], timeout=30))
            assert not any(entry["ca_cert"] for entry in certs["certificates"]), certs
            chains = [c for entry in certs["certificates"] for c in entry["cert_chain"]]
            assert len(chains) == (1 if forged else 0), certs  # its forgery; no SVID
            dump = fetch(admin + "/config_dump")[1]
            assert "dynamic_active_secrets" not in dump and "PRIVATE KEY" not in dump
            assert "control_plane.connected_state: 0" in fetch(admin + "/stats")[1]
        finally:
            impostor.remove(force=True)
    streams = {s["proxy"] for s in project.debug_json("/debug/syncz")}
    assert len(project.debug_json("/debug/syncz")) == len(streams) == len(sidecars(project))

    # 2. From a container on the network: no sidecar admin (on the pod's loopback,
    # read-only), no app port; the control plane's debug dump redacts keys.
    targets = [f"{a['address']}:15000" for a in apps(project).values()]
    targets += [f"{a['address']}:{a['listen'].rsplit(':', 1)[1]}" for a in apps(project).values()]
    gateway = compose_file(project)["services"]["ingressgateway-sidecar"]
    targets.append(f"{gateway['networks']['mesh']['ipv4_address']}:15000")
    prober = project.run_beside("pocketmesh:dev", ["python", "-c", ATTACKER, *targets])
    try:
        exit_code = prober.wait(timeout=60)["StatusCode"]
        output = prober.logs().decode(errors="replace")
    finally:
        prober.remove(force=True)
    assert exit_code == 0, output
    found = json.loads(output.strip().splitlines()[-1])
    assert {t: found[t] for t in targets} == {t: "ConnectionRefusedError" for t in targets}
    assert "[redacted]" in found["debug_secrets"]
    assert "PRIVATE KEY" not in found["debug_secrets"]


# -- the image ------------------------------------------------------------------------


def test_the_image_runs_non_root_with_a_state_volume_and_a_health_check(
    project: ComposeProject,
) -> None:
    plane = project.container("pocketmesh")
    plane.reload()
    image = project.client.images.get("pocketmesh:dev")
    config = image.attrs["Config"]
    assert config["User"] == "10001:10001"
    assert config["WorkingDir"] == "/var/lib/pocketmesh"
    assert "/healthz" in " ".join(config["Healthcheck"]["Test"])
    assert plane.attrs["State"]["Health"]["Status"] == "healthy"
    print(f"pocketmesh:dev is {image.attrs['Size'] / 1e6:.0f} MB")
    assert plane.exec_run(["id", "-u"]).output.strip() == b"10001"
    mounts = {m["Destination"]: m for m in plane.attrs["Mounts"]}
    state = mounts["/var/lib/pocketmesh"]
    assert (state["Type"], state["Name"]) == ("volume", f"{project.name}_pocketmesh-state")
    # The CA was written there by that user, its keys (the root's, the proxy tokens')
    # private to it.
    listing = plane.exec_run(["ls", "-ln", "/var/lib/pocketmesh/.pocketmesh/ca"]).output.decode()
    keys = [line.split() for line in listing.splitlines() if line.endswith(("-key.pem", ".key"))]
    assert len(keys) >= 2 and all(f[0] == "-rw-------" and f[2] == "10001" for f in keys), listing
    # The config is a directory mount (a single-file mount would miss host edits).
    assert mounts["/etc/pocketmesh/mesh"]["Type"] == "bind"


# -- down and up ------------------------------------------------------------------------


def test_down_leaves_no_container_or_network_and_up_brings_back_the_same_ca(
    project: ComposeProject,
) -> None:
    roots = root_key_ids(project)
    project.down()
    assert project.containers() == [] and project.networks() == []
    # Only the named volumes are left (no container's anonymous one), the CA's among them.
    named = {f"{project.name}_{v}" for v in compose_file(project)["volumes"]}
    assert {v.name for v in project.volumes()} == named
    assert f"{project.name}_pocketmesh-state" in named
    project.up(build=False)
    wait_for_chain(project)
    assert root_key_ids(project) == roots
