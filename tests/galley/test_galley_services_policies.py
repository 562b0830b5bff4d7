"""Bad input to the services & policies fields: each finding located, as Istio says it.

DestinationRule loadBalancer (locality, zone-aware, warmup, hashing), connectionPool,
outlierDetection, exportTo and workloadSelector; ServiceEntry resolution NONE, unix://
endpoints, exportTo, address ranges, ports without protocol; Sidecar egress listeners
and outboundTrafficPolicy. A rule with an error is refused whole (nothing of it pushed).
"""

from __future__ import annotations

import textwrap

import pytest

from xds_server.galley.loader import LoadResult, parse_documents
from xds_server.generators import PushContext


def rule(spec: str, kind: str = "DestinationRule", namespace: str = "shop") -> LoadResult:
    """A document of `kind` whose spec (indented) starts on line 7."""
    text = (
        f"apiVersion: networking.istio.io/v1\nkind: {kind}\nmetadata:\n  name: r\n"
        f"  namespace: {namespace}\nspec:\n" + textwrap.indent(textwrap.dedent(spec), "  ")
    )
    return parse_documents(text, "x.yaml")


def findings(result: LoadResult) -> list[str]:
    return [str(e).removeprefix("x.yaml:") for e in (*result.errors, *result.warnings)]


DR = "DestinationRule shop/r"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            "host: a.com\ntrafficPolicy: {tunnel: {targetHost: 10.0.0.1, targetPort: 3128}}\n",
            [],
        ),
        (
            "host: a.com\ntrafficPolicy: {tunnel: {targetHost: '2001:db8::1', targetPort: 1}}\n",
            [],
        ),
        (
            "host: a.com\ntrafficPolicy: {tunnel: {protocol: POST, targetHost: b.com, "
            "targetPort: 80}}\n",
            [
                f"8: {DR}: spec.trafficPolicy.tunnel.protocol: POST is not supported by "
                "pocketmesh: Envoy 1.40 crashes when a listener with an open POST tunnel "
                "drains (a config change), so pocketmesh builds CONNECT tunnels only"
            ],
        ),
        (
            "host: a.com\ntrafficPolicy: {tunnel: {protocol: UDP, targetHost: 'a b'}}\n",
            [
                f"8: {DR}: spec.trafficPolicy.tunnel.protocol: 'UDP' must be one of CONNECT, POST",
                f"8: {DR}: spec.trafficPolicy.tunnel.targetHost: 'a b' must be a DNS name: labels "
                "of letters, digits and '-', separated by '.'",
                f"8: {DR}: spec.trafficPolicy.tunnel.targetPort: required field missing",
            ],
        ),
    ],
)
def test_tunnel_findings(spec: str, expected: list[str]) -> None:
    found = [f for f in findings(rule(spec)) if "no ServiceEntry declares" not in f]
    assert found == expected


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            "host: a.com\ntrafficPolicy:\n  loadBalancer:\n    localityLbSetting:\n"
            "      failover: [{from: us, to: us}]\n  outlierDetection: {interval: 1s}\n",
            [
                f"11: {DR}: spec.trafficPolicy.loadBalancer.localityLbSetting.failover[0]: "
                "locality lb failover settings must specify different regions"
            ],
        ),
        (
            "host: a.com\ntrafficPolicy:\n  loadBalancer:\n    localityLbSetting:\n"
            "      failover: [{from: us/east, to: eu}]\n",
            [
                f"11: {DR}: spec.trafficPolicy.loadBalancer.localityLbSetting.failover[0].from: "
                "locality lb failover only specify region"
            ],
        ),
        (
            # Istio's validation warns: without outlier detection there is no failover.
            "host: a.com\ntrafficPolicy:\n  loadBalancer:\n    localityLbSetting:\n"
            "      failover: [{from: us, to: eu}]\n",
            [
                f"10: warning: {DR}: spec.trafficPolicy.loadBalancer.localityLbSetting: outlier "
                "detection policy must be provided for failover: without outlierDetection Envoy "
                "never moves traffic to another locality (as Istio warns)"
            ],
        ),
        (
            "host: a.com\ntrafficPolicy:\n  loadBalancer:\n    localityLbSetting:\n"
            "      distribute:\n      - from: us/*\n        to: {us/east: 60, eu: 30}\n",
            [
                f"13: {DR}: spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to: "
                "total locality weight 90 != 100"
            ],
        ),
        (
            "host: a.com\ntrafficPolicy:\n  loadBalancer:\n    localityLbSetting:\n"
            "      distribute: [{from: us, to: {us: 100}}]\n"
            "      failover: [{from: us, to: eu}]\n  outlierDetection: {interval: 1s}\n",
            [
                f"10: {DR}: spec.trafficPolicy.loadBalancer.localityLbSetting: "
                "can not simultaneously specify 'distribute' and 'failover'"
            ],
        ),
        (
            "host: a.com\ntrafficPolicy:\n  loadBalancer:\n    consistentHash:\n"
            "      httpHeaderName: x\n      maglev: {tableSize: 1000}\n",
            [
                f"12: {DR}: spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize: "
                "1000 must be a prime number"
            ],
        ),
        (
            "host: a.com\ntrafficPolicy:\n  loadBalancer:\n"
            "    warmup: {duration: 10s, aggression: 0}\n",
            [
                f"10: {DR}: spec.trafficPolicy.loadBalancer.warmup.aggression: must be greater "
                "than 0"
            ],
        ),
        (
            "host: a.com\ntrafficPolicy:\n  connectionPool:\n"
            "    http: {h2UpgradePolicy: UPGRADE, useClientProtocol: true}\n",
            [
                f"10: {DR}: spec.trafficPolicy.connectionPool.http.useClientProtocol: use client "
                "protocol must not be true when h2UpgradePolicy is UPGRADE"
            ],
        ),
        (
            "host: a.com\ntrafficPolicy:\n"
            "  outlierDetection: {consecutiveLocalOriginFailures: 3}\n",
            [
                f"9: {DR}: spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures: is "
                "set, but splitExternalLocalOriginErrors is false: local origin failures then "
                "count as 5xx (as Istio says)"
            ],
        ),
        (
            "host: a.com\ntrafficPolicy: {}\n",
            [f"8: {DR}: spec.trafficPolicy: traffic policy must have at least one field"],
        ),
        (
            "host: a.com\nexportTo: ['~']\n",
            [
                f"8: {DR}: spec.exportTo[0]: '~' (exported to no namespace) is allowed in "
                "ServiceEntries only"
            ],
        ),
        (
            "host: a.com\nexportTo: ['.', shop]\n",
            [f"8: {DR}: spec.exportTo[1]: duplicate entry 'shop' (also '.' or 'shop')"],
        ),
        (
            "host: a.com\nworkloadSelector: {matchLabels: {app: a}}\nexportTo: [other]\n",
            [
                f"9: {DR}: spec.exportTo: a rule with workloadSelector cannot be exported beyond "
                "its namespace"
            ],
        ),
        (
            "host: a.com\nworkloadSelector: {labels: {app: a}}\n",
            [
                f"8: {DR}: spec.workloadSelector.labels: a DestinationRule's workloadSelector "
                "says matchLabels (Istio's istio.type.v1beta1.WorkloadSelector), not labels"
            ],
        ),
    ],
)
def test_destination_rule_findings(spec: str, expected: list[str]) -> None:
    result = rule(spec)
    # (These rules are for hosts no ServiceEntry here declares: a warning each.)
    assert [f for f in findings(result) if "no ServiceEntry declares" not in f] == expected
    if result.errors:
        assert result.config is None  # nothing of it is pushed


