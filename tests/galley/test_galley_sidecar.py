"""Sidecar: ingress and egress listeners, selector, and each rule with its file:line."""

from __future__ import annotations

import textwrap

import pytest

from xds_server.galley.loader import LoadResult, parse_documents
from xds_server.galley.model import EgressListener, IngressListener, Sidecar, SidecarPort

HEADER = """\
apiVersion: networking.istio.io/v1beta1
kind: Sidecar
metadata:
  name: reviews
  namespace: bookinfo
spec:
"""


def parse(spec: str) -> LoadResult:
    """A Sidecar with this spec; the spec starts on line 7."""
    return parse_documents(HEADER + textwrap.indent(textwrap.dedent(spec), "  "), "sc.yaml")


def only_sidecar(result: LoadResult) -> Sidecar:
    assert result.errors == (), [str(e) for e in result.errors]
    assert result.config is not None
    [sidecar] = result.config.sidecars
    return sidecar


def test_full_sidecar() -> None:
    sidecar = only_sidecar(
        parse(
            """\
            workloadSelector:
              labels: {app: reviews}
            ingress:
            - port: {number: 9080, protocol: http, name: http}
              defaultEndpoint: 127.0.0.1:8080
              captureMode: DEFAULT
            - port: {number: 9443, protocol: TCP}
              bind: 0.0.0.0
              defaultEndpoint: "[::1]:8443"
            egress:
            - hosts: ["./ratings.bookinfo.svc.cluster.local", "*/*.example.com", "~/*"]
              captureMode: NONE
            outboundTrafficPolicy:
              mode: REGISTRY_ONLY
            """
        )
    )
    assert sidecar.meta.key == "bookinfo/reviews"
    assert sidecar.workload_selector is not None
    assert dict(sidecar.workload_selector) == {"app": "reviews"}
    assert sidecar.ingress == (
        IngressListener(SidecarPort(9080, "HTTP", "http"), "", "127.0.0.1:8080"),
        IngressListener(SidecarPort(9443, "TCP", ""), "0.0.0.0", "[::1]:8443"),
    )
    assert sidecar.egress == (
        EgressListener(("./ratings.bookinfo.svc.cluster.local", "*/*.example.com", "~/*")),
    )


def test_sidecar_port_target_port_warns_it_has_no_effect() -> None:
    result = parse("ingress:\n- port: {number: 80, protocol: TCP, targetPort: 81}\n")
    assert result.errors == ()
    assert [str(w) for w in result.warnings] == [
        "sc.yaml:8: warning: Sidecar bookinfo/reviews: spec.ingress[0].port.targetPort: "
        "has no effect: "
        "Istio applies targetPort to ServiceEntry ports only"
    ]


def test_empty_and_missing_spec() -> None:
    assert only_sidecar(parse("{}\n")).ingress == ()
    no_spec = parse_documents(HEADER.replace("spec:\n", ""), "sc.yaml")
    sidecar = only_sidecar(no_spec)
    assert sidecar.workload_selector is None and sidecar.egress == ()


