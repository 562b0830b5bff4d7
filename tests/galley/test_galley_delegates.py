"""VirtualService delegation, as Istio's mergeVirtualServices does it.

`TestHasConflict` of pilot/pkg/model/virtualservice_test.go, case for case, then the
merge of a root route with its delegate's routes (matches narrowed, unset fields
taken from the root, names joined) and the loader's merged config.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from xds_server.galley.delegates import _conflict, merge_route
from xds_server.galley.loader import load_paths
from xds_server.galley.model_traffic import (
    Destination,
    HeaderOps,
    HTTPMatch,
    HTTPRoute,
    KeyMatch,
    RouteDestination,
    StringMatch,
)


def uri(kind: str, value: str) -> HTTPMatch:
    return HTTPMatch(uri=StringMatch(kind, value))


def header(kind: str, value: str, name: str = "header") -> HTTPMatch:
    return HTTPMatch(headers=(KeyMatch(name, StringMatch(kind, value)),))


CASES = [
    ("regex uri", uri("regex", "^/productpage"), uri("prefix", "/productpage/v2"), True),
    ("regex uri in root, none in delegate", uri("regex", "^/productpage"), HTTPMatch(), False),
    ("regex uri in delegate, none in root", HTTPMatch(), uri("regex", "^/productpage"), False),
    (
        "regex root, conflicting prefix",
        uri("regex", "^/productpage"),
        uri("prefix", "/productpage"),
        True,
    ),
    (
        "prefix root, regex delegate",
        uri("prefix", "/productpage"),
        uri("regex", "^/productpage"),
        True,
    ),
    ("match uri", uri("prefix", "/productpage"), uri("prefix", "/productpage/v2"), False),
    ("mismatch uri", uri("prefix", "/productpage/v2"), uri("prefix", "/productpage"), True),
    (
        "exact within prefix",
        uri("prefix", "/productpage/v2"),
        uri("exact", "/productpage/v2"),
        False,
    ),
    ("headers not equal", header("exact", "h1"), header("exact", "h2"), True),
    ("headers equal", header("exact", "h1"), header("exact", "h1"), False),
    ("headers match", header("prefix", "h1"), header("exact", "h1-v1"), False),
    ("headers mismatch", header("prefix", "h1"), header("exact", "h2"), True),
    ("headers prefix mismatch", header("prefix", "h1"), header("prefix", "h2"), True),
    ("diff headers", header("exact", "h1"), header("exact", "h2", "header-2"), False),
    (
        "withoutHeaders mismatch",
        HTTPMatch(without_headers=(KeyMatch("header", StringMatch("prefix", "h1")),)),
        HTTPMatch(without_headers=(KeyMatch("header", StringMatch("exact", "h2")),)),
        True,
    ),
    ("port, root any", HTTPMatch(), HTTPMatch(port=8080), False),
    ("port, delegate any", HTTPMatch(port=8080), HTTPMatch(), False),
    ("port mismatch", HTTPMatch(port=8080), HTTPMatch(port=8090), True),
    (
        "sourceLabels mismatch",
        HTTPMatch(source_labels={"a": "b"}),
        HTTPMatch(source_labels={"a": "c"}),
        True,
    ),
    (
        "sourceNamespace mismatch",
        HTTPMatch(source_namespace="test1"),
        HTTPMatch(source_namespace="test2"),
        True,
    ),
    (
        "root has less gateways than delegate",
        HTTPMatch(gateways=("ingress-gateway",)),
        HTTPMatch(gateways=("ingress-gateway", "mesh")),
        True,
    ),
]


@pytest.mark.parametrize(
    ("root", "leaf", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_has_conflict_as_istio(root: HTTPMatch, leaf: HTTPMatch, expected: bool) -> None:
    assert _conflict(root, leaf) is expected


def to(host: str) -> tuple[RouteDestination, ...]:
    return (RouteDestination(Destination(host)),)


def test_a_delegate_route_is_narrowed_and_inherits_from_the_root() -> None:
    root = HTTPRoute(
        name="root",
        match=(uri("prefix", "/productpage"), header("exact", "jason", "end-user")),
        timeout_ms=5000,
        request_headers=HeaderOps(set=(("x-root", "1"),)),
    )
    sub = HTTPRoute(name="v1", match=(uri("prefix", "/productpage/v1"),), route=to("a"))
    merged = merge_route(root, "root-ns", sub, "sub-ns")
    assert merged is not None
    assert merged.name == "root-v1"
    # Joined with each root match it fits: the /productpage one, and the header one.
    assert merged.match == (
        uri("prefix", "/productpage/v1"),
        HTTPMatch(
            uri=StringMatch("prefix", "/productpage/v1"),
            headers=(KeyMatch("end-user", StringMatch("exact", "jason")),),
        ),
    )
    assert merged.timeout_ms == 5000 and merged.request_headers == root.request_headers
    assert merged.route == to("a") and merged.delegate is None
    # A delegate route's own settings win over the root's.
    own = merge_route(root, "root-ns", HTTPRoute(timeout_ms=10, route=to("a")), "sub-ns")
    assert own is not None and own.timeout_ms == 10 and own.match == root.match


def test_a_delegate_route_outside_the_root_is_dropped() -> None:
    root = HTTPRoute(match=(uri("exact", "/a"),))
    assert (
        merge_route(root, "ns", HTTPRoute(match=(uri("prefix", "/a"),), route=to("x")), "ns")
        is None
    )


def test_gateway_names_resolve_in_their_own_namespace() -> None:
    root = HTTPRoute(match=(HTTPMatch(gateways=("gw",)),))
    sub = HTTPRoute(match=(HTTPMatch(gateways=("root-ns/gw",)),), route=to("x"))
    merged = merge_route(root, "root-ns", sub, "team")
    assert merged is not None and merged.match[0].gateways == ("root-ns/gw",)
    assert (
        merge_route(
            root, "root-ns", HTTPRoute(match=(HTTPMatch(gateways=("gw",)),), route=to("x")), "team"
        )
        is None
    )  # team/gw


def test_the_loaded_config_holds_merged_roots(tmp_path: Path) -> None:
    (tmp_path / "vs.yaml").write_text("""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: svc}
