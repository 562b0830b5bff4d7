"""Every VirtualService match and action, and DestinationRule policies, through real Envoy.

Uses `config/examples/routing-features` and `load-balancing` on the package's
running mesh (see conftest.py): each rule of the example tags its answer with
`x-rule`, so a test can tell exactly which rule matched a request.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from tests.e2e.harness import wait_until
from tests.traffic.apps import direct, request
from tests.traffic.mesh import CLIENT, NET, Mesh, cluster_dump

FQDN = "http://reviews.default.svc.cluster.local:9080"
SLEEP = f"{NET}.15:15001"  # a second client, labelled app=sleep


def rule(path: str, proxy: str = CLIENT, **kw: object) -> str | None:
    reply = request(proxy, FQDN + path, **kw)  # type: ignore[arg-type]
    return reply.headers.get("x-rule") if reply.status == 200 else f"status {reply.status}"


def test_matches_first_wins_and_404_when_none(mesh: Mesh) -> None:
    mesh.use("routing-features")
    assert rule("/exact") == "exact"
    assert rule("/exact/more") == "status 404"  # exact is exact; nothing else matches
    assert rule("/items/42") == "regex"
    assert rule("/items/42x") == "status 404"  # the regex must match the whole path
    assert rule("/CASE/Sensitive") == "ignore-case"
    assert rule("/", headers={"x-group": "beta-testers"}) == "header-prefix"
    assert rule("/", headers={"x-group": "alpha"}) == "status 404"
    assert rule("/", headers={"x-id": "cafe"}) == "header-regex"
    assert rule("/", headers={"x-id": "cafe1"}) == "status 404"
    assert rule("/", headers={"x-debug": ""}) == "header-present"
    assert rule("/?version=v3") == "query"
    assert rule("/?version=v2") == "status 404"
    assert rule("/", method="POST") == "method"
    reply = request(CLIENT, "http://reviews.default.svc:9080/")
    assert reply.headers.get("x-rule") == "authority"
    # Blocks are OR, fields in a block AND.
    assert rule("/and", headers={"x-a": "1"}) == "and-or"
    assert rule("/and") == "status 404"
    assert rule("/or") == "and-or"
    assert rule("/without") == "without-headers"
    assert rule("/without", headers={"x-skip": "1"}) == "status 404"
    assert rule("/port") == "port"
    # An earlier rule wins over a later one that also matches.
    assert rule("/exact", headers={"x-debug": "1"}) == "exact"


def test_source_labels_pick_the_client(mesh: Mesh) -> None:
    mesh.use("routing-features")
    mesh.envoy("sleep")
    assert rule("/source") == "source-labels"  # productpage matches app=productpage
    assert rule("/source", proxy=SLEEP) == "status 404"  # sleep does not
    assert rule("/exact", proxy=SLEEP) == "exact"


def test_rewrite_redirect_and_headers(mesh: Mesh) -> None:
    mesh.use("routing-features")
    reply = request(CLIENT, FQDN + "/old/page")
    assert reply.headers.get("x-rule") == "rewrite"
    assert reply.data["path"] == "/new/page"
    assert reply.data["headers"]["host"] == "reviews.internal"

    reply = request(CLIENT, FQDN + "/redirect")
    assert reply.status == 302
    assert reply.headers["location"] == "http://example.com/elsewhere"
    reply = request(CLIENT, FQDN + "/secure/page")
    assert reply.status == 301
    assert reply.headers["location"] == "https://reviews.default.svc.cluster.local:8443/secure/page"
    for _ in range(10):  # 50/50: each answer carries its own destination's headers
        reply = request(CLIENT, FQDN + "/split")
        version = reply.app.removeprefix("reviews-") if reply.app else None
        assert reply.headers["x-version"] == version
        assert reply.data["headers"].get("x-picked") == ("v2" if version == "v2" else None)
    before = len(mesh.app("reviews-v1").seen)
    reply = request(CLIENT, FQDN + "/direct")
    assert (reply.status, reply.body) == (418, "I'm a teapot")
    assert len(mesh.app("reviews-v1").seen) == before

    reply = request(CLIENT, FQDN + "/headers", headers={"x-remove": "me", "x-add": "one"})
    seen = reply.data["headers"]
    assert seen["x-set"] == "one"
    assert "x-remove" not in seen
    assert seen["x-add"] in ("one,two", "one, two")  # appended to what the client sent
    assert reply.headers["x-rule"] == "headers"
    assert reply.headers["x-extra"] == "yes"


def route_dump(mesh: Mesh, name: str) -> dict[str, Any]:
    """The route `name` (an HTTP route's name, as Istio names Envoy routes) as the client's
    Envoy holds it."""
    for config in mesh.envoy("productpage").config_dump()["configs"]:
        for entry in config.get("dynamic_route_configs", []):
            for vhost in entry["route_config"].get("virtual_hosts", []):
                for route in vhost.get("routes", []):
                    if route.get("name") == name:
                        return dict(route)
    raise AssertionError(f"no route {name} in productpage's Envoy")


def test_regex_rewrite_retries_stat_prefix_and_grpc_fault(mesh: Mesh) -> None:
    mesh.use("routing-features")
    # Istio's reference example of uriRegexRewrite, as the app sees the path.
    reply = request(CLIENT, FQDN + "/service/orders/list")
    assert reply.headers.get("x-rule") == "regex-rewrite"
    assert reply.data["path"] == "/list/instance/orders"
    # statPrefix: the route's own stats in Envoy.
    counted = mesh.envoy("productpage").stats("vhost")
    assert any(".route.service-rewrite." in k and v >= 1 for k, v in counted.items()), counted
    # A gRPC abort: to a gRPC request Envoy answers as a gRPC server would, trailers-only
    # with grpc-status 14 (UNAVAILABLE).
    before = len(mesh.app("reviews-v1").seen)
    grpc = {"content-type": "application/grpc"}
    reply = request(CLIENT, FQDN + "/grpc-fault", headers=grpc)  # POST: the method rule
    assert (reply.status, reply.headers.get("grpc-status")) == (200, "14"), reply
    assert len(mesh.app("reviews-v1").seen) == before
    # Retries: other hosts than the ones tried (Istio's previous_hosts), 25 ms back-off.
    assert rule("/retry") == "retries"
    policy = route_dump(mesh, "retries")["route"]["retry_policy"]
    assert [p["name"] for p in policy["retry_host_predicate"]] == [
        "envoy.retry_host_predicates.previous_hosts"
    ]
    assert policy["host_selection_retry_max_attempts"] == "5"
    assert policy["retry_back_off"]["base_interval"] == "0.025s"


def test_cors_preflight_answered_by_envoy(mesh: Mesh) -> None:
    mesh.use("routing-features")
    before = len(mesh.app("reviews-v1").seen)
    preflight = {
        "origin": "https://example.com",
        "access-control-request-method": "POST",
    }
    reply = request(CLIENT, FQDN + "/cors", method="OPTIONS", headers=preflight)
    assert reply.status == 200
    assert reply.headers["access-control-allow-origin"] == "https://example.com"
    assert reply.headers["access-control-allow-methods"] == "GET,POST"
    assert reply.headers["access-control-max-age"] == "86400"
    assert len(mesh.app("reviews-v1").seen) == before  # the app never saw the preflight
    other = request(CLIENT, FQDN + "/cors", headers={"origin": "https://evil.example"}).headers
    assert "access-control-allow-origin" not in other


def test_gateway_and_mesh_both(mesh: Mesh) -> None:
    """`gateways: [httpbin-gateway, mesh]` applies the rule at the gateway and on sidecars."""
    both = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: httpbin}
spec:
  hosts: [httpbin.example.com, httpbin]
  gateways: [httpbin-gateway, mesh]
  http:
  - match: [{uri: {prefix: /status}}]
    headers: {response: {set: {x-rule: both}}}
    route: [{destination: {host: httpbin, port: {number: 8000}}}]
"""
    mesh.use(extra={"both.yaml": both, "gateway.yaml": _gateway_only()})
    mesh.envoy("istio-ingressgateway", "istio-system")
    reply = wait_until(
        lambda: (
            r
            if (
                r := direct(f"{NET}.5:8080", "/status/1", headers={"Host": "httpbin.example.com"})
            ).status
            == 200
            else None
        ),
        timeout=10,
        what="the gateway answers",
    )
    assert reply.headers["x-rule"] == "both"
    assert request(CLIENT, "http://httpbin:8000/status/1").headers["x-rule"] == "both"
    assert request(CLIENT, "http://httpbin:8000/other").status == 404


def _gateway_only() -> str:
    return """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: httpbin-gateway}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: [httpbin.example.com]
"""


def test_destination_rule_policies_reach_envoy(mesh: Mesh) -> None:
    mesh.use("load-balancing")
    envoy = mesh.envoys["productpage.default"]
    top = cluster_dump(envoy, "outbound|9080||reviews.default.svc.cluster.local")
    assert top["lb_policy"] == "RING_HASH"
    assert top["outlier_detection"]["consecutive_5xx"] == 1
    assert top["outlier_detection"]["base_ejection_time"] == "300s"
    assert top["circuit_breakers"]["thresholds"][0]["max_requests"] == 500
    options = top["typed_extension_protocol_options"]
    [http_options] = options.values()
    assert http_options["common_http_protocol_options"]["max_requests_per_connection"] == 10
    v1 = cluster_dump(envoy, "outbound|9080|v1|reviews.default.svc.cluster.local")
    assert v1["lb_policy"] == "LEAST_REQUEST"
    assert "outlier_detection" in v1  # inherited from the top level
    v2 = cluster_dump(envoy, "outbound|9080|v2|reviews.default.svc.cluster.local")
    assert v2["lb_policy"] == "RANDOM"
    ratings = cluster_dump(envoy, "outbound|9080||ratings.default.svc.cluster.local")
    assert ratings.get("lb_policy", "ROUND_ROBIN") == "ROUND_ROBIN"


def test_consistent_hash_is_sticky(mesh: Mesh) -> None:
    mesh.use("load-balancing")
    picks: dict[str, set[str | None]] = {}
    for user in (f"user-{i}" for i in range(12)):
        picks[user] = {request(CLIENT, FQDN + "/", headers={"x-user": user}).app for _ in range(5)}
    assert all(len(apps) == 1 for apps in picks.values()), picks
    # 12 users over 3 endpoints: all on one would be a broken hash (chance 3 * 3^-12).
    assert len({next(iter(a)) for a in picks.values()}) >= 2, picks


def test_outlier_detection_ejects_a_failing_endpoint(mesh: Mesh) -> None:
    mesh.use("load-balancing")
    failing = mesh.app("reviews-v3")
    failing.always_status = 500
    try:
        users = [f"u{i}" for i in range(30)]

        def ejected() -> bool:
            for user in users:
                request(CLIENT, FQDN + "/", headers={"x-user": user})
            stats = mesh.envoys["productpage.default"].stats(
                "cluster.outbound|9080||reviews.default.svc.cluster.local.outlier_detection"
            )
            return any(k.endswith("ejections_enforced_total") and v for k, v in stats.items())

        wait_until(ejected, timeout=10, what="reviews-v3 ejected")
        after = Counter(request(CLIENT, FQDN + "/", headers={"x-user": u}).status for u in users)
        assert after == {200: len(users)}, after
    finally:
        failing.always_status = None


def test_sidecar_egress_scopes_what_a_proxy_sees(mesh: Mesh) -> None:
    """Istio's Sidecar `egress[].hosts`: sleep only gets config for reviews."""
    scoped = """\
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: sleep}
spec:
  workloadSelector: {labels: {app: sleep}}
  egress:
  - hosts: [./reviews.default.svc.cluster.local]
"""
    mesh.use("request-routing", extra={"sidecar.yaml": scoped})
    sleep = mesh.envoy("sleep")

    def outbound_clusters(node: str) -> set[str]:
        dump = mesh.envoys[node].config_dump()
        return {
            entry["cluster"]["name"]
            for config in dump["configs"]
            for entry in config.get("dynamic_active_clusters", [])
            if entry["cluster"]["name"].startswith("outbound|")
        }

    assert outbound_clusters(sleep.name) == {
        f"outbound|9080|{subset}|reviews.default.svc.cluster.local"
        for subset in ("", "v1", "v2", "v3")
    }
    assert len(outbound_clusters("productpage.default")) > 4
    assert request(SLEEP, FQDN + "/").app == "reviews-v1"  # the VirtualService still applies
    assert request(SLEEP, "http://ratings:9080/").status == 404  # not in its egress
    assert request(CLIENT, "http://ratings:9080/").status == 200
