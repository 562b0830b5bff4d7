"""Istio's traffic-management tasks, from `config/examples/`, through real Envoy.

One control plane and one client sidecar (productpage's, an HTTP proxy on `.10:15001`
of the run's 127.x block, see mesh.py) for the package; each test loads one example,
waits until the Envoy has ACKed it, and sends real requests to apps on the examples'
addresses. Statistical checks state their tolerance; waits are bounded polls.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml

from tests.e2e.harness import Envoy, free_port, get, wait_until
from tests.traffic.apps import Reply, direct, request, tcp_send
from tests.traffic.mesh import CLIENT, EXAMPLES, NET, Mesh, cluster_dump

REVIEWS = "http://reviews.default.svc.cluster.local:9080"
RATINGS = "http://ratings:9080"
HTTPBIN = "http://httpbin:8000"


def versions(n: int, url: str, **kw: object) -> Counter[str | None]:
    return Counter(request(CLIENT, url, **kw).app for _ in range(n))  # type: ignore[arg-type]


# --- request routing -----------------------------------------------------------------


def test_request_routing_by_header(mesh: Mesh) -> None:
    mesh.use("request-routing")
    assert versions(10, REVIEWS, headers={"end-user": "jason"}) == {"reviews-v2": 10}
    assert versions(10, REVIEWS) == {"reviews-v1": 10}
    assert versions(5, REVIEWS, headers={"end-user": "json"}) == {"reviews-v1": 5}
    # The short name, as an app in namespace default would use it, gets the same rules.
    assert (
        request(CLIENT, "http://reviews:9080/", headers={"end-user": "jason"}).app == "reviews-v2"
    )


def test_subset_clusters_hold_only_their_endpoints(mesh: Mesh) -> None:
    mesh.use("request-routing")
    envoy = mesh.envoys["productpage.default"]
    clusters = {
        "v1": f"{NET}.11",
        "v2": f"{NET}.12",
        "v3": f"{NET}.13",
    }

    def members(subset: str) -> set[str]:
        # Admin /clusters lines: `<cluster>::<ip>:<port>::health_flags::healthy`.
        name = f"outbound|9080|{subset}|reviews.default.svc.cluster.local"
        _status, text = get(envoy.admin + "/clusters")
        return {
            line.split("::")[1].rsplit(":", 1)[0]
            for line in text.splitlines()
            if line.startswith(name + "::") and "::health_flags::" in line
        }

    for subset, address in clusters.items():
        assert members(subset) == {address}
    assert members("") == set(clusters.values())


def test_traffic_shifting_80_20(mesh: Mesh) -> None:
    mesh.use("traffic-shifting")
    n = 400
    seen = versions(n, REVIEWS)
    assert set(seen) <= {"reviews-v1", "reviews-v3"}
    share = seen["reviews-v1"] / n
    # Binomial(400, 0.8): sd 2 %; +-8 % is four standard deviations (flakes ~1 in 15 000).
    assert 0.72 <= share <= 0.88, seen


# --- faults, timeouts, retries -------------------------------------------------------


def test_fault_injection_abort(mesh: Mesh) -> None:
    mesh.use("fault-injection-abort")
    ratings = mesh.app("ratings-v1")
    before = len(ratings.seen)
    reply = request(CLIENT, RATINGS + "/ratings/0", headers={"end-user": "jason"})
    assert reply.status == 500
    assert "fault filter abort" in reply.body
    assert len(ratings.seen) == before  # answered by the client's sidecar
    assert request(CLIENT, RATINGS + "/ratings/0").status == 200


def test_fault_injection_delay(mesh: Mesh) -> None:
    mesh.use("fault-injection-delay")
    envoy = mesh.envoys["productpage.default"]
    # A 7 s delay: a client that waits 0.5 s gives up; one without the header does not.
    with pytest.raises(socket.timeout):
        request(CLIENT, RATINGS + "/", headers={"end-user": "jason"}, timeout=0.5)
    assert request(CLIENT, RATINGS + "/", timeout=5).status == 200
    wait_until(
        lambda: sum(v for k, v in envoy.stats("fault").items() if k.endswith("delays_injected")),
        timeout=5,
        what="a delay injected by the fault filter",
    )


def test_request_timeout(mesh: Mesh) -> None:
    mesh.use("request-timeouts")
    reply = request(CLIENT, REVIEWS + "/?sleep=3", timeout=10)
    assert reply.status == 504
    assert reply.body == "upstream request timeout"
    assert request(CLIENT, REVIEWS + "/").app == "reviews-v2"


def test_retries(mesh: Mesh) -> None:
    vs = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - route:
    - destination: {host: ratings}
    retries: {attempts: 3, perTryTimeout: 2s, retryOn: 5xx}
"""
    mesh.use(extra={"retries.yaml": vs})
    ratings = mesh.app("ratings-v1")
    ratings.fail_next = 2
    assert request(CLIENT, RATINGS + "/").status == 200
    assert ratings.fail_next == 0
    ratings.fail_next = 5
    assert request(CLIENT, RATINGS + "/").status == 503  # 1 try + 3 retries, all failed
    ratings.fail_next = 0


# --- mirroring, circuit breaking -------------------------------------------------------


def test_mirroring(mesh: Mesh) -> None:
    mesh.use("mirroring")
    v2 = mesh.app("httpbin-v2")
    before = len(v2.seen)
    replies = [request(CLIENT, HTTPBIN + f"/headers?n={i}") for i in range(5)]
    assert {r.app for r in replies} == {"httpbin-v1"}

    def mirrored() -> list[str]:
        return [s.headers.get("host", "") for s in v2.seen[before:]]

    hosts = wait_until(lambda: len(mirrored()) == 5 and mirrored(), timeout=5, what="5 mirrors")
    # Envoy marks the copy by its Host: `httpbin-shadow:8000`.
    assert all(h.split(":")[0] == "httpbin-shadow" for h in hosts), hosts