SE = "ServiceEntry shop/r"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            "hosts: [db.example]\nports: [{number: 5432, name: pg, protocol: TCP}]\n",
            [
                f"8: {SE}: spec.ports[0]: a TCP port with resolution NONE and not exactly one IP "
                "address (without traffic capture, a TCP connection to the sidecar names no "
                "original destination; give the entry its one address, or use STATIC or DNS) is "
                "not supported by pocketmesh yet"
            ],
        ),
        (
            "hosts: [db.example]\naddresses: [10.0.0.0/8]\nresolution: STATIC\n"
            "ports: [{number: 5432, name: pg, protocol: TCP}]\nendpoints: [{address: 1.2.3.4}]\n",
            [
                f"8: warning: {SE}: spec.addresses[0]: '10.0.0.0/8': an address range selects "
                "nothing here: without traffic capture a connection to the sidecar has no other "
                "destination address, so a TCP port's connections are this entry's by port alone "
                "(HTTP is routed by host, as in Istio)"
            ],
        ),
        (
            "hosts: [uds.example]\nresolution: STATIC\n"
            "ports: [{number: 80, name: http, protocol: HTTP}, {number: 81, name: b, "
            "protocol: HTTP}]\nendpoints: [{address: 'unix:///run/a.sock'}]\n",
            [
                f"10: {SE}: spec.endpoints[0].address: exactly 1 service port required for unix "
                "endpoints"
            ],
        ),
        (
            "hosts: [uds.example]\nresolution: DNS\n"
            "ports: [{number: 80, name: http, protocol: HTTP}]\n"
            "endpoints: [{address: 'unix:///run/a.sock'}]\n",
            [
                f"10: {SE}: spec.endpoints[0].address: 'unix:///run/a.sock' a unix socket cannot "
                "be resolved by DNS: use resolution STATIC"
            ],
        ),
        (
            "hosts: [a.example]\nresolution: STATIC\nexportTo: ['~', other]\n"
            "ports: [{number: 80, name: http, protocol: HTTP}]\n"
            "endpoints: [{address: 1.2.3.4}]\n",
            [
                f"9: {SE}: spec.exportTo: '~' exports to no namespace and cannot be combined with "
                "other entries"
            ],
        ),
    ],
)
def test_service_entry_findings(spec: str, expected: list[str]) -> None:
    assert findings(rule(spec, "ServiceEntry")) == expected


