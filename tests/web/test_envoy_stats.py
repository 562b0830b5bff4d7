"""Rates over a window from cumulative Envoy counters; the parsing of Envoy's real admin
output is exercised against real Envoys in test_web_view.py."""

from __future__ import annotations

from xds_server.web.envoy_stats import ProxyStats, TrafficWindow, parse_clusters, parse_stats

V2 = "outbound|9080|v2|reviews.default.svc.cluster.local"


def stats(at: float, total: int, errors: int = 0, forbidden: int = 0) -> ProxyStats:
    return ProxyStats(at, {(V2, "127.0.10.3"): (total, errors)}, {V2: forbidden}, 0, (0, 0))


def test_rates_are_over_the_window_and_5xx_is_a_ratio_of_the_window() -> None:
    window = TrafficWindow(window=10)
    window.add("productpage.default", stats(0, 100, 0))
    (flow,) = window.flows()
    assert flow.rps == 0 and flow.errors is None and flow.total == 100  # one sample: no rate
    window.add("productpage.default", stats(2, 120, 1))
    window.add("productpage.default", stats(4, 140, 2))
    (flow,) = window.flows()
    assert flow.rps == 10 and flow.errors == 2 / 40
    # Older samples leave the window: the rate is of the last 10 s only.
    for t in range(6, 22, 2):
        window.add("productpage.default", stats(t, 140, 2))
    (flow,) = window.flows()
    assert flow.rps == 0 and flow.errors is None and flow.total == 140


def test_a_restarted_envoy_counts_from_zero() -> None:
    window = TrafficWindow(window=10)
    window.add("p", stats(0, 500, 5))
    window.add("p", stats(2, 8, 0))
    (flow,) = window.flows()
    assert flow.rps == 4 and flow.errors == 0


def test_forgotten_proxies_and_idle_hosts_give_no_flow() -> None:
    window = TrafficWindow()
    window.add("p", ProxyStats(0, {(V2, "127.0.10.3"): (0, 0)}, {}, 0, (0, 0)))
    assert window.flows() == []
    window.add("q", stats(0, 3))
    window.keep(["p"])
    assert window.flows() == [] and window.latest("q") is None


def test_gateway_ingress_counts_downstream_requests() -> None:
    window = TrafficWindow()
    window.add("gw", ProxyStats(0, {}, {}, 0, (10, 0)))
    window.add("gw", ProxyStats(1, {}, {}, 0, (14, 1)))
    (entry,) = window.ingress(["gw", "absent"])
    assert entry.gateway == "gw" and entry.rps == 4 and entry.errors == 0.25 and entry.total == 14


def test_admin_documents_in_envoys_shapes() -> None:
    """Envoy's JSON: uint64 counters as strings, zero counters left out."""
    clusters = {
        "cluster_statuses": [
            {
                "name": "xds-grpc",
                "host_statuses": [{"address": {"socket_address": {"address": "127.0.0.1"}}}],
            },
            {
                "name": V2,
                "host_statuses": [
                    {
                        "address": {
                            "socket_address": {"address": "127.0.10.3", "port_value": 9080}
                        },
                        "stats": [
                            {"name": "rq_total", "value": "7", "type": "COUNTER"},
                            {"name": "rq_error", "value": "2", "type": "COUNTER"},
                            {"name": "rq_success", "value": "5", "type": "COUNTER"},
                            {"name": "cx_active", "value": "1", "type": "GAUGE"},
                            {"name": "rq_timeout", "type": "COUNTER"},
                        ],
                    }
                ],
            },
        ]
    }
    assert parse_clusters(clusters) == {(V2, "127.0.10.3"): (7, 2)}
    doc = {
        "stats": [
            {"name": f"cluster.{V2}.upstream_rq_403", "value": 3},
            {"name": f"cluster.{V2}.external.upstream_rq_403", "value": 3},
            {"name": "http.inbound_9080.rbac.allow.denied", "value": 4},
            {"name": "http.inbound_9080.rbac.shadow_denied", "value": 9},
            {"name": "http.gateway_8080.downstream_rq_total", "value": 12},
            {"name": "http.gateway_8080.downstream_rq_5xx", "value": 1},
            {"name": "http.admin.downstream_rq_total", "value": 99},
            {"histograms": {}},
        ]
    }
    assert parse_stats(doc) == ({V2: 3}, 4, (12, 1))
