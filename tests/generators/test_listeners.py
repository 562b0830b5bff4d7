from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from xds_server import xds_types
from xds_server.galley.model import MeshConfig
from xds_server.generators import PushContext, generate

from .factory import bookinfo, endpoint, ingress, port, service, sidecar, workload

Listener = listener_pb2.Listener


def _generate(mesh: MeshConfig, node: str) -> dict[str, dict[str, object]]:
    ctx = PushContext.build(mesh)
    proxy = ctx.proxy(node)
    assert proxy is not None
    return generate(ctx, proxy)  # type: ignore[return-value]


def _listeners(mesh: MeshConfig, node: str) -> dict[str, Listener]:
    return _generate(mesh, node)[xds_types.LISTENER]  # type: ignore[return-value]


def _not_tcp_out(listeners: dict[str, Listener]) -> list[str]:
    """Listener names without the outbound TCP ones (tests/traffic covers those)."""
    return [
        name
        for name, listener in listeners.items()
        if listener.traffic_direction != base_pb2.OUTBOUND or name.endswith("_15001")
    ]


def _hcm(listener: Listener) -> hcm_pb2.HttpConnectionManager:
    [chain] = listener.filter_chains
    [network_filter] = chain.filters
    assert network_filter.name == "envoy.filters.network.http_connection_manager"
    hcm = hcm_pb2.HttpConnectionManager()
    assert network_filter.typed_config.Unpack(hcm)
    return hcm


def _tcp(listener: Listener) -> tcp_proxy_pb2.TcpProxy:
    network_filter = listener.filter_chains[0].filters[0]
    assert network_filter.name == "envoy.filters.network.tcp_proxy"
    proxy = tcp_proxy_pb2.TcpProxy()
    assert network_filter.typed_config.Unpack(proxy)
    return proxy


def _bound(listener: Listener) -> tuple[str, int]:
    address = listener.address.socket_address
    return address.address, address.port_value


def _upstream(cluster: cluster_pb2.Cluster) -> tuple[str, int]:
    address = cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address
    return address.socket_address.address, address.socket_address.port_value


def test_outbound_http_proxy_listener() -> None:
    listener = _listeners(bookinfo(), "productpage-v1.default")["127.0.0.2_15001"]
    assert _bound(listener) == ("127.0.0.2", 15001)
    assert listener.traffic_direction == base_pb2.OUTBOUND
    hcm = _hcm(listener)
    assert hcm.stat_prefix == "outbound_15001"
    assert hcm.rds.route_config_name == "15001"
    assert hcm.rds.config_source.HasField("ads")
    assert hcm.http_protocol_options.allow_absolute_url.value is True
    # Fault and CORS (VirtualService features) run before the router.
    assert [f.name for f in hcm.http_filters][-1] == "envoy.filters.http.router"


def test_derived_inbound_http_listener() -> None:
    listeners = _listeners(bookinfo(), "reviews-v2.default")
    assert _not_tcp_out(listeners) == ["127.0.0.4_15001", "127.0.0.4_19080", "127.0.0.4_9443"]
    listener = listeners["127.0.0.4_19080"]
    assert _bound(listener) == ("127.0.0.4", 19080)
    assert listener.traffic_direction == base_pb2.INBOUND
    hcm = _hcm(listener)
    assert hcm.stat_prefix == "inbound_19080"
    route_config = hcm.route_config
    assert route_config.name == "inbound|19080||"
    [vhost] = route_config.virtual_hosts
    assert (vhost.name, list(vhost.domains)) == ("inbound|http|19080", ["*"])
    [route] = vhost.routes
    assert route.match.prefix == "/"
    assert route.route.cluster == "inbound|19080||"
    assert route.route.HasField("timeout") and route.route.timeout.seconds == 0


def test_derived_inbound_tcp_listener() -> None:
    listener = _listeners(bookinfo(), "mysql-v1.backend")["127.0.0.6_3306"]
    assert _bound(listener) == ("127.0.0.6", 3306)
    assert _tcp(listener).cluster == "inbound|3306||"


def test_inline_endpoint_matched_by_address_gets_inbound() -> None:
    mesh = bookinfo(
        service(
            "vm",
            "default",
            port(7000, "TCP", "tcp"),
            selector=None,
            endpoints=[endpoint("127.0.0.40", tcp=7070)],
        ),
        workload("vm-1", address="127.0.0.40", labels={"role": "vm"}),
    )
    assert _not_tcp_out(_listeners(mesh, "vm-1.default")) == ["127.0.0.40_15001", "127.0.0.40_7070"]