P = "sc.yaml:{line}: Sidecar bookinfo/reviews: {field}: {message}"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            "workloadSelector: {labels: {}}\n",
            P.format(line=7, field="spec.workloadSelector", message="labels must not be empty"),
        ),
        (
            "ingress:\n- defaultEndpoint: 127.0.0.1:80\n",
            P.format(line=8, field="spec.ingress[0].port", message="required field missing"),
        ),
        (
            "ingress:\n- port:\n    protocol: HTTP\n",
            P.format(line=8, field="spec.ingress[0].port.number", message="required field missing"),
        ),
        (
            "ingress:\n- port: {number: 80, protocol: TCP}\n  defaultEndpoint: 127.0.0.1:0\n",
            P.format(
                line=9,
                field="spec.ingress[0].defaultEndpoint",
                message="'127.0.0.1:0' has a port outside 1..65535",
            ),
        ),
        (
            "ingress:\n- port: {number: 80, protocol: TCP}\n  defaultEndpoint: localhost\n",
            P.format(
                line=9,
                field="spec.ingress[0].defaultEndpoint",
                message="'localhost' must be host:port, like 127.0.0.1:8080",
            ),
        ),
        (
            "ingress:\n- port: {number: 80, protocol: TCP}\n  defaultEndpoint: 127.0.0.1:http\n",
            P.format(
                line=9,
                field="spec.ingress[0].defaultEndpoint",
                message="'127.0.0.1:http' has a port that is not a number",
            ),
        ),
        (
            "ingress:\n- port: {number: 80, protocol: TCP}\n  bind: localhost\n",
            P.format(
                line=9, field="spec.ingress[0].bind", message="'localhost' must be an IP address"
            ),
        ),
        (
            "ingress:\n- port: {number: 80, protocol: TCP}\n- port: {number: 80, protocol: HTTP}\n",
            P.format(
                line=9,
                field="spec.ingress[1].port",
                message="port 80 is already used by spec.ingress[0]",
            ),
        ),
        (
            "ingress:\n- port: {number: 80, protocol: TCP}\n  tls: {mode: SIMPLE}\n",
            P.format(
                line=9,
                field="spec.ingress[0].tls",
                message="TLS settings need a port of protocol HTTPS or TLS, not TCP (Istio)",
            ),
        ),
        (
            "ingress:\n- port: {number: 443, protocol: HTTPS}\n  tls: {mode: SIMPLE}\n",
            P.format(
                line=9,
                field="spec.ingress[0].tls.credentialName",
                message="mode SIMPLE needs a certificate: credentialName, or serverCertificate "
                "and privateKey",
            ),
        ),
        (
            "ingress:\n- port: {number: 443, protocol: HTTPS}\n  tls: {mode: ISTIO_MUTUAL}\n",
            P.format(
                line=9,
                field="spec.ingress[0].tls.mode",
                message="ISTIO_MUTUAL is not a mode a sidecar ends TLS with: use SIMPLE, MUTUAL "
                "or OPTIONAL_MUTUAL (Istio refuses ISTIO_MUTUAL and AUTO_PASSTHROUGH here)",
            ),
        ),
        (
            "ingress:\n- port: {number: 443, protocol: HTTPS}\n  tls: {}\n",
            P.format(
                line=9,
                field="spec.ingress[0].tls.mode",
                message="PASSTHROUGH is not a mode a sidecar ends TLS with: use SIMPLE, MUTUAL "
                "or OPTIONAL_MUTUAL (Istio refuses ISTIO_MUTUAL and AUTO_PASSTHROUGH here)",
            ),
        ),
        (
            "ingress:\n- port: {number: 443, protocol: HTTPS}\n"
            "  tls: {mode: SIMPLE, credentialName: c}\n",
            P.format(
                line=9,
                field="spec.ingress[0].tls.credentialName",
                message="not supported by pocketmesh yet (Istio refuses it in a Sidecar's "
                "ingress tls too)",
            ),
        ),
        (
            "ingress:\n- port: {number: 80, protocol: TCP}\n  captureMode: ALL\n",
            P.format(
                line=9,
                field="spec.ingress[0].captureMode",
                message="'ALL' must be one of DEFAULT, IPTABLES, NONE",
            ),
        ),
        (
            "egress:\n- port: {number: 80, protocol: TCP}\n",
            P.format(line=8, field="spec.egress[0].hosts", message="required field missing"),
        ),
        (
            "egress:\n- hosts: []\n",
            P.format(line=8, field="spec.egress[0].hosts", message="must not be empty"),
        ),
        (
            "egress:\n- hosts: [reviews.default.svc.cluster.local]\n",
            P.format(
                line=8,
                field="spec.egress[0].hosts[0]",
                message="'reviews.default.svc.cluster.local' must be namespace/dnsName, "
                "like './*' or 'istio-system/*.example.com'",
            ),
        ),
        (
            "egress:\n- hosts: [Bad/*]\n",
            P.format(
                line=8,
                field="spec.egress[0].hosts[0]",
                message="'Bad/*' must start with '.', '*', '~' or a namespace name (or ~name) "
                "before the '/'",
            ),
        ),
        (
            "egress:\n- hosts: [~Bad/a.com]\n",
            P.format(
                line=8,
                field="spec.egress[0].hosts[0]",
                message="'~Bad/a.com' must start with '.', '*', '~' or a namespace name (or "
                "~name) before the '/'",
            ),
        ),
        (
            "egress:\n- hosts: [./*]\n- hosts: [./*]\n",
            P.format(
                line=9,
                field="spec.egress[1]",
                message="egress can have only one listener without a port",
            ),
        ),
        (
            "egress:\n- hosts: [./*]\n- hosts: [./*]\n  port: {number: 80, protocol: HTTP}\n",
            P.format(
                line=8,
                field="spec.egress[0]",
                message="the egress listener without a port must be the last one",
            ),
        ),
        (
            "egress:\n- hosts: [./*]\n  bind: 127.0.0.1\n",
            P.format(line=9, field="spec.egress[0].bind", message="a bind address needs a port"),
        ),
        (
            "ingress:\n- port: {number: 80, protocol: TCP}\n  captureMode: IPTABLES\n",
            P.format(
                line=9,
                field="spec.ingress[0].captureMode",
                message="captureMode IPTABLES (a deliberate non-goal: pocketmesh binds addresses, "
                "it never captures traffic) is not supported by pocketmesh yet",
            ),
        ),
        (
            "outboundTrafficPolicy: {egressProxy: {host: a.com}}\n",
            P.format(
                line=7,
                field="spec.outboundTrafficPolicy.egressProxy",
                message="needs mode ALLOW_ANY: it is where ALLOW_ANY's requests go (Istio)",
            ),
        ),
        (
            "outboundTrafficPolicy: {mode: DENY}\n",
            P.format(
                line=7,
                field="spec.outboundTrafficPolicy.mode",
                message="'DENY' must be one of ALLOW_ANY, REGISTRY_ONLY",
            ),
        ),
        (
            "inboundConnectionPool: {}\n",
            P.format(
                line=7,
                field="spec.inboundConnectionPool",
                message="connection pool must have at least one field",
            ),
        ),
        (
            "ingres: []\n",
            P.format(
                line=7, field="spec.ingres", message="unknown field (did you mean 'ingress'?)"
            ),
        ),
    ],
)
def test_rule(spec: str, expected: str) -> None:
    result = parse(spec)
    assert result.config is None
    assert expected in [str(e) for e in result.errors]