def test_a_port_without_protocol_is_sniffed() -> None:
    result = rule(
        "hosts: [a.example]\nresolution: STATIC\nports: [{number: 7070, name: any}]\n"
        "endpoints: [{address: 1.2.3.4}]\n",
        "ServiceEntry",
    )
    assert result.config is not None and findings(result) == []
    [entry] = result.config.service_entries
    assert entry.ports[0].sniffed and entry.ports[0].carries_http


SC = "Sidecar shop/r"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            "egress:\n- hosts: [./*]\n- port: {number: 80}\n  hosts: [./*]\n",
            [f"8: {SC}: spec.egress[0]: the egress listener without a port must be the last one"],
        ),
        (
            "egress:\n- port: {number: 80}\n  hosts: [./*]\n"
            "- port: {number: 80}\n  hosts: ['*/*']\n",
            [f"10: {SC}: spec.egress[1].port: port 80 is already used by spec.egress[0]"],
        ),
        (
            "outboundTrafficPolicy: {mode: ALLOW_ANY, egressProxy: {host: a.com}}\n",
            [
                f"7: {SC}: spec.outboundTrafficPolicy.egressProxy.host: no ServiceEntry "
                "declares host 'a.com'"
            ],
        ),
        (
            "outboundTrafficPolicy: {egressProxy: {host: '*.a.com'}}\n",
            [
                f"7: {SC}: spec.outboundTrafficPolicy.egressProxy.host: '*.a.com' must not be a "
                "wildcard",
                f"7: {SC}: spec.outboundTrafficPolicy.egressProxy: needs mode ALLOW_ANY: it is "
                "where ALLOW_ANY's requests go (Istio)",
            ],
        ),
    ],
)
def test_sidecar_findings(spec: str, expected: list[str]) -> None:
    assert findings(rule(spec, "Sidecar")) == expected


def test_egress_exclusions_subtract_from_what_is_imported() -> None:
    text = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: a, namespace: shop}
spec:
  hosts: [a.shop.svc.cluster.local, b.shop.svc.cluster.local]
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.9.1}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: client, namespace: shop}
spec: {address: 127.0.9.2}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: shop}
spec:
  egress: [{hosts: ["./*", "~./b.shop.svc.cluster.local"]}]
"""
    result = parse_documents(text, "x.yaml")
    assert result.config is not None, findings(result)
    proxy = PushContext.build(result.config).proxy("client.shop")
    assert proxy is not None
    assert [s.host for s in proxy.scope.services] == ["a.shop.svc.cluster.local"]


def test_dynamic_dns_wants_wildcard_hosts_and_http_or_tls() -> None:
    bad = rule(
        "hosts: [api.example.com]\nresolution: DYNAMIC_DNS\n"
        "ports: [{number: 5432, name: pg, protocol: TCP}]\n",
        "ServiceEntry",
    )
    assert findings(bad) == [
        f"7: {SE}: spec.hosts[0]: host must be wildcarded for resolution mode DYNAMIC_DNS",
        f"9: {SE}: spec.ports[0].protocol: only HTTP, TLS, GRPC, and HTTP2 protocols are "
        "supported for resolution type DYNAMIC_DNS",
    ]
    good = rule(
        "hosts: ['*.example.com']\nresolution: DYNAMIC_DNS\n"
        "ports: [{number: 80, name: http, protocol: HTTP}]\n",
        "ServiceEntry",
    )
    assert good.config is not None, findings(good)
    text = "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n"
    text += "metadata: {name: c, namespace: shop}\nspec: {address: 127.0.9.3}\n"
    both = parse_documents(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: r, "
        "namespace: shop}\nspec:\n  hosts: ['*.example.com']\n  resolution: DYNAMIC_DNS\n"
        "  ports: [{number: 80, name: http, protocol: HTTP}]\n" + text,
        "x.yaml",
    )
    assert both.config is not None
    ctx = PushContext.build(both.config)
    proxy = ctx.proxy("c.shop")
    assert proxy is not None
    [svc] = proxy.scope.services
    assert svc.forwards  # to the request's authority (Envoy's dynamic forward proxy)