def test_circuit_breaking(mesh: Mesh) -> None:
    mesh.use("circuit-breaking")
    envoy = mesh.envoys["productpage.default"]
    cluster = cluster_dump(envoy, "outbound|8000||httpbin.default.svc.cluster.local")
    thresholds = cluster["circuit_breakers"]["thresholds"][0]
    assert thresholds["max_connections"] == 1
    assert thresholds["max_pending_requests"] == 1
    assert cluster["outlier_detection"]["consecutive_5xx"] == 1

    def call(_: int) -> Reply:
        return request(CLIENT, HTTPBIN + "/get?sleep=0.5", timeout=10)

    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(call, range(8)))
    statuses = Counter(r.status for r in replies)
    overflowed = [r for r in replies if r.status == 503]
    assert statuses[200] >= 1, statuses
    assert overflowed, statuses  # 1 connection + 1 pending: the rest are refused at once
    assert all(r.headers.get("x-envoy-overloaded") == "true" for r in overflowed)


# --- ingress gateway ------------------------------------------------------------------


def test_ingress_gateway(mesh: Mesh) -> None:
    mesh.use("ingress-gateway")
    gateway = mesh.envoy("istio-ingressgateway", "istio-system")
    address = f"{NET}.5:8080"
    host = {"Host": "httpbin.example.com"}

    def ok() -> Reply | None:
        reply = direct(address, "/status/200", headers=host)
        return reply if reply.status == 200 else None

    reply = wait_until(ok, timeout=10, what="the gateway routes /status to httpbin")
    assert reply.app in {"httpbin-v1", "httpbin-v2"}
    assert direct(address, "/headers", headers=host).status == 404  # no rule matches
    assert direct(address, "/status/200", headers={"Host": "other.example.com"}).status == 404
    # Bound to the gateway only: the sidecars keep plain routing for httpbin.
    assert request(CLIENT, HTTPBIN + "/headers").status == 200
    assert "gateway" not in {n for n in mesh.envoys["productpage.default"].stats("http.gateway")}
    assert gateway.stats("http.gateway_8080.downstream_rq_completed")


# --- TCP -------------------------------------------------------------------------------


def test_tcp_traffic_shifting(mesh: Mesh) -> None:
    mesh.use("tcp-traffic-shifting")
    n = 200
    seen = Counter(tcp_send(f"{NET}.10:9000", "hello\n").split(" ")[0] for _ in range(n))
    assert set(seen) <= {"tcp-echo-v1", "tcp-echo-v2"}, seen
    share = seen["tcp-echo-v1"] / n
    # Binomial(200, 0.8): sd 2.8 %; +-11 % is four standard deviations.
    assert 0.69 <= share <= 0.91, seen


def test_secure_ingress_gateway(mesh: Mesh) -> None:
    mesh.use("secure-ingress-gateway")
    mesh.envoy("istio-ingressgateway", "istio-system")
    ca = EXAMPLES / "secure-ingress-gateway" / "example.com.crt"
    context = ssl.create_default_context(cafile=str(ca))

    def https(path: str) -> tuple[int, str]:
        # Connect to the gateway's address, speak TLS for the name (curl --resolve).
        raw = socket.create_connection((f"{NET}.5", 8443), timeout=5)
        conn = http.client.HTTPConnection("httpbin.example.com", 8443, timeout=5)
        conn.sock = context.wrap_socket(raw, server_hostname="httpbin.example.com")
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read().decode()
        finally:
            conn.close()

    _status, body = wait_until(
        lambda: (r := https("/status/200")) and r[0] == 200 and r,
        timeout=10,
        what="the gateway serves TLS for httpbin.example.com",
    )
    assert '"app": "httpbin-v' in body
    assert https("/other")[0] == 404
    redirect = direct(f"{NET}.5:8080", "/status/200", headers={"Host": "httpbin.example.com"})
    assert redirect.status == 301
    assert redirect.headers["location"] == "https://httpbin.example.com/status/200"


def test_gateway_bootstrap_from_the_cli(mesh: Mesh) -> None:
    """`pocketmesh bootstrap --workload NAME.NS` for a gateway workload gives a working gateway."""
    mesh.use("ingress-gateway")
    node_id = "istio-ingressgateway.istio-system"
    if (running_gateway := mesh.envoys.pop(node_id, None)) is not None:
        running_gateway.stop()  # one Envoy per node id: this test starts its own
    admin_port = free_port(f"{NET}.5")
    out = subprocess.run(
        [
            sys.executable, "-m", "xds_server.cli", "bootstrap",
            "--workload", node_id,
            "--config", str(mesh.config),
            "--xds-address", mesh.plane.xds_address,
            "--admin-port", str(admin_port),
        ],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    bootstrap = yaml.safe_load(out.stdout)
    assert bootstrap["node"]["id"] == node_id
    envoy = Envoy(bootstrap, mesh.root, "gateway-from-cli").start()
    mesh.envoys[node_id] = envoy  # stopped with the mesh, reused by later tests
    envoy.wait_ready()
    reply = wait_until(
        lambda: (
            (r := direct(f"{NET}.5:8080", "/status/200", headers={"Host": "httpbin.example.com"}))
            and r.status == 200
            and r
        ),
        timeout=10,
        what="the CLI-bootstrapped gateway routes to httpbin",
    )
    assert reply.app in {"httpbin-v1", "httpbin-v2"}