spec:
  hosts: [a.example.com, b.example.com]
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: root}
spec:
  hosts: [a.example.com]
  http:
  - match: [{uri: {prefix: /api}}]
    retries: {attempts: 2}
    delegate: {name: api, namespace: team}
  - route: [{destination: {host: a.example.com}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: team}
spec:
  http:
  - match: [{uri: {prefix: /api/v1}}]
    route: [{destination: {host: b.example.com}}]
  - match: [{uri: {prefix: /other}}]
    route: [{destination: {host: b.example.com}}]
""")
    result = load_paths([tmp_path])
    assert [str(e) for e in result.errors] == []
    [warning] = [str(w) for w in result.warnings]
    assert (
        "VirtualService team/api: spec.http[1].match: fits within no match of default/root"
        in warning
    )
    root = next(vs for vs in result.config_or_raise().virtual_services if vs.meta.name == "root")
    assert [r.match[0].uri for r in root.http[:1]] == [StringMatch("prefix", "/api/v1")]
    assert root.http[0].retries is not None and root.http[0].retries.attempts == 2
    assert len(root.http) == 2  # /api/v1, then the catch-all; /other was dropped


def test_delegate_errors_are_located(tmp_path: Path) -> None:
    (tmp_path / "vs.yaml").write_text("""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: root}
spec:
  hosts: [a.example.com]
  gateways: [mesh]
  http:
  - delegate: {name: missing}
  - delegate: {name: other-root}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: both}
spec:
  hosts: [c.example.com]
  http:
  - route: [{destination: {host: a.example.com}}]
    delegate: {name: x}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: other-root}
spec:
  hosts: [b.example.com]
  http: [{route: [{destination: {host: b.example.com}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: leaf}
spec:
  gateways: [gw]
  tcp: [{route: [{destination: {host: b.example.com}}]}]
  http:
  - delegate: {name: again}
""")
    messages = [f"{e.line}: {e.field}: {e.message}" for e in load_paths([tmp_path]).errors]
    assert (
        "17: spec.http[0]: must set exactly one of route, redirect, directResponse, delegate"
        in messages
    )
    assert any(
        m.startswith("8: spec.http[0].delegate.name: no VirtualService default/missing")
        for m in messages
    )
    assert any(
        m.startswith("9: spec.http[1].delegate.name: VirtualService default/other-root has hosts")
        for m in messages
    )
    assert any(
        m.startswith("31: spec.gateways: a VirtualService without hosts is a delegate")
        for m in messages
    )
    assert any(
        m.startswith("32: spec.tcp: a VirtualService without hosts is a delegate") for m in messages
    )
    assert any(
        m.startswith("34: spec.http[0].delegate: a delegate's routes cannot delegate again")
        for m in messages
    )
