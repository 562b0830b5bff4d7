"""DestinationRule fields of issue 14c through real Envoy: requests sent, effect observed.

Clients: `sleep` and `curl` in namespace default, `sleep` in namespace other. reviews
has two endpoints (apps answering "reviews-v1" and "reviews-v2"); ratings is a
workload with its own sidecar (an HTTP/2-capable upstream); tcp-echo a TCP service.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e.harness import free_port, running, wait_until
from tests.services.live import LiveMesh
from tests.traffic.apps import TcpEchoApp, VersionApp, request

BASE = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints:
  - {address: "{net}.21", labels: {version: v1}}
  - {address: "{net}.22", labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: default}
spec:
  hosts: [api.example.com]
  addresses: ["{net}.31"]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP}]
  endpoints: [{address: "{net}.32"}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: ratings}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ratings, namespace: default}
spec: {address: "{net}.41", labels: {app: ratings}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: ratings, namespace: default}
spec:
  workloadSelector: {labels: {app: ratings}}
  ingress:
  - {port: {number: 9080, protocol: HTTP, name: http}, defaultEndpoint: "127.0.0.1:RATINGS"}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: tcp-echo, namespace: default}
spec:
  hosts: [tcp-echo.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9000, name: tcp, protocol: TCP}]
  endpoints: [{address: "{net}.51"}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: sleep, namespace: default}
spec: {address: "{net}.10", labels: {app: sleep}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: curl, namespace: default}
spec: {address: "{net}.11", labels: {app: curl}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: sleep, namespace: other}
spec: {address: "{net}.12", labels: {app: sleep}}
"""

ROUTE_TO_CHOSEN = """\
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews, subset: chosen}}]}]
"""


def chosen(version: str, name: str, namespace: str = "default", extra: str = "") -> str:
    """A rule whose subset `chosen` picks reviews `version`."""
    return f"""\
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  host: reviews.default.svc.cluster.local
{extra}  subsets: [{{name: chosen, labels: {{version: {version}}}}}]
"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveMesh]:
    live = LiveMesh(tmp_path_factory.mktemp("rules"))
    ratings_port = free_port()
    apps: list[VersionApp | TcpEchoApp] = [
        VersionApp("reviews-v1", live.addr(21), 9080),
        VersionApp("reviews-v2", live.addr(22), 9080),
        VersionApp("vip-target", live.addr(31), 8080),  # where the app addressed
        VersionApp("api-endpoint", live.addr(32), 8080),  # what the registry says
        VersionApp("ratings", "127.0.0.1", ratings_port),
        TcpEchoApp("tcp-echo", live.addr(51), 9000),
    ]
    for app in apps:
        app.start()
    live.base = BASE.replace("RATINGS", str(ratings_port))  # type: ignore[attr-defined]
    live.apps = {a.name: a for a in apps}  # type: ignore[attr-defined]
    with running(*apps, live):
        live.apply(live.base)  # type: ignore[attr-defined]
        for name, namespace in (("sleep", "default"), ("curl", "default"), ("sleep", "other")):
            live.envoy(name, namespace)
        live.envoy("ratings")
        yield live


def who(mesh: LiveMesh, client: int, url: str, n: int = 10) -> Counter[str]:
    seen: Counter[str] = Counter()
    for _ in range(n):
        reply = request(f"{mesh.addr(client)}:15001", url)
        seen[reply.app if reply.status == 200 and reply.app else f"status {reply.status}"] += 1
    return seen


REVIEWS = "http://reviews.default.svc.cluster.local:9080/"


def test_workload_selector_rule_applies_to_the_selected_sidecars_only(mesh: LiveMesh) -> None:
    selector = "  workloadSelector: {matchLabels: {app: curl}}\n"
    mesh.apply(
        mesh.base  # type: ignore[attr-defined]
        + chosen("v1", "reviews")
        + chosen("v2", "reviews-for-curl", extra=selector)
        + ROUTE_TO_CHOSEN
    )
    assert who(mesh, 10, REVIEWS) == {"reviews-v1": 10}  # sleep: the rule without selector
    assert who(mesh, 11, REVIEWS) == {"reviews-v2": 10}  # curl: the rule selecting it
    # A selector rule is never exported: namespace other sees the exported one.
    assert who(mesh, 12, REVIEWS) == {"reviews-v1": 10}


def test_export_to_decides_which_namespaces_use_a_rule(mesh: LiveMesh) -> None:
    private = '  exportTo: ["."]\n'
    mesh.apply(
        mesh.base  # type: ignore[attr-defined]
        + chosen("v1", "reviews", extra=private)
        + chosen("v2", "reviews", namespace="other", extra=private)
        + ROUTE_TO_CHOSEN
    )
    assert who(mesh, 10, REVIEWS) == {"reviews-v1": 10}  # default's own rule
    assert who(mesh, 12, REVIEWS) == {"reviews-v2": 10}  # other's own rule
    # A rule exported to other only: default's proxies do not use it (they see none,
    # so the subset has no cluster: Envoy answers 503, as in Istio).
    mesh.apply(
        mesh.base  # type: ignore[attr-defined]
        + chosen("v2", "reviews", extra='  exportTo: ["other"]\n')
        + ROUTE_TO_CHOSEN
    )
    assert who(mesh, 12, REVIEWS) == {"reviews-v2": 10}
    assert who(mesh, 10, REVIEWS) == {"status 503": 10}


def test_two_rules_for_one_host_are_merged(mesh: LiveMesh) -> None:
    """Istio merges rules for one host: subsets are concatenated."""
    mesh.apply(
        mesh.base  # type: ignore[attr-defined]
        + chosen("v2", "reviews-a")
        + """\
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews-b, namespace: default}
spec:
  host: reviews
  subsets: [{name: first, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {x-subset: {exact: first}}}]
    route: [{destination: {host: reviews, subset: first}}]
  - route: [{destination: {host: reviews, subset: chosen}}]
