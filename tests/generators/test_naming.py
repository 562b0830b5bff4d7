from __future__ import annotations

from xds_server.generators import naming


def test_istio_resource_names() -> None:
    assert naming.outbound_cluster(9080, "reviews.default.svc.cluster.local") == (
        "outbound|9080||reviews.default.svc.cluster.local"
    )
    assert naming.inbound_cluster(9080) == "inbound|9080||"
    assert naming.inbound_vhost(9080) == "inbound|http|9080"
    assert naming.listener_name("127.0.0.2", 15001) == "127.0.0.2_15001"
    assert naming.vhost_name("a.b", 80) == "a.b:80"
    assert naming.OUTBOUND_ROUTE_NAME == "15001"


def test_host_aliases_follow_the_short_name_rule() -> None:
    fqdn = "reviews.default.svc.cluster.local"
    assert naming.host_aliases(fqdn, "default") == (
        fqdn,
        "reviews.default.svc",
        "reviews.default",
        "reviews",
    )
    # The bare name only resolves inside the service's own namespace.
    assert naming.host_aliases(fqdn, "shop") == (fqdn, "reviews.default.svc", "reviews.default")


def test_non_kubernetes_hosts_have_no_aliases() -> None:
    for host in ("httpbin.org", "a.b.c.svc.cluster.local", "svc.cluster.local", "*.x.com"):
        assert naming.host_aliases(host, "default") == (host,)


def test_protocol_families() -> None:
    assert naming.is_http("HTTP") and naming.is_http("GRPC") and naming.is_http("HTTP2")
    assert not naming.is_http("TCP") and not naming.is_http("TLS")
    assert naming.is_http2("GRPC") and naming.is_http2("HTTP2") and not naming.is_http2("HTTP")
