from __future__ import annotations

import dataclasses
from types import MappingProxyType

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import config_source_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from xds_server import xds_types
from xds_server.galley.model_traffic import Gateway, GatewayServer
from xds_server.generators import PushContext, generate
from xds_server.generators.traffic_policy import HTTP_PROTOCOL_OPTIONS_KEY

from .factory import bookinfo, endpoint, meta, port, service, workload

Cluster = cluster_pb2.Cluster
REVIEWS = "outbound|9080||reviews.default.svc.cluster.local"


def _clusters(mesh: object, node: str = "productpage-v1.default") -> dict[str, Cluster]:
    ctx = PushContext.build(mesh)  # type: ignore[arg-type]
    proxy = ctx.proxy(node)
    assert proxy is not None
    return generate(ctx, proxy)[xds_types.CLUSTER]  # type: ignore[return-value]


def test_outbound_cluster_names_cover_every_visible_host_port() -> None:
    assert list(_clusters(bookinfo())) == [
        "inbound|9080||",
        "outbound|3306||mysql.backend.svc.cluster.local",
        "outbound|80||httpbin.org",
        "outbound|80||ratings.default.svc.cluster.local",
        "outbound|9080||productpage.default.svc.cluster.local",
        REVIEWS,
        "outbound|9443||reviews.default.svc.cluster.local",
    ]


def test_static_service_is_an_eds_cluster_over_ads() -> None:
    cluster = _clusters(bookinfo())[REVIEWS]
    assert cluster.type == Cluster.EDS
    assert cluster.eds_cluster_config.service_name == REVIEWS
    eds = cluster.eds_cluster_config.eds_config
    assert eds.HasField("ads") and eds.resource_api_version == config_source_pb2.V3
    assert cluster.connect_timeout.seconds == 10
    assert cluster.lb_policy == Cluster.ROUND_ROBIN
    assert not cluster.HasField("load_assignment")
    assert not cluster.typed_extension_protocol_options  # HTTP/1.1 stays default


def test_grpc_and_http2_ports_upstream_speak_h2() -> None:
    cluster = _clusters(bookinfo())["outbound|9443||reviews.default.svc.cluster.local"]
    options = http_protocol_options_pb2.HttpProtocolOptions()
    assert cluster.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS_KEY].Unpack(options)
    assert options.explicit_http_config.HasField("http2_protocol_options")


def test_none_resolution_forwards_http_to_the_authority_on_sidecars_only() -> None:
    """Istio's ORIGINAL_DST: on the HTTP proxy, the request's authority (Envoy's dynamic
    forward proxy); gateways load-balance over the endpoints, as Istio's do."""
    mesh = bookinfo(
        service(
            "vm", "default", selector=None, resolution="NONE", endpoints=[endpoint("10.0.0.1")]
        ),
        workload("ingress", "default", "127.0.0.9", {"istio": "ingressgateway"}),
    )
    gateway = Gateway(
        meta("Gateway", "gw"),
        MappingProxyType({"istio": "ingressgateway"}),
        (GatewayServer(8080, "HTTP", "http", ("*",)),),
    )
    mesh = dataclasses.replace(mesh, gateways=(gateway,))
    cluster = _clusters(mesh)["outbound|9080||vm.default.svc.cluster.local"]
    assert cluster.cluster_type.name == "envoy.clusters.dynamic_forward_proxy"
    assert cluster.lb_policy == Cluster.CLUSTER_PROVIDED
    at_gateway = _clusters(mesh, "ingress.default")["outbound|9080||vm.default.svc.cluster.local"]
    assert at_gateway.type == Cluster.EDS


def test_dns_service_without_endpoints_resolves_its_host() -> None:
    cluster = _clusters(bookinfo())["outbound|80||httpbin.org"]
    assert cluster.type == Cluster.STRICT_DNS
    assert not cluster.HasField("eds_cluster_config")
    [locality] = cluster.load_assignment.endpoints
    [lb] = locality.lb_endpoints
    address = lb.endpoint.address.socket_address
    assert (address.address, address.port_value) == ("httpbin.org", 80)


def test_dns_service_with_endpoints_inlines_them() -> None:
    mesh = bookinfo(
        service(
            "db",
            "default",
            port(5432, "TCP", "pg"),
            hosts=["db.example.com"],
            selector=None,
            resolution="DNS",
            endpoints=[endpoint("db-b.example.com"), endpoint("db-a.example.com", pg=6432)],
        )
    )
    cluster = _clusters(mesh)["outbound|5432||db.example.com"]
    assert cluster.type == Cluster.STRICT_DNS
    got = [
        (lb.endpoint.address.socket_address.address, lb.endpoint.address.socket_address.port_value)
        for lb in cluster.load_assignment.endpoints[0].lb_endpoints
    ]
    assert got == [("db-a.example.com", 6432), ("db-b.example.com", 5432)]


def test_dns_round_robin_is_logical_dns_with_one_endpoint() -> None:
    mesh = bookinfo(
        service(
            "api",
            "default",
            hosts=["api.example.com"],
            selector=None,
            resolution="DNS_ROUND_ROBIN",
            endpoints=[endpoint("b.example.com"), endpoint("a.example.com")],
        )
    )
    ctx = PushContext.build(mesh)
    proxy = ctx.proxy("productpage-v1.default")
    assert proxy is not None
    cluster = generate(ctx, proxy)[xds_types.CLUSTER]["outbound|9080||api.example.com"]
    assert isinstance(cluster, Cluster)
    assert cluster.type == Cluster.LOGICAL_DNS
    [locality] = cluster.load_assignment.endpoints
    [lb] = locality.lb_endpoints
    assert lb.endpoint.address.socket_address.address == "a.example.com"
    assert any("LOGICAL_DNS" in c for c in ctx.conflicts)


def test_inbound_cluster_points_at_the_local_app() -> None:
    clusters = _clusters(bookinfo(), "reviews-v2.default")
    # reviews-v2 serves "http" on 19080 (WorkloadEntry.ports) and grpc on the port number.
    assert [n for n in clusters if n.startswith("inbound")] == ["inbound|19080||", "inbound|9443||"]
    cluster = clusters["inbound|19080||"]
    assert cluster.type == Cluster.STATIC
    address = cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address
    assert (address.socket_address.address, address.socket_address.port_value) == (
        "127.0.0.1",
        19080,
    )
    assert HTTP_PROTOCOL_OPTIONS_KEY in clusters["inbound|9443||"].typed_extension_protocol_options


def test_target_port_drives_inbound_port() -> None:
    clusters = _clusters(
        bookinfo(workload("ratings-v2", address="127.0.0.12")), "ratings-v2.default"
    )
    assert "inbound|9080||" in clusters  # ratings: port 80, targetPort 9080
