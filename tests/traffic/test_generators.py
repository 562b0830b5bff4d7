"""Translation of the traffic kinds, checked on the protobufs (no Envoy needed).

The end-to-end tests prove behaviour; these pin the details that are cheap to
check here: names, endpoint selection, policy merging, sharing, proxy kinds.
"""

from __future__ import annotations

from pathlib import Path

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2

from tests.traffic.mesh import EXAMPLES, REGISTRY
from xds_server import xds_types
from xds_server.galley.loader import load_paths
from xds_server.generators import PushContext, generate

REVIEWS = "reviews.default.svc.cluster.local"


def context(*examples: str, extra: str = "", tmp_path: Path | None = None) -> PushContext:
    paths: list[Path] = [REGISTRY, *(EXAMPLES / e for e in examples)]
    if extra:
        assert tmp_path is not None
        (tmp_path / "extra.yaml").write_text(extra)
        paths.append(tmp_path / "extra.yaml")
    return PushContext.build(load_paths(paths).config_or_raise())


def resources(ctx: PushContext, node: str, type_url: str) -> dict[str, object]:
    proxy = ctx.proxy(node)
    assert proxy is not None
    return generate(ctx, proxy)[type_url]  # type: ignore[return-value]


def vhost(ctx: PushContext, node: str, name: str) -> rc.VirtualHost:
    config = resources(ctx, node, xds_types.ROUTE)["15001"]
    assert isinstance(config, route_pb2.RouteConfiguration)
    return next(v for v in config.virtual_hosts if v.name == name)


def test_subsets_get_clusters_and_only_their_endpoints() -> None:
    ctx = context("request-routing")
    endpoints = resources(ctx, "productpage.default", xds_types.ENDPOINT)
    for subset, address in (("v1", "127.0.73.11"), ("v2", "127.0.73.12"), ("v3", "127.0.73.13")):
        cla = endpoints[f"outbound|9080|{subset}|{REVIEWS}"]
        addresses = [
            e.endpoint.address.socket_address.address
            for group in cla.endpoints  # type: ignore[attr-defined]
            for e in group.lb_endpoints
        ]
        assert addresses == [address]
    clusters = resources(ctx, "productpage.default", xds_types.CLUSTER)
    assert f"outbound|9080||{REVIEWS}" in clusters  # the plain service cluster stays


def test_virtual_service_routes_in_order_without_catch_all() -> None:
    ctx = context("routing-features")
    host = vhost(ctx, "productpage.default", f"{REVIEWS}:9080")
    names = [r.name for r in host.routes]
    assert names[:3] == ["exact", "regex", "ignore-case"]
    assert names.count("and-or.0") == 1 and names.count("and-or.1") == 1  # one per block
    routes = {r.name: r for r in host.routes}
    assert routes["exact"].match.path == "/exact"
    assert routes["regex"].match.safe_regex.regex == "/items/[0-9]+"
    assert routes["ignore-case"].match.case_sensitive.value is False
    assert routes["header-present"].match.headers[0].present_match
    assert routes["method"].match.headers[0].name == ":method"
    assert routes["without-headers"].match.headers[0].invert_match
    assert routes["redirect"].redirect.response_code == rc.RedirectAction.FOUND
    assert routes["rewrite"].route.prefix_rewrite == "/new"
    assert routes["exact"].route.cluster == f"outbound|9080|v1|{REVIEWS}"
    assert "envoy.filters.http.cors" in routes["cors"].typed_per_filter_config
    # No catch-all after the rules: a request none matches gets Envoy's 404.
    assert all(
        r.match.prefix != "/" or r.match.headers or r.match.query_parameters for r in host.routes
    )


def test_weighted_routes_and_hash_policy(tmp_path: Path) -> None:
    ctx = context("traffic-shifting")
    [route] = vhost(ctx, "productpage.default", f"{REVIEWS}:9080").routes
    weights = {c.name: c.weight.value for c in route.route.weighted_clusters.clusters}
    assert weights == {f"outbound|9080|v1|{REVIEWS}": 80, f"outbound|9080|v3|{REVIEWS}": 20}
    ctx = context("load-balancing")
    [route] = vhost(ctx, "productpage.default", f"{REVIEWS}:9080").routes
    assert route.route.hash_policy[0].header.header_name == "x-user"


def test_policy_levels_merge() -> None:
    ctx = context("load-balancing")
    clusters = resources(ctx, "productpage.default", xds_types.CLUSTER)
    top = clusters[f"outbound|9080||{REVIEWS}"]
    v1 = clusters[f"outbound|9080|v1|{REVIEWS}"]
    assert isinstance(top, cluster_pb2.Cluster) and isinstance(v1, cluster_pb2.Cluster)
    assert top.lb_policy == cluster_pb2.Cluster.RING_HASH
    assert v1.lb_policy == cluster_pb2.Cluster.LEAST_REQUEST  # the subset's own
    assert v1.outlier_detection.consecutive_5xx.value == 1  # inherited
    assert v1.circuit_breakers.thresholds[0].max_requests.value == 500  # port level


