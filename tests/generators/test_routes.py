from __future__ import annotations

from envoy.config.route.v3 import route_pb2

from xds_server import xds_types
from xds_server.galley.model import MeshConfig
from xds_server.generators import PushContext, generate

from .factory import bookinfo, port, service, workload

RouteConfiguration = route_pb2.RouteConfiguration


def _routes(mesh: MeshConfig, node: str = "productpage-v1.default") -> RouteConfiguration:
    ctx = PushContext.build(mesh)
    proxy = ctx.proxy(node)
    assert proxy is not None
    route = generate(ctx, proxy)[xds_types.ROUTE]["15001"]
    assert isinstance(route, RouteConfiguration)
    return route


def _domains(route: RouteConfiguration) -> dict[str, list[str]]:
    return {vh.name: list(vh.domains) for vh in route.virtual_hosts}


def test_one_vhost_per_http_host_port_routing_to_its_cluster() -> None:
    route = _routes(bookinfo())
    assert route.name == "15001"
    assert route.HasField("validate_clusters") and route.validate_clusters.value is False
    # mysql (TCP) has no vhost; sorted by (namespace, name, host, port).
    assert [vh.name for vh in route.virtual_hosts] == [
        "httpbin.org:80",
        "productpage.default.svc.cluster.local:9080",
        "ratings.default.svc.cluster.local:80",
        "reviews.default.svc.cluster.local:9080",
        "reviews.default.svc.cluster.local:9443",
    ]
    for vh in route.virtual_hosts:
        [r] = vh.routes
        assert r.match.prefix == "/"
        host, _, number = vh.name.rpartition(":")
        assert r.route.cluster == f"outbound|{number}||{host}"
        assert r.route.HasField("timeout") and r.route.timeout.ToSeconds() == 0


def test_short_names_and_the_port_80_rule() -> None:
    domains = _domains(_routes(bookinfo()))
    # ratings has port 80: port-less names go there.
    assert domains["ratings.default.svc.cluster.local:80"] == [
        "ratings.default.svc.cluster.local:80",
        "ratings.default.svc:80",
        "ratings.default:80",
        "ratings:80",
        "ratings.default.svc.cluster.local",
        "ratings.default.svc",
        "ratings.default",
        "ratings",
    ]
    # reviews has two HTTP ports, neither 80: no port-less names at all.
    assert domains["reviews.default.svc.cluster.local:9080"] == [
        "reviews.default.svc.cluster.local:9080",
        "reviews.default.svc:9080",
        "reviews.default:9080",
        "reviews:9080",
    ]
    # productpage has exactly one HTTP port: it takes the port-less names.
    assert "productpage" in domains["productpage.default.svc.cluster.local:9080"]
    assert domains["httpbin.org:80"] == ["httpbin.org:80", "httpbin.org"]


def test_port_80_wins_portless_names_over_other_http_ports() -> None:
    mesh = bookinfo(service("web", "default", port(80, "HTTP", "http"), port(8080, "HTTP", "alt")))
    domains = _domains(_routes(mesh))
    assert "web" in domains["web.default.svc.cluster.local:80"]
    assert domains["web.default.svc.cluster.local:8080"][-1] == "web:8080"


def test_single_http_port_beside_tcp_ports_takes_portless_names() -> None:
    mesh = bookinfo(service("mix", "default", port(81, "TCP", "tcp"), port(8080, "HTTP", "http")))
    assert "mix" in _domains(_routes(mesh))["mix.default.svc.cluster.local:8080"]


def test_bare_short_name_only_in_the_service_namespace() -> None:
    mesh = bookinfo(workload("client", "shop", address="127.0.0.60"))
    domains = _domains(_routes(mesh, "client.shop"))
    ratings = domains["ratings.default.svc.cluster.local:80"]
    assert "ratings.default" in ratings and "ratings.default:80" in ratings
    assert "ratings" not in ratings and "ratings:80" not in ratings


def test_no_catch_all_and_no_duplicate_domain() -> None:
    route = _routes(bookinfo())
    all_domains = [d for vh in route.virtual_hosts for d in vh.domains]
    assert "*" not in all_domains
    assert len(all_domains) == len(set(all_domains))


def test_duplicate_domain_first_claim_wins_and_is_reported() -> None:
    # A literal host "ratings.default" collides with the alias of ratings.default.svc...
    mesh = bookinfo(
        service("zz-alias", "default", port(80, "HTTP", "http"), hosts=["ratings.default"])
    )
    ctx = PushContext.build(mesh)
    proxy = ctx.proxy("productpage-v1.default")
    assert proxy is not None
    route = generate(ctx, proxy)[xds_types.ROUTE]["15001"]
    assert isinstance(route, RouteConfiguration)
    domains = _domains(route)
    # default/ratings sorts before default/zz-alias: it keeps both forms.
    assert "ratings.default:80" in domains["ratings.default.svc.cluster.local:80"]
    assert "ratings.default" in domains["ratings.default.svc.cluster.local:80"]
    # The loser lost every domain: it is dropped rather than sent with none (Envoy NACKs that).
    assert "ratings.default:80" not in domains
    assert any("'ratings.default:80'" in c for c in ctx.conflicts)
    assert any("no domain left" in c for c in ctx.conflicts)


def test_service_vips_are_domains() -> None:
    mesh = bookinfo(
        service("vip", "default", port(8080, "HTTP", "http"), addresses=["10.0.0.5", "10.1.0.0/16"])
    )
    domains = _domains(_routes(mesh))["vip.default.svc.cluster.local:8080"]
    assert "10.0.0.5:8080" in domains and "10.0.0.5" in domains
    assert not any("/" in d for d in domains)


def test_vips_go_with_the_first_host_only() -> None:
    mesh = bookinfo(
        service(
            "multi",
            "default",
            port(8080, "HTTP", "http"),
            hosts=["b.example.com", "a.example.com"],
            addresses=["10.0.0.6"],
        )
    )
    ctx = PushContext.build(mesh)
    proxy = ctx.proxy("productpage-v1.default")
    assert proxy is not None
    route = generate(ctx, proxy)[xds_types.ROUTE]["15001"]
    assert isinstance(route, RouteConfiguration)
    domains = _domains(route)
    assert "10.0.0.6:8080" in domains["a.example.com:8080"]
    assert not any(d.startswith("10.") for d in domains["b.example.com:8080"])
    assert not ctx.conflicts