"""
    )
    assert who(mesh, 10, REVIEWS) == {"reviews-v2": 10}
    first = request(f"{mesh.addr(10)}:15001", REVIEWS, headers={"x-subset": "first"})
    assert first.app == "reviews-v1"


def rule(host: str, policy: str) -> str:
    return f"""\
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {host.split(".")[0]}, namespace: default}}
spec:
  host: {host}
  trafficPolicy:
{policy}"""


def test_passthrough_goes_where_the_request_says(mesh: LiveMesh) -> None:
    """PASSTHROUGH: the original destination (here: the address the request names),
    not the endpoints of the registry."""
    vip = f"http://{mesh.addr(31)}:8080/"  # the entry's address: its virtual host
    mesh.apply(mesh.base)  # type: ignore[attr-defined]
    assert who(mesh, 10, vip, 3) == {"api-endpoint": 3}
    mesh.apply(mesh.base + rule("api.example.com", "    loadBalancer: {simple: PASSTHROUGH}\n"))  # type: ignore[attr-defined]
    assert who(mesh, 10, vip, 3) == {"vip-target": 3}


def test_outlier_http_error_codes_eject_on_those_answers(mesh: LiveMesh) -> None:
    mesh.apply(
        mesh.base  # type: ignore[attr-defined]
        + rule(
            "reviews",
            "    outlierDetection:\n"
            "      consecutive5xxErrors: 1\n"
            "      outlierDetectionHttpErrorCodes: [418]\n"
            "      baseEjectionTime: 1m\n"
            "      maxEjectionPercent: 100\n",
        )
    )
    apps = mesh.apps  # type: ignore[attr-defined]
    apps["reviews-v1"].always_status = 418
    try:

        def only_v2() -> bool:
            seen = Counter(request(f"{mesh.addr(10)}:15001", REVIEWS).app for _ in range(6))
            return seen == {"reviews-v2": 6}

        wait_until(only_v2, timeout=10, what="reviews-v1 ejected for answering 418")
    finally:
        apps["reviews-v1"].always_status = None


def test_warmup_ramps_a_new_endpoint_up_slowly(mesh: LiveMesh) -> None:
    one = mesh.base.replace('  - {address: "{net}.22", labels: {version: v2}}\n', "")  # type: ignore[attr-defined]
    # Aggression 0.1 makes the weight grow with (age / window) ** 10: an endpoint a
    # fraction of a second younger than the other gets almost nothing at first.
    policy = (
        "    loadBalancer:\n"
        "      simple: ROUND_ROBIN\n"
        "      warmup: {duration: 120s, minimumPercent: 0, aggression: 0.1}\n"
    )
    mesh.apply(one + rule("reviews", policy))
    assert who(mesh, 10, REVIEWS, 5) == {"reviews-v1": 5}
    mesh.apply(mesh.base + rule("reviews", policy))  # type: ignore[attr-defined]
    seen = who(mesh, 10, REVIEWS, 100)
    # Round robin would give the new endpoint half.
    assert seen["reviews-v2"] <= 20, seen
    mesh.apply(mesh.base + rule("reviews", "    loadBalancer: {simple: ROUND_ROBIN}\n"))  # type: ignore[attr-defined]


def _stat(mesh: LiveMesh, node: str, name: str) -> int:
    return mesh.envoys[node].stats(name).get(name, 0)


RATINGS = "outbound|9080||ratings.default.svc.cluster.local"


def test_h2_upgrade_policy_upgrade_speaks_http2_upstream(mesh: LiveMesh) -> None:
    mesh.apply(mesh.base)  # type: ignore[attr-defined]
    h2 = f"cluster.{RATINGS}.upstream_cx_http2_total"
    assert request(f"{mesh.addr(10)}:15001", "http://ratings:9080/").app == "ratings"
    assert _stat(mesh, "sleep.default", h2) == 0
    mesh.apply(
        mesh.base + rule("ratings", "    connectionPool: {http: {h2UpgradePolicy: UPGRADE}}\n")  # type: ignore[attr-defined]
    )
    assert request(f"{mesh.addr(10)}:15001", "http://ratings:9080/").app == "ratings"
    assert _stat(mesh, "sleep.default", h2) >= 1


def test_http_idle_timeout_closes_idle_upstream_connections(mesh: LiveMesh) -> None:
    mesh.apply(mesh.base + rule("reviews", "    connectionPool: {http: {idleTimeout: 0.3s}}\n"))  # type: ignore[attr-defined]
    name = "cluster.outbound|9080||reviews.default.svc.cluster.local.upstream_cx_idle_timeout"
    before = _stat(mesh, "sleep.default", name)
    assert request(f"{mesh.addr(10)}:15001", REVIEWS).status == 200
    wait_until(
        lambda: _stat(mesh, "sleep.default", name) > before, timeout=10, what="an idle timeout"
    )


def test_tcp_max_connection_duration_closes_long_lived_connections(mesh: LiveMesh) -> None:
    policy = "    connectionPool: {tcp: {maxConnectionDuration: 0.3s}}\n"
    mesh.apply(mesh.base + rule("reviews", policy))  # type: ignore[attr-defined]
    name = (
        "cluster.outbound|9080||reviews.default.svc.cluster.local.upstream_cx_max_duration_reached"
    )
    before = _stat(mesh, "sleep.default", name)
    assert request(f"{mesh.addr(10)}:15001", REVIEWS).status == 200
    wait_until(
        lambda: _stat(mesh, "sleep.default", name) > before, timeout=10, what="a max duration"
    )


def test_tcp_idle_timeout_closes_an_idle_tcp_connection(mesh: LiveMesh) -> None:
    mesh.apply(mesh.base + rule("tcp-echo", "    connectionPool: {tcp: {idleTimeout: 0.5s}}\n"))  # type: ignore[attr-defined]
    with socket.create_connection((mesh.addr(10), 9000), timeout=10) as sock:
        started = time.monotonic()
        assert sock.recv(1024) == b""  # closed by the sidecar, nothing ever sent
        assert time.monotonic() - started < 8  # the echo app would have waited forever


def test_tcp_keepalive_sets_so_keepalive_on_upstream_connections(mesh: LiveMesh) -> None:
    policy = "    connectionPool: {tcp: {tcpKeepalive: {time: 7s, interval: 3s, probes: 2}}}\n"
    mesh.apply(mesh.base + rule("reviews", policy))  # type: ignore[attr-defined]
    # A kept-alive upstream connection from sleep's sidecar to reviews: the kernel
    # shows its keepalive timer (`ss -o`), counting down from 7 s.
    assert request(f"{mesh.addr(10)}:15001", REVIEWS + "?n=1").status == 200

    peers = (f"{mesh.addr(21)}:9080", f"{mesh.addr(22)}:9080")

    def keepalive_timer() -> str:
        out = subprocess.run(
            ["ss", "-tno", "state", "established"], capture_output=True, text=True, check=True
        ).stdout
        # The sidecar's side of its connections to reviews (the peer column is reviews).
        lines = [line for line in out.splitlines() if line.split()[3:4] and any(
            line.split()[3] == peer for peer in peers)]  # fmt: skip
        return next((line for line in lines if "keepalive" in line), "")

    request(f"{mesh.addr(10)}:15001", REVIEWS + "?n=2")
    timer = wait_until(keepalive_timer, timeout=10, what="a keepalive timer on the connection")
    assert "timer:(keepalive," in timer


def test_max_retries_caps_concurrent_retries(mesh: LiveMesh) -> None:
    """connectionPool.http.maxRetries is Envoy's max_retries circuit breaker: retries
    beyond it at once are not made (upstream_rq_retry_overflow)."""
    mesh.apply(
        mesh.base  # type: ignore[attr-defined]
        + rule("reviews", "    connectionPool: {http: {maxRetries: 1}}\n")
        + """\
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews}}], retries: {attempts: 3, retryOn: 5xx}}]
"""
    )
    name = "cluster.outbound|9080||reviews.default.svc.cluster.local.upstream_rq_retry_overflow"
    before = _stat(mesh, "sleep.default", name)
    slow_failure = REVIEWS + "?status=503&sleep=0.3"
    with ThreadPoolExecutor(6) as pool:
        replies = list(
            pool.map(
                lambda _: request(f"{mesh.addr(10)}:15001", slow_failure, timeout=15), range(6)
            )
        )
    assert all(r.status == 503 for r in replies)
    assert _stat(mesh, "sleep.default", name) > before
