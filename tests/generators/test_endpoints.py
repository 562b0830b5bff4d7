from __future__ import annotations

from envoy.config.endpoint.v3 import endpoint_pb2

from xds_server import xds_types
from xds_server.generators import PushContext, generate

from .factory import bookinfo, endpoint, port, service, workload

CLA = endpoint_pb2.ClusterLoadAssignment


def _endpoints(mesh: object, node: str = "productpage-v1.default") -> dict[str, CLA]:
    ctx = PushContext.build(mesh)  # type: ignore[arg-type]
    proxy = ctx.proxy(node)
    assert proxy is not None
    return generate(ctx, proxy)[xds_types.ENDPOINT]  # type: ignore[return-value]


def _addresses(cla: CLA) -> list[tuple[str, int]]:
    return [
        (lb.endpoint.address.socket_address.address, lb.endpoint.address.socket_address.port_value)
        for locality in cla.endpoints
        for lb in locality.lb_endpoints
    ]


def test_every_eds_cluster_has_an_assignment_and_dns_clusters_none() -> None:
    ctx = PushContext.build(bookinfo())
    proxy = ctx.proxy("productpage-v1.default")
    assert proxy is not None
    out = generate(ctx, proxy)
    eds = {
        name
        for name, c in out[xds_types.CLUSTER].items()
        if c.HasField("eds_cluster_config")  # type: ignore[attr-defined]
    }
    assert set(out[xds_types.ENDPOINT]) == eds
    assert "outbound|80||httpbin.org" not in out[xds_types.ENDPOINT]
    for name, cla in out[xds_types.ENDPOINT].items():
        assert cla.cluster_name == name  # type: ignore[attr-defined]


def test_endpoint_port_named_port_then_target_port_then_number() -> None:
    cla = _endpoints(bookinfo())
    # reviews-v2 names its "http" port 19080; reviews-v1 serves on the service port.
    assert _addresses(cla["outbound|9080||reviews.default.svc.cluster.local"]) == [
        ("127.0.0.3", 9080),
        ("127.0.0.4", 19080),
    ]
    assert _addresses(cla["outbound|9443||reviews.default.svc.cluster.local"]) == [
        ("127.0.0.3", 9443),
        ("127.0.0.4", 9443),
    ]
    assert _addresses(cla["outbound|80||ratings.default.svc.cluster.local"]) == [
        ("127.0.0.5", 9080)
    ]


def test_selector_only_matches_workloads_of_the_service_namespace() -> None:
    mesh = bookinfo(workload("reviews-v3", "other", address="127.0.0.20"))
    addresses = _addresses(_endpoints(mesh)["outbound|9080||reviews.default.svc.cluster.local"])
    assert ("127.0.0.20", 9080) not in addresses


def test_inline_endpoints_join_selected_ones_sorted_and_deduplicated() -> None:
    mesh = bookinfo(
        service(
            "mixed",
            "default",
            port(7000, "TCP", "tcp"),
            endpoints=[endpoint("10.0.0.9", tcp=7100), endpoint("10.0.0.1"), endpoint("10.0.0.1")],
        ),
        workload("mixed-v1", address="127.0.0.30"),
    )
    cla = _endpoints(mesh)["outbound|7000||mixed.default.svc.cluster.local"]
    assert _addresses(cla) == [("10.0.0.1", 7000), ("10.0.0.9", 7100), ("127.0.0.30", 7000)]


def test_service_without_endpoints_gets_an_empty_assignment() -> None:
    mesh = bookinfo(service("lonely", "default"))
    cla = _endpoints(mesh)["outbound|9080||lonely.default.svc.cluster.local"]
    assert cla.cluster_name == "outbound|9080||lonely.default.svc.cluster.local"
    assert len(cla.endpoints) == 0


def test_metadata_locality_and_weight() -> None:
    mesh = bookinfo(
        service("grpc", "shop", port(50051, "GRPC", "grpc")),
        workload(
            "grpc-v1",
            "shop",
            address="127.0.0.7",
            locality="us/east-1/b",
            weight=5,
            service_account="grpc-sa",
        ),
        workload("grpc-v2", "shop", address="127.0.0.8", locality="eu/west-1"),
    )
    cla = _endpoints(mesh)["outbound|50051||grpc.shop.svc.cluster.local"]
    assert [(g.locality.region, g.locality.zone, g.locality.sub_zone) for g in cla.endpoints] == [
        ("eu", "west-1", ""),
        ("us", "east-1", "b"),
    ]
    lb = cla.endpoints[1].lb_endpoints[0]
    assert lb.load_balancing_weight.value == 5
    istio = lb.metadata.filter_metadata["istio"]
    assert istio["workload"] == "grpc-v1" and istio["namespace"] == "shop"
    assert istio["service_account"] == "grpc-sa"
    assert istio["labels"]["app"] == "grpc"


def test_non_ip_endpoint_of_static_service_is_skipped_and_reported() -> None:
    mesh = bookinfo(service("bad", "default", selector=None, endpoints=[endpoint("bad.host")]))
    ctx = PushContext.build(mesh)
    proxy = ctx.proxy("productpage-v1.default")
    assert proxy is not None
    cla = generate(ctx, proxy)[xds_types.ENDPOINT]["outbound|9080||bad.default.svc.cluster.local"]
    assert _addresses(cla) == []  # type: ignore[arg-type]
    assert any("bad.host" in c for c in ctx.conflicts)
