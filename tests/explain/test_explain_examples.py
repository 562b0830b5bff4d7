"""`explain` on the demo and on every example of config/examples/, offline: every request
the example's try line (and `up`'s Open line) makes, hop by hop, is explained, maps back
to the Istio objects that made its routes, and says what the example documents.

Whether Envoy agrees is tests/explain/test_explain_envoy.py's question.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from tests.explain.hops import Hop, entry_hops
from tests.explain.walk import (
    DEMO,
    EXAMPLES,
    example_names,
    extra_lines,
    lines_of,
    request_of,
    walk,
)
from xds_server.explain import MeshState, explain, offline, parse_destination, render
from xds_server.galley.loader import load_paths
from xds_server.galley.model import MeshConfig
from xds_server.runner.plan import MeshPlan, plan_mesh


def path_of(name: str) -> Path:
    return DEMO if name == "demo" else EXAMPLES / name


@cache
def loaded(name: str) -> tuple[MeshConfig, MeshPlan, MeshState]:
    path = path_of(name)
    config = load_paths([path]).config
    assert config is not None, name
    return config, plan_mesh(config, [path]), offline([path])


def ask(state: MeshState) -> Any:
    return lambda hop: explain(state, hop.caller, request_of(hop))


@pytest.mark.parametrize("name", example_names())
def test_every_hop_is_explained_and_maps_back_to_istio(name: str) -> None:
    config, plan, state = loaded(name)
    assert lines_of(plan), f"{name}: no pocketmesh.io/try line and no entry: nothing to explain"
    assert any(entry_hops(line, config) for line in lines_of(plan)), lines_of(plan)
    hops = walk(config, plan, ask(state), extra_lines(name))
    assert hops
    for hop, answer in hops:
        json.dumps(answer)  # -o json
        text = render(answer)
        where = f"{name}: {hop.caller} -> {hop.destination} {hop.headers}\n{text}"
        destination = answer["destination"]
        assert destination["outcome"]["result"] != "unknown", where
        route = destination.get("route")
        for tried in destination.get("routes", []):
            if tried.get("virtual_service"):
                # Each route a VirtualService made names its rule.
                assert tried.get("rule", "").startswith("http["), where
        if route is not None and destination["way"] == "outbound HTTP":
            # The virtual host is `<service host>:<port>`: its VirtualService made the route.
            host = destination["virtual_host"]["name"].rpartition(":")[0]
            vs = state.push_context.traffic.virtual_service(host, "default")
            assert route.get("virtual_service") == (vs.meta.key if vs else None), where
        for cluster in destination.get("clusters", []):
            assert not cluster.get("missing"), where
            assert cluster["endpoints"] or cluster.get("no_endpoints"), where
            assert cluster["tls"]["mode"] in ("ISTIO_MUTUAL", "DISABLE", "SIMPLE", "MUTUAL")


def explained(name: str, caller: str, destination: str, *headers: str) -> dict[str, Any]:
    _, _, state = loaded(name)
    result = explain(state, caller, parse_destination(destination, headers=headers))
    return dict(result["destination"])


def clusters(d: dict[str, Any]) -> dict[str, str]:
    return {c["name"].split("|")[2] or "-": c["share"] for c in d.get("clusters", [])}


# -- what the examples document, as explain says it -------------------------------------


def test_request_routing_jason_gets_v2_others_v1_and_why() -> None:
    jason = explained("request-routing", "productpage", "reviews:9080/", "end-user: jason")
    assert clusters(jason) == {"v2": "100%"}
    assert jason["route"]["rule"] == "http[0]"
    others = explained("request-routing", "productpage", "reviews:9080/")
    assert clusters(others) == {"v1": "100%"} and others["route"]["rule"] == "http[1]"
    (skipped,) = [r for r in others["routes"] if r["matched"] is False]
    (failed,) = [c for c in skipped["checks"] if c["ok"] is False]
    assert failed == {
        "condition": 'header end-user: exact "jason"',
        "ok": False,
        "request": "end-user absent",
    }
    subset = others["clusters"][0]["destination_rule"]["subset"]
    assert subset == {"name": "v1", "labels": {"version": "v1"}}


def test_traffic_shifting_gives_the_weights() -> None:
    d = explained("traffic-shifting", "productpage", "reviews:9080/")
    assert clusters(d) == {"v1": "80%", "v3": "20%"}


def test_fault_abort_is_the_callers_sidecar_answering_500() -> None:
    d = explained("fault-injection-abort", "reviews-v2", "ratings:9080/", "end-user: jason")
    assert d["outcome"]["result"] == "500"
    assert d["route"]["fault"]["abort"] == {"http_status": 500, "percent": 100.0}
    assert (
        explained("fault-injection-abort", "reviews-v2", "ratings:9080/")["outcome"]["result"]
        == "routed"
    )


def test_routing_features_names_the_failed_condition_of_each_earlier_rule() -> None:
    d = explained("routing-features", "productpage", "reviews:9080/items/42")
    assert d["route"]["rule_name"] == "regex"
    first = d["routes"][0]
    assert first["name"] == "exact" and first["checks"][0]["ok"] is False
    assert d["outcome"]["result"] == "routed" and clusters(d) == {"v2": "100%"}
    assert (
        explained("routing-features", "productpage", "reviews:9080/direct")["outcome"]["result"]
        == "418"
    )
    nothing = explained("routing-features", "productpage", "reviews:9080/no-rule-matches")
    assert nothing["outcome"]["result"] == "404"
    # sourceLabels rules exist for productpage; a proxy they exclude is told why.
    sleepy = explained("routing-features", "reviews-v1", "reviews:9080/source")
    assert any("sourceLabels" in nb["why"] for nb in sleepy["not_built"]), sleepy["not_built"]


def test_ingress_gateway_routes_by_host_and_path() -> None:
    ok = explained("ingress-gateway", "istio-ingressgateway.istio-system",
                   "127.0.73.5:8080/status/418", "Host: httpbin.example.com")  # fmt: skip
    assert ok["outcome"]["result"] == "routed" and ok["virtual_host"]["how"] == "exact"
    assert ok["route"]["virtual_service"] == "default/httpbin"
    other = explained("ingress-gateway", "istio-ingressgateway.istio-system",
                      "127.0.73.5:8080/status/418", "Host: other.example.com")  # fmt: skip
    assert other["outcome"]["result"] == "404"


def test_secure_gateway_ends_tls_by_sni_and_redirects_plaintext() -> None:
    gw = "istio-ingressgateway.istio-system"
    tls = explained("secure-ingress-gateway", gw, "https://httpbin.example.com:8443/status/418")
    assert tls["tls"]["mode"] == "SIMPLE" and tls["outcome"]["result"] == "routed"
    plain = explained("secure-ingress-gateway", gw, "httpbin.example.com:8080/status/418")
    assert plain["outcome"]["result"] == "301"


def test_tcp_traffic_shifting_is_the_listener_on_the_callers_own_address() -> None:
    d = explained("tcp-traffic-shifting", "sleep", "tcp-echo:9000")
    assert d["way"] == "outbound TCP" and d["listener"] == "127.0.73.15_9000"
    assert clusters(d) == {"v1": "80%", "v2": "20%"}
    assert d["virtual_service"]["rule"] == "tcp[0]"


def test_demo_authorization_policy_denies_productpage_to_ratings() -> None:
    denied = explained("demo", "productpage", "ratings:9080/")
    assert denied["outcome"]["result"] == "403"
    (endpoint,) = denied["clusters"][0]["endpoints"]
    assert endpoint["mtls"]["mode"] == "STRICT" and endpoint["authorization"]["allowed"] is False
    allowed = explained("demo", "reviews-v2", "ratings:9080/")
    assert allowed["outcome"]["result"] == "routed"
    assert allowed["clusters"][0]["tls"]["mode"] == "ISTIO_MUTUAL"
    assert allowed["clusters"][0]["tls"]["presents"].endswith("/sa/reviews")
    # Plaintext from outside to a STRICT port is refused.
    assert explained("demo", "productpage", "127.0.10.1:9080/")["outcome"]["result"] == "refused"


def test_workload_section_names_scope_modes_and_policies() -> None:
    _, _, state = loaded("demo")
    w = explain(state, "ratings")["workload"]
    assert w["sidecar"]["name"] == "default/ratings"
    assert w["inbound"][0]["mtls"]["mode"] == "STRICT" and w["inbound"][0]["envoy_mode"] == "STRICT"
    assert "istio-system/default" in w["inbound"][0]["mtls"]["by"]
    assert [p["name"] for p in w["authorization_policies"]] == ["default/ratings"]
    assert w["inbound"][0]["rbac"][0]["policies"] == ["default/ratings rules[0]"]
    gateway = explain(state, "ingressgateway")["workload"]
    assert (
        gateway["kind"] == "gateway"
        and gateway["gateways"][0]["name"] == "default/bookinfo-gateway"
    )


def test_unknown_workload_suggests_names() -> None:
    _, _, state = loaded("demo")
    with pytest.raises(LookupError, match=r"did you mean .*reviews-v1\.default"):
        explain(state, "reviews-v9")


def test_hop_parsing_of_try_lines() -> None:
    config, _, _ = loaded("circuit-breaking")
    line = (
        "for i in $(seq 8); do curl -s -o /dev/null -w '%{http_code} ' -x "
        "http://127.0.73.15:15001 http://httpbin:8000/delay/1 & done; wait; echo"
    )
    (hop,) = entry_hops(line, config)
    assert hop == Hop("sleep.default", "httpbin:8000/delay/1", (), "GET", "proxy",
                      "127.0.73.15:15001", "http://httpbin:8000/delay/1", via=line)  # fmt: skip


def test_tls_passthrough_reaches_the_gateway_behind_it() -> None:
    d = explained("ingress-sni-passthrough", "istio-ingressgateway.istio-system",
                  "https://nginx.example.com:8443/")  # fmt: skip
    assert d["outcome"]["result"] == "routed"
    (cluster,) = d["clusters"]
    assert cluster["tls"]["wire"].startswith("the client's own TLS (SNI nginx.example.com)")
    (endpoint,) = cluster["endpoints"]
    assert endpoint["accepts"] is True and endpoint["gateway"] == "default/nginx-server"
