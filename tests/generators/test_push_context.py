"""Sidecar selection and scoping, exportTo, sharing across proxies, determinism."""

from __future__ import annotations

from google.protobuf.message import Message

from xds_server import xds_types
from xds_server.galley.model import MeshConfig
from xds_server.generators import PushContext, generate

from .factory import bookinfo, port, service, sidecar, workload

MYSQL = "outbound|3306||mysql.backend.svc.cluster.local"
RATINGS = "outbound|80||ratings.default.svc.cluster.local"
REVIEWS = "outbound|9080||reviews.default.svc.cluster.local"
HTTPBIN = "outbound|80||httpbin.org"


def _outbound(mesh: MeshConfig, node: str = "productpage-v1.default") -> list[str]:
    ctx = PushContext.build(mesh)
    proxy = ctx.proxy(node)
    assert proxy is not None
    out = generate(ctx, proxy)
    clusters = [n for n in out[xds_types.CLUSTER] if n.startswith("outbound|")]
    # Only visible services produce endpoints and vhosts, too.
    eds = set(out[xds_types.ENDPOINT])
    assert eds <= set(clusters)
    vhost_clusters = {
        vh.routes[0].route.cluster
        for vh in out[xds_types.ROUTE]["15001"].virtual_hosts  # type: ignore[attr-defined]
    }
    assert vhost_clusters <= set(clusters)
    return clusters


def test_unknown_node_id_has_no_proxy() -> None:
    ctx = PushContext.build(bookinfo())
    assert ctx.proxy("ghost.default") is None
    assert ctx.proxy("productpage-v1") is None
    assert ctx.proxy("productpage-v1.other") is None
    proxy = ctx.proxy("productpage-v1.default")
    assert proxy is not None
    assert (proxy.namespace, proxy.address, proxy.sidecar) == ("default", "127.0.0.2", None)


def test_no_sidecar_sees_everything() -> None:
    assert len(_outbound(bookinfo())) == 6


def test_egress_own_namespace_only() -> None:
    clusters = _outbound(bookinfo(sidecar(hosts=["./*"])))
    assert MYSQL not in clusters and REVIEWS in clusters and HTTPBIN in clusters


def test_egress_named_namespace() -> None:
    assert _outbound(bookinfo(sidecar(hosts=["backend/*"]))) == [MYSQL]


def test_egress_any_namespace_exact_host() -> None:
    assert _outbound(bookinfo(sidecar(hosts=["*/httpbin.org"]))) == [HTTPBIN]


def test_egress_wildcard_suffix_and_everything() -> None:
    assert _outbound(bookinfo(sidecar(hosts=["*/*.backend.svc.cluster.local"]))) == [MYSQL]
    assert len(_outbound(bookinfo(sidecar(hosts=["*/*"])))) == 6


def test_egress_none_namespace_hides_everything() -> None:
    assert _outbound(bookinfo(sidecar(hosts=["~/*"]))) == []


def test_selecting_sidecar_beats_namespace_default_beats_root() -> None:
    mesh = bookinfo(
        sidecar("root", "istio-system", hosts=["backend/*"]),
        sidecar("ns-default", "default", hosts=["*/httpbin.org"]),
        sidecar(
            "for-reviews",
            "default",
            selector={"app": "reviews"},
            hosts=["./ratings.default.svc.cluster.local"],
        ),
    )
    assert _outbound(mesh, "reviews-v1.default") == [RATINGS]
    assert _outbound(mesh, "productpage-v1.default") == [HTTPBIN]
    assert _outbound(mesh, "mysql-v1.backend") == [MYSQL]  # only the root one applies


def test_root_sidecar_dot_means_the_proxy_namespace() -> None:
    mesh = bookinfo(sidecar("default", "istio-system", hosts=["./*"]))
    assert _outbound(mesh, "mysql-v1.backend") == [MYSQL]
    assert MYSQL not in _outbound(mesh, "productpage-v1.default")


def test_sidecar_selector_in_another_namespace_does_not_apply() -> None:
    mesh = bookinfo(sidecar("x", "backend", selector={"app": "reviews"}, hosts=["~/*"]))
    assert len(_outbound(mesh, "reviews-v1.default")) == 6


def test_ambiguous_sidecars_are_reported() -> None:
    mesh = bookinfo(
        sidecar("a", hosts=["./*"]),
        sidecar("b", hosts=["~/*"]),
        sidecar("s1", selector={"app": "reviews"}, hosts=["./*"]),
        sidecar("s2", selector={"app": "reviews"}, hosts=["~/*"]),
    )
    ctx = PushContext.build(mesh)
    reviews, productpage = ctx.proxy("reviews-v1.default"), ctx.proxy("productpage-v1.default")
    assert reviews is not None and productpage is not None
    assert reviews.sidecar is not None and reviews.sidecar.meta.name == "s1"
    assert productpage.sidecar is not None and productpage.sidecar.meta.name == "a"
    assert any("default/a, default/b" in c for c in ctx.conflicts)
    assert any("default/s1, default/s2" in c for c in ctx.conflicts)