def test_workload_backing_nothing_has_only_the_outbound_listener() -> None:
    mesh = bookinfo(workload("sleep", address="127.0.0.50"))
    assert _not_tcp_out(_listeners(mesh, "sleep.default")) == ["127.0.0.50_15001"]


def test_sidecar_ingress_replaces_derived_listeners_and_resolves_default_endpoints() -> None:
    mesh = bookinfo(
        sidecar(
            "reviews",
            selector={"app": "reviews"},
            ingress=[
                ingress(8000, "HTTP"),
                ingress(8001, "HTTP", "127.0.0.1:18001"),
                ingress(8002, "TCP", "0.0.0.0:18002"),
                ingress(8003, "GRPC", "app.local:18003", bind="127.0.0.99"),
            ],
        )
    )
    out = _generate(mesh, "reviews-v1.default")
    listeners: dict[str, Listener] = out[xds_types.LISTENER]  # type: ignore[assignment]
    clusters: dict[str, cluster_pb2.Cluster] = out[xds_types.CLUSTER]  # type: ignore[assignment]
    assert _not_tcp_out(listeners) == [
        "127.0.0.3_15001",
        "127.0.0.3_8000",
        "127.0.0.3_8001",
        "127.0.0.3_8002",
        "127.0.0.99_8003",
    ]
    assert _bound(listeners["127.0.0.99_8003"]) == ("127.0.0.99", 8003)
    assert _tcp(listeners["127.0.0.3_8002"]).cluster == "inbound|8002||"
    assert _hcm(listeners["127.0.0.3_8001"]).route_config.name == "inbound|8001||"
    assert _upstream(clusters["inbound|8000||"]) == ("127.0.0.1", 8000)
    assert _upstream(clusters["inbound|8001||"]) == ("127.0.0.1", 18001)
    assert _upstream(clusters["inbound|8002||"]) == ("127.0.0.3", 18002)  # 0.0.0.0 = workload
    assert _upstream(clusters["inbound|8003||"]) == ("app.local", 18003)
    assert clusters["inbound|8003||"].type == cluster_pb2.Cluster.STRICT_DNS
    assert clusters["inbound|8000||"].type == cluster_pb2.Cluster.STATIC
    assert "inbound|9080||" not in clusters  # derived inbound replaced


def test_inbound_on_the_outbound_port_is_refused() -> None:
    mesh = bookinfo(sidecar("pp", selector={"app": "productpage"}, ingress=[ingress(15001)]))
    ctx = PushContext.build(mesh)
    proxy = ctx.proxy("productpage-v1.default")
    assert proxy is not None
    assert _not_tcp_out(generate(ctx, proxy)[xds_types.LISTENER]) == ["127.0.0.2_15001"]
    assert any("reserved" in c for c in ctx.conflicts)


def test_two_services_on_one_target_port_keep_the_first() -> None:
    mesh = bookinfo(
        service("alias", "default", port(9080, "TCP", "tcp"), selector={"app": "reviews"})
    )
    ctx = PushContext.build(mesh)
    proxy = ctx.proxy("reviews-v1.default")
    assert proxy is not None
    listener = generate(ctx, proxy)[xds_types.LISTENER]["127.0.0.3_9080"]
    assert isinstance(listener, Listener)
    _tcp(listener)  # default/alias sorts before default/reviews
    assert any("inbound port 9080 declared twice" in c for c in ctx.conflicts)


def test_workload_without_ip_gets_no_proxy_and_bad_bind_is_skipped() -> None:
    mesh = bookinfo(
        workload("named", address="vm.example.com"),
        sidecar("pp", selector={"app": "productpage"}, ingress=[ingress(8000, bind="app.local")]),
    )
    ctx = PushContext.build(mesh)
    assert ctx.proxy("named.default") is None
    proxy = ctx.proxy("productpage-v1.default")
    assert proxy is not None
    assert _not_tcp_out(generate(ctx, proxy)[xds_types.LISTENER]) == ["127.0.0.2_15001"]
    assert any("'vm.example.com' is not an IP" in c for c in ctx.conflicts)
    assert any("bind 'app.local' is not an IP" in c for c in ctx.conflicts)
