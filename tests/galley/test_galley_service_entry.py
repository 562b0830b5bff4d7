"""ServiceEntry: fields, Istio's defaults, and each rule with its file:line."""

from __future__ import annotations

import textwrap

import pytest

from xds_server.galley.loader import LoadResult, parse_documents
from xds_server.galley.model import ServiceEntry, ServicePort, Source

HEADER = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: svc
  namespace: shop
spec:
"""


def parse(spec: str) -> LoadResult:
    """A ServiceEntry with this spec (indented two spaces); spec starts on line 7."""
    return parse_documents(HEADER + textwrap.indent(textwrap.dedent(spec), "  "), "se.yaml")


def errors(result: LoadResult) -> list[str]:
    return [str(e) for e in result.errors]


def warnings(result: LoadResult) -> list[str]:
    return [str(e) for e in result.warnings]


def only_entry(result: LoadResult) -> ServiceEntry:
    assert result.errors == (), errors(result)
    assert result.config is not None
    [entry] = result.config.service_entries
    return entry


def test_full_entry() -> None:
    entry = only_entry(
        parse(
            """\
            hosts: [api.shop.svc.cluster.local, api.shop]
            addresses: [10.0.0.1, "fd00::1"]
            ports:
            - number: 8080
              protocol: http
              name: http
              targetPort: 9080
            - {number: 9090, protocol: GRPC-web, name: grpc-web}
            location: MESH_INTERNAL
            resolution: STATIC
            endpoints:
            - address: 127.0.0.5
              ports: {http: 9081}
              labels: {version: v1}
              serviceAccount: api
              network: ""
              locality: eu/west
              weight: 3
            - address: 127.0.0.6
            exportTo: [".", other]
            subjectAltNames: ["spiffe://cluster.local/ns/shop/sa/api"]
            """
        )
    )
    assert entry.meta.kind == "ServiceEntry"
    assert entry.meta.key == "shop/svc"
    assert entry.meta.source == Source("se.yaml", 1)
    assert entry.hosts == ("api.shop.svc.cluster.local", "api.shop")
    assert entry.addresses == ("10.0.0.1", "fd00::1")
    assert entry.ports == (
        ServicePort(8080, "HTTP", "http", 9080),
        ServicePort(9090, "GRPC-WEB", "grpc-web", None),
    )
    assert entry.location == "MESH_INTERNAL"
    assert entry.resolution == "STATIC"
    assert entry.workload_selector is None
    assert entry.export_to == (".", "other")
    assert entry.subject_alt_names == ("spiffe://cluster.local/ns/shop/sa/api",)
    first, second = entry.endpoints
    assert first.meta.name == "svc-endpoint-0"
    assert first.meta.namespace == "shop"
    assert first.meta.source == Source("se.yaml", 18)
    assert first.address == "127.0.0.5"
    assert dict(first.ports) == {"http": 9081}
    assert dict(first.labels) == {"version": "v1"}
    assert (first.service_account, first.locality, first.weight) == ("api", "eu/west", 3)
    assert second.meta.name == "svc-endpoint-1"
    assert second.service_account == "default"
    assert dict(second.ports) == {}


def test_istio_defaults() -> None:
    result = parse(
        """\
        hosts: [example.com]
        ports: [{number: 443, protocol: TLS, name: tls}]
        """
    )
    entry = only_entry(result)
    assert entry.location == "MESH_EXTERNAL"
    assert entry.resolution == "NONE"
    assert entry.addresses == () and entry.endpoints == () and entry.export_to == ()
    assert result.warnings == ()


def test_workload_selector() -> None:
    entry = only_entry(
        parse(
            """\
            hosts: [reviews.shop.svc.cluster.local]
            location: MESH_INTERNAL
            resolution: STATIC
            ports: [{number: 9080, protocol: HTTP, name: http}]
            workloadSelector:
              labels: {app: reviews}
            """
        )
    )
    assert entry.workload_selector is not None
    assert dict(entry.workload_selector) == {"app": "reviews"}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            "ports: []\n",
            "se.yaml:6: ServiceEntry shop/svc: spec.hosts: required field missing",
        ),
        (
            "hosts: []\n",
            "se.yaml:7: ServiceEntry shop/svc: spec.hosts: must not be empty",
        ),
        (
            "hosts: example.com\n",
            "se.yaml:7: ServiceEntry shop/svc: spec.hosts: expected list, got string",
        ),
        (
            "hosts:\n- example.com\n- bad_host.com\n",
            "se.yaml:9: ServiceEntry shop/svc: spec.hosts[1]: 'bad_host.com' must be a DNS name: "
            "labels of letters, digits and '-', separated by '.'",
        ),
        (
            "hosts: [a.com, A.com]\n",
            "se.yaml:7: ServiceEntry shop/svc: spec.hosts[1]: duplicate host 'A.com'",
        ),
        (
            "hosts: ['*']\n",
            "se.yaml:7: ServiceEntry shop/svc: spec.hosts[0]: "
            "'*' is not a host: use a domain wildcard like '*.example.com'",
        ),
        (
            "hosts: ['*.a.com']\nlocation: MESH_INTERNAL\nresolution: STATIC\n"
            "workloadSelector: {labels: {a: b}}\n",
            "se.yaml:7: ServiceEntry shop/svc: spec.hosts[0]: "
            "a wildcard host needs location MESH_EXTERNAL or resolution NONE",
        ),
        (
            "hosts: ['*.a.com']\nresolution: DNS\n",
            "se.yaml:7: ServiceEntry shop/svc: spec.hosts[0]: "
            "a wildcard host cannot be resolved by DNS alone",
        ),
        (
            "hosts: [a.com]\nports:\n- number: 0\n  name: p\n  protocol: TCP\n",
            "se.yaml:9: ServiceEntry shop/svc: spec.ports[0].number: 0 must be between 1 and 65535",
        ),
        (
            "hosts: [a.com]\nports:\n- number: '80'\n  name: p\n  protocol: TCP\n",
            "se.yaml:9: ServiceEntry shop/svc: spec.ports[0].number: expected integer, got string",
        ),
        (
            "hosts: [a.com]\nports:\n- number: true\n  name: p\n  protocol: TCP\n",
            "se.yaml:9: ServiceEntry shop/svc: spec.ports[0].number: expected integer, got boolean",
        ),
        (
            "hosts: [a.com]\nports:\n- number: 80\n  name: p\n  protocol: UDP\n",
            "se.yaml:11: ServiceEntry shop/svc: spec.ports[0].protocol: 'UDP' must be one of "
            "GRPC, GRPC-WEB, HTTP, HTTP2, HTTPS, MONGO, MYSQL, REDIS, TCP, TLS",
        ),
        (
            "hosts: [a.com]\nports:\n- number: 80\n  protocol: TCP\n",
            "se.yaml:9: ServiceEntry shop/svc: spec.ports[0].name: required field missing",
        ),
        (
            "hosts: [a.com]\nports:\n- number: 80\n  name: Web\n  protocol: TCP\n",
            "se.yaml:10: ServiceEntry shop/svc: spec.ports[0].name: 'Web' must be a DNS-1123 "
            "label: lower-case letters, digits and '-', starting and ending with a letter or digit",
        ),
        (
            "hosts: [a.com]\nports:\n- {number: 80, name: a, protocol: TCP}\n"
            "- {number: 80, name: b, protocol: TCP}\n",
            "se.yaml:10: ServiceEntry shop/svc: spec.ports[1].number: "
            "port 80 is already used by spec.ports[0]",
        ),
        (
            "hosts: [a.com]\nports:\n- {number: 80, name: a, protocol: TCP}\n"
            "- {number: 81, name: a, protocol: TCP}\n",
            "se.yaml:10: ServiceEntry shop/svc: spec.ports[1].name: "
            "port name 'a' is already used by spec.ports[0]",
        ),
        (
            "hosts: [a.com]\nports:\n- {number: 80, name: a, protocol: TCP, port: 1}\n",
            "se.yaml:9: ServiceEntry shop/svc: spec.ports[0].port: unknown field",
        ),
        (
            "hosts: [a.com]\nlocation: INTERNAL\n",
            "se.yaml:8: ServiceEntry shop/svc: spec.location: "
            "'INTERNAL' must be one of MESH_EXTERNAL, MESH_INTERNAL",
        ),
        (
            "hosts: [a.com]\nresolution: static\n",
            "se.yaml:8: ServiceEntry shop/svc: spec.resolution: "
            "'static' must be one of DNS, DNS_ROUND_ROBIN, DYNAMIC_DNS, NONE, STATIC",
        ),
        (
            "hosts: [a.com]\naddresses: [10.0.0.300]\n",
            "se.yaml:8: ServiceEntry shop/svc: spec.addresses[0]: "
            "'10.0.0.300' must be an IP address or a CIDR range",
        ),
        (
            "hosts: [a.com]\naddresses: [10.1.0.0/16]\nresolution: DNS\n",
            "se.yaml:8: ServiceEntry shop/svc: spec.addresses[0]: "
            "address ranges are allowed only with resolution NONE or STATIC",
        ),
        (
            "hosts: [a.com]\nresolution: STATIC\nworkloadSelector: {labels: {a: b}}\n"
            "endpoints: [{address: 1.2.3.4}]\n",
            "se.yaml:10: ServiceEntry shop/svc: spec.endpoints: "
            "endpoints and workloadSelector are mutually exclusive",
        ),
        (
            "hosts: [a.com]\nresolution: STATIC\nendpoints:\n- address: a.com\n",
            "se.yaml:10: ServiceEntry shop/svc: spec.endpoints[0].address: "
            "'a.com' must be an IP address (or unix:///path) for resolution STATIC",
        ),
        (
            "hosts: [a.com]\nendpoints:\n- address: 1.2.3.4\n",
            "se.yaml:8: ServiceEntry shop/svc: spec.endpoints: resolution NONE takes no endpoints",
        ),
        (
            "hosts: [a.com]\nresolution: DNS\nendpoints:\n- address: a.com\n  port: 1\n",
            "se.yaml:11: ServiceEntry shop/svc: spec.endpoints[0].port: "
            "unknown field (did you mean 'ports'?)",
        ),
        (
            "hosts: [a.com]\nexportTo: ['*', '.']\n",
            "se.yaml:8: ServiceEntry shop/svc: spec.exportTo: "
            "'*' exports everywhere and cannot be combined with other entries",
        ),
        (
            "hosts: [a.com]\nhost: [b.com]\n",
            "se.yaml:8: ServiceEntry shop/svc: spec.host: unknown field (did you mean 'hosts'?)",
        ),
    ],
)
def test_rule(spec: str, expected: str) -> None:
    result = parse(spec)
    assert result.config is None
    assert expected in errors(result)


def test_missing_spec() -> None:
    result = parse_documents(HEADER.replace("spec:\n", ""), "se.yaml")
    assert errors(result) == ["se.yaml:1: ServiceEntry shop/svc: spec: required field missing"]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            "hosts: [a.com]\nresolution: STATIC\nports: [{number: 1, name: a, protocol: TCP}]\n",
            "se.yaml:6: warning: ServiceEntry shop/svc: spec: "
            "no endpoints: resolution STATIC needs endpoints or a workloadSelector",
        ),
        (
            "hosts: [a.com]\n",
            "se.yaml:6: warning: ServiceEntry shop/svc: spec: "
            "no ports: no listeners or clusters are built for this entry",
        ),
        (
            "hosts: [reviews]\nports: [{number: 1, name: a, protocol: HTTP}]\n",
            "se.yaml:7: warning: ServiceEntry shop/svc: spec.hosts[0]: "
            "'reviews' is not fully qualified",
        ),
        (
            "hosts: [a.com]\nresolution: DNS\nports: [{number: 1, name: a, protocol: TCP}]\n"
            "endpoints:\n- address: b.com\n  ports:\n    b: 2\n",
            "se.yaml:13: warning: ServiceEntry shop/svc: spec.endpoints[0].ports.b: "
            "names no port of this ServiceEntry",
        ),
        (
            "hosts: [a.com]\nports: [{number: 1, name: a, protocol: HTTP}]\n"
            "workloadSelector: {labels: {app: a}}\n",
            "se.yaml:9: warning: ServiceEntry shop/svc: spec.workloadSelector: "
            "has no effect with resolution NONE",
        ),
    ],
)
def test_warning(spec: str, expected: str) -> None:
    result = parse(spec)
    assert result.errors == ()
    assert result.config is not None
    assert expected in warnings(result)