def test_export_to() -> None:
    mesh = bookinfo(
        service("private", "backend", port(80), export_to=["."]),
        service("shared", "backend", port(80), export_to=["default"]),
        service("public", "backend", port(80), export_to=["*"]),
        service("nowhere", "backend", port(80), export_to=["~"]),
    )
    default = _outbound(mesh)
    backend = _outbound(mesh, "mysql-v1.backend")
    name = "outbound|80||{}.backend.svc.cluster.local".format
    assert name("private") not in default and name("private") in backend
    assert name("shared") in default and name("shared") not in backend
    assert name("public") in default and name("public") in backend
    assert name("nowhere") not in default and name("nowhere") not in backend


def test_same_host_port_from_two_service_entries_keeps_the_first() -> None:
    mesh = bookinfo(service("zz", "default", port(80), hosts=["httpbin.org"]))
    ctx = PushContext.build(mesh)
    proxy = ctx.proxy("productpage-v1.default")
    assert proxy is not None
    cluster = generate(ctx, proxy)[xds_types.CLUSTER][HTTPBIN]
    assert cluster.type == cluster.STRICT_DNS  # type: ignore[attr-defined]
    assert any("defined by default/httpbin and default/zz" in c for c in ctx.conflicts)


# --- sharing ----------------------------------------------------------------------


def _by_identity(resources: dict[str, Message]) -> dict[str, int]:
    return {name: id(message) for name, message in resources.items()}


def test_proxies_of_one_scope_share_message_objects() -> None:
    ctx = PushContext.build(bookinfo())
    a, b = ctx.proxy("reviews-v1.default"), ctx.proxy("productpage-v1.default")
    assert a is not None and b is not None
    out_a, out_b = generate(ctx, a), generate(ctx, b)
    assert out_a[xds_types.ROUTE]["15001"] is out_b[xds_types.ROUTE]["15001"]
    for name in (REVIEWS, MYSQL, HTTPBIN):
        assert out_a[xds_types.CLUSTER][name] is out_b[xds_types.CLUSTER][name]
    for name in (REVIEWS, MYSQL):
        assert out_a[xds_types.ENDPOINT][name] is out_b[xds_types.ENDPOINT][name]
    # Both serve their app on 9080 at 127.0.0.1: equal inbound clusters are one object.
    assert out_a[xds_types.CLUSTER]["inbound|9080||"] is out_b[xds_types.CLUSTER]["inbound|9080||"]
    # Listeners bind each proxy's own address.
    assert (
        out_a[xds_types.LISTENER]["127.0.0.3_15001"]
        is not out_b[xds_types.LISTENER]["127.0.0.2_15001"]
    )
    # Generating again returns the very same objects.
    assert _by_identity(generate(ctx, a)[xds_types.CLUSTER]) == _by_identity(
        out_a[xds_types.CLUSTER]
    )


def test_route_config_differs_per_namespace_but_clusters_are_shared() -> None:
    ctx = PushContext.build(bookinfo())
    a, b = ctx.proxy("productpage-v1.default"), ctx.proxy("mysql-v1.backend")
    assert a is not None and b is not None
    out_a, out_b = generate(ctx, a), generate(ctx, b)
    assert out_a[xds_types.ROUTE]["15001"] is not out_b[xds_types.ROUTE]["15001"]
    assert out_a[xds_types.ROUTE]["15001"] != out_b[xds_types.ROUTE]["15001"]  # short names
    assert out_a[xds_types.CLUSTER][REVIEWS] is out_b[xds_types.CLUSTER][REVIEWS]


def test_different_sidecar_scope_means_different_route_config() -> None:
    mesh = bookinfo(sidecar("r", selector={"app": "reviews"}, hosts=["./*"]))
    ctx = PushContext.build(mesh)
    a, b, c = (
        ctx.proxy(n) for n in ("reviews-v1.default", "reviews-v2.default", "ratings-v1.default")
    )
    assert a is not None and b is not None and c is not None
    assert a.scope is b.scope and a.scope is not c.scope
    route = xds_types.ROUTE
    assert generate(ctx, a)[route]["15001"] is generate(ctx, b)[route]["15001"]
    assert generate(ctx, a)[route]["15001"] is not generate(ctx, c)[route]["15001"]


# --- determinism ----------------------------------------------------------------


def _serialized(mesh: MeshConfig) -> dict[str, dict[str, dict[str, bytes]]]:
    ctx = PushContext.build(mesh)
    return {
        proxy.node_id: {
            type_url: {name: m.SerializeToString(deterministic=True) for name, m in res.items()}
            for type_url, res in generate(ctx, proxy).items()
        }
        for proxy in ctx.proxies
    }


def test_output_is_deterministic_and_sorted_regardless_of_input_order() -> None:
    mesh = bookinfo(sidecar(hosts=["./*", "backend/*"]), workload("extra", address="127.0.0.70"))
    shuffled = MeshConfig(
        service_entries=mesh.service_entries[::-1],
        workload_entries=mesh.workload_entries[::-1],
        sidecars=mesh.sidecars[::-1],
    )
    first = _serialized(mesh)
    assert first == _serialized(shuffled)
    for per_type in first.values():
        assert list(per_type) == list(xds_types.PUSH_ORDER)
        for resources in per_type.values():
            assert list(resources) == sorted(resources)
    assert PushContext.build(mesh).conflicts == PushContext.build(shuffled).conflicts


def test_secret_type_is_present_and_empty() -> None:
    ctx = PushContext.build(bookinfo())
    proxy = ctx.proxy("productpage-v1.default")
    assert proxy is not None
    assert generate(ctx, proxy)[xds_types.SECRET] == {}