def test_source_labels_split_route_configs_and_equal_labels_share(tmp_path: Path) -> None:
    twin = """\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: productpage-2}
spec: {address: 127.0.73.16, labels: {app: productpage, version: v1}}
"""
    ctx = context("routing-features", extra=twin, tmp_path=tmp_path)
    mine = resources(ctx, "productpage.default", xds_types.ROUTE)["15001"]
    twins = resources(ctx, "productpage-2.default", xds_types.ROUTE)["15001"]
    sleeps = resources(ctx, "sleep.default", xds_types.ROUTE)["15001"]
    assert mine is twins  # same labels, same scope: one object, serialized once
    assert mine != sleeps
    names = {r.name for v in sleeps.virtual_hosts for r in v.routes}  # type: ignore[attr-defined]
    assert "source-labels" not in names


def test_gateway_proxy_gets_gateway_listeners_only() -> None:
    ctx = context("ingress-gateway")
    listeners = resources(ctx, "istio-ingressgateway.istio-system", xds_types.LISTENER)
    assert list(listeners) == ["127.0.73.5_8080"]
    routes = resources(ctx, "istio-ingressgateway.istio-system", xds_types.ROUTE)
    config = routes["http.8080"]
    assert isinstance(config, route_pb2.RouteConfiguration)
    [host] = config.virtual_hosts
    assert list(host.domains) == ["httpbin.example.com", "httpbin.example.com:8080"]
    # The sidecars know nothing of the gateway-only rule.
    sidecar = vhost(ctx, "productpage.default", "httpbin.default.svc.cluster.local:8000")
    assert [r.match.prefix for r in sidecar.routes] == ["/"]


def test_outbound_tcp_listener_and_no_clash_with_inbound() -> None:
    ctx = context("tcp-traffic-shifting")
    client = resources(ctx, "productpage.default", xds_types.LISTENER)
    assert "127.0.73.10_9000" in client
    listener = client["127.0.73.10_9000"]
    assert isinstance(listener, listener_pb2.Listener)
    server = resources(ctx, "tcp-echo-v1.default", xds_types.LISTENER)
    # tcp-echo-v1 serves 9000 itself: its 9000 listener is the inbound one.
    assert server["127.0.73.41_9000"].traffic_direction == 1  # type: ignore[attr-defined]


def test_source_namespace_and_several_mirrors(tmp_path: Path) -> None:
    rules = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - name: from-default
    match: [{sourceNamespace: default}]
    route: [{destination: {host: ratings}}]
    mirrors:
    - destination: {host: httpbin}
    - destination: {host: reviews}
      percentage: {value: 25}
  - name: from-elsewhere
    match: [{sourceNamespace: other}]
    route: [{destination: {host: ratings}}]
"""
    ctx = context(extra=rules, tmp_path=tmp_path)
    host = vhost(ctx, "productpage.default", "ratings.default.svc.cluster.local:9080")
    [route] = host.routes  # productpage is in namespace default: only the first rule
    assert route.name == "from-default"
    mirrors = [
        (m.cluster, m.runtime_fraction.default_value.numerator)
        for m in route.route.request_mirror_policies
    ]
    assert mirrors == [
        ("outbound|8000||httpbin.default.svc.cluster.local", 1_000_000),
        (f"outbound|9080||{REVIEWS}", 250_000),
    ]


def test_sidecar_resources_do_not_scope_gateways(tmp_path: Path) -> None:
    root_default = """\
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: istio-system}
spec:
  egress: [{hosts: [./*]}]
"""
    ctx = context("ingress-gateway", extra=root_default, tmp_path=tmp_path)
    gateway = resources(ctx, "istio-ingressgateway.istio-system", xds_types.CLUSTER)
    assert "outbound|8000||httpbin.default.svc.cluster.local" in gateway
    sidecar = resources(ctx, "productpage.default", xds_types.CLUSTER)  # ./* = default
    assert "outbound|8000||httpbin.default.svc.cluster.local" in sidecar
    sleep_scope = ctx.proxy("sleep.default")
    assert sleep_scope is not None and sleep_scope.sidecar is not None  # applies to sidecars


def test_https_servers_never_share_an_sni_name(tmp_path: Path) -> None:
    credential = (EXAMPLES / "secure-ingress-gateway" / "httpbin-credential.yaml").read_text()
    servers = [["a.example.com", "b.example.com"], ["b.example.com", "c.example.com"],
               ["b.example.com"], ["*"], ["*"]]  # fmt: skip
    gateways = "".join(
        f"""---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw{i}}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 8443, name: https, protocol: HTTPS}}
    tls: {{mode: SIMPLE, credentialName: httpbin-credential}}
    hosts: {hosts}
"""
        for i, hosts in enumerate(servers)
    )
    ctx = context(extra=credential + gateways, tmp_path=tmp_path)
    listeners = resources(ctx, "istio-ingressgateway.istio-system", xds_types.LISTENER)
    listener = listeners["127.0.73.5_8443"]
    assert isinstance(listener, listener_pb2.Listener)
    names = [list(c.filter_chain_match.server_names) for c in listener.filter_chains]
    # Istio's mergeGateways: a server with a name an earlier one serves is skipped whole.
    assert names == [["a.example.com", "b.example.com"], []]
    assert any("already served by an earlier server; skipped" in c for c in ctx.conflicts)
    assert listener.listener_filters[0].name == "envoy.filters.listener.tls_inspector"
