"""Galley on VirtualService, DestinationRule and Gateway: every mistake, with its line.

Each case loads the examples' registry plus one file and compares the findings,
printed as `pocketmesh validate` prints them (`file:line: Kind ns/name: field: message`).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from tests.traffic.mesh import EXAMPLES, REGISTRY
from xds_server.galley.loader import LoadResult, load_paths
from xds_server.galley.model_traffic import (
    ClientTLS,
    Destination,
    HTTPMatch,
    StringMatch,
    TrafficPolicy,
)


def load(tmp_path: Path, text: str) -> LoadResult:
    path = tmp_path / "t.yaml"
    path.write_text(textwrap.dedent(text))
    return load_paths([REGISTRY, path])


def findings(result: LoadResult, tmp_path: Path) -> list[str]:
    prefix = str(tmp_path / "t.yaml") + ":"
    return [str(f).replace(prefix, "") for f in (*result.errors, *result.warnings)]


def vs(body: str, name: str = "reviews", hosts: str = "[reviews]") -> str:
    return (
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
        f"metadata: {{name: {name}}}\nspec:\n  hosts: {hosts}\n"
        + textwrap.indent(textwrap.dedent(body), "  ")
    )


DR_REVIEWS = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
---
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            vs("""\
            http:
            - route: [{destination: {host: reviews}, weight: 70}, {destination: {host: reviews}}]
            """),
            [
                "7: VirtualService default/reviews: spec.http[0].route: "
                "weights add up to 70, not 100"
            ],
        ),
        (
            vs("""\
            http:
            - route: [{destination: {host: reviews}}]
              timeout: 10 seconds
              retries: {attempts: "3", retryOn: "5xx,bogus"}
              fault: {abort: {httpStatus: 700}}
              bogus: 1
            """),
            [
                "8: VirtualService default/reviews: spec.http[0].timeout: '10 seconds' must be "
                "a duration like '10s', '0.5s' or '100ms'",
                "9: VirtualService default/reviews: spec.http[0].retries.attempts: "
                "expected integer, got string",
                "9: VirtualService default/reviews: spec.http[0].retries.retryOn: "
                "'bogus' is not a retry policy Envoy knows",
                "10: VirtualService default/reviews: spec.http[0].fault.abort.httpStatus: "
                "700 must be between 200 and 599",
                "11: VirtualService default/reviews: spec.http[0].bogus: unknown field",
            ],
        ),
        (
            vs("""\
            http:
            - route: [{destination: {host: reviews}}]
              rewrite: {uri: /a, uriRegexRewrite: {match: "^/(.*)$", rewrite: '/\\2'}}
              retries: {attempts: 2, backoff: 0.1ms, retryIgnorePreviousHosts: "yes"}
              fault: {abort: {grpcStatus: NOT_A_STATUS}}
              corsPolicy: {unmatchedPreflights: DROP}
            - route: [{destination: {host: reviews}}]
              rewrite: {uriRegexRewrite: {match: "(?=a)b", rewrite: /x}}
              fault: {abort: {httpStatus: 503, grpcStatus: INTERNAL}}
            """),
            [
                "8: VirtualService default/reviews: spec.http[0].rewrite.uriRegexRewrite: "
                "only one of uri and uriRegexRewrite may be set (Istio)",
                "8: VirtualService default/reviews: spec.http[0].rewrite.uriRegexRewrite.rewrite: "
                "uses \\2, but match has 1 group(s)",
                "9: VirtualService default/reviews: spec.http[0].retries.backoff: '0.1ms' must "
                "be a whole number of milliseconds, at least 1ms",
                "9: VirtualService default/reviews: spec.http[0].retries.retryIgnorePreviousHosts: "
                "expected boolean, got str",
                "10: VirtualService default/reviews: spec.http[0].fault.abort.grpcStatus: "
                "'NOT_A_STATUS' is not a gRPC status (OK, CANCELLED, UNKNOWN, INVALID_ARGUMENT, "
                "DEADLINE_EXCEEDED, NOT_FOUND, ALREADY_EXISTS, PERMISSION_DENIED, "
                "RESOURCE_EXHAUSTED, FAILED_PRECONDITION, ABORTED, OUT_OF_RANGE, UNIMPLEMENTED, "
                "INTERNAL, UNAVAILABLE, DATA_LOSS, UNAUTHENTICATED)",
                "11: VirtualService default/reviews: spec.http[0].corsPolicy.unmatchedPreflights: "
                "must be one of FORWARD, IGNORE, UNSPECIFIED",
                "13: VirtualService default/reviews: spec.http[1].rewrite.uriRegexRewrite.match: "
                "uses a construct RE2 (Envoy's regex engine) does not support",
                "14: VirtualService default/reviews: spec.http[1].fault.abort: must set exactly "
                "one of httpStatus, grpcStatus",
            ],
        ),
        (
            vs("""\
            http:
            - match: [{uri: {prefix: /x, exact: /y}}, {headers: {End-User: {exact: a}}}]
              route: [{destination: {host: reviews}}]
            - match: [{uri: {regex: "(?=a)b"}}]
              route: [{destination: {host: reviews}}]
            """),
            [
                "7: VirtualService default/reviews: spec.http[0].match[0].uri: must set only "
                "one of exact, prefix, regex, not exact, prefix",
                "7: VirtualService default/reviews: spec.http[0].match[1].headers.End-User: "
                "'End-User' must be a lower-case HTTP header name",
                "9: VirtualService default/reviews: spec.http[1].match[0].uri.regex: '(?=a)b' "
                "uses a construct RE2 (Envoy's regex engine) does not support",
            ],
        ),
        (
            vs("""\
            http:
            - route: [{destination: {host: reviews}}]
              redirect: {uri: /x}
            """),
            [
                "7: VirtualService default/reviews: spec.http[0]: "
                "must set exactly one of route, redirect, directResponse, delegate"
            ],
        ),
        (
            vs("""\
            gateways: [nope, mesh]
            http:
            - route:
              - {destination: {host: reviews, subset: v9}, weight: 80}
              - {destination: {host: reviewz}, weight: 20}
            - match: [{uri: {prefix: /a}}]
              route:
              - {destination: {host: ratings, subset: v1}, weight: 50}
              - {destination: {host: reviews, port: {number: 1234}}, weight: 50}
            """),
            [
                "6: VirtualService default/reviews: spec.gateways[0]: no Gateway default/nope",
                "9: VirtualService default/reviews: spec.http[0].route[0].destination.subset: "
                "subset 'v9': no DestinationRule defines subsets for "
                "reviews.default.svc.cluster.local",
                "10: VirtualService default/reviews: spec.http[0].route[1].destination.host: "
                "no ServiceEntry declares host 'reviewz.default.svc.cluster.local'",
                "13: VirtualService default/reviews: spec.http[1].route[0].destination.subset: "
                "subset 'v1': no DestinationRule defines subsets for "
                "ratings.default.svc.cluster.local",
                "14: VirtualService default/reviews: spec.http[1].route[1].destination.port"
                ".number: reviews.default.svc.cluster.local has no port 1234 (ports: 9080)",
                "11: warning: VirtualService default/reviews: spec.http[1]: never matches: "
                "spec.http[0] already matches every request",
            ],
        ),
        (
            DR_REVIEWS
            + vs("http:\n- route: [{destination: {host: reviews, subset: v2}}]\n")
            + "---\n"
            + vs(
                "http:\n- route: [{destination: {host: reviews, subset: v1}}]\n",
                name="again",
                hosts="[reviews.default.svc.cluster.local]",
            ),
            [
                "15: VirtualService default/reviews: spec.http[0].route[0].destination.subset: "
                "DestinationRule default/reviews defines no subset 'v2' (subsets: v1)",
                "21: VirtualService default/again: spec.hosts[0]: host "
                "'reviews.default.svc.cluster.local' on the sidecars (mesh) is already routed "
                "by VirtualService default/reviews (13); Istio would use the older one and "
                "ignore the other, pocketmesh does not merge them for sidecars: put the rules "
                "in one",
            ],
        ),
        (
            """\
            apiVersion: networking.istio.io/v1
            kind: DestinationRule
            metadata: {name: reviews}
            spec:
              host: reviews
              trafficPolicy:
                loadBalancer: {simple: FASTEST}
                outlierDetection: {interval: 5x, consecutive5xxErrors: -1}
                connectionPool: {tcp: {maxConnections: 0}}
                portLevelSettings:
                - loadBalancer: {simple: RANDOM}
              subsets:
              - {name: v1, labels: {version: v1}}
              - {name: v1, labels: {version: v2}}
            """,
            [
                "7: DestinationRule default/reviews: spec.trafficPolicy.loadBalancer.simple: "
                "'FASTEST' must be one of LEAST_CONN, LEAST_REQUEST, PASSTHROUGH, RANDOM, "
                "ROUND_ROBIN, UNSPECIFIED",
                "8: DestinationRule default/reviews: spec.trafficPolicy.outlierDetection"
                ".interval: '5x' must be a duration like '10s', '0.5s' or '100ms'",
                "8: DestinationRule default/reviews: spec.trafficPolicy.outlierDetection"
                ".consecutive5xxErrors: -1 must be between 0 and 2147483647",
                "9: DestinationRule default/reviews: spec.trafficPolicy.connectionPool.tcp"
                ".maxConnections: 0 must be between 1 and 2147483647",
                "11: DestinationRule default/reviews: spec.trafficPolicy.portLevelSettings[0]"
                ".port: required field missing",
                "14: DestinationRule default/reviews: spec.subsets[1].name: "
                "duplicate subset name 'v1'",
            ],
        ),
        (
            DR_REVIEWS.replace("name: reviews}", "name: other}").replace(
                "host: reviews", "host: x.example.com"
            )
            + DR_REVIEWS
            + DR_REVIEWS.replace("{name: reviews}", "{name: reviews-2}").replace(
                "subsets:\n  - {name: v1, labels: {version: v1}}",
                "subsets:\n  - {name: v7, labels: {version: v7}}",
            ),
            [
                "5: warning: DestinationRule default/other: spec.host: no ServiceEntry declares "
                "host 'x.example.com'",
                # Two rules for one host are merged, as Istio merges them (no error).
                "23: warning: DestinationRule default/reviews-2: spec.subsets[0].labels: "
                "subset 'v7' selects no endpoint of reviews.default.svc.cluster.local",
            ],
        ),
        (
            """\
            apiVersion: networking.istio.io/v1
            kind: Gateway
            metadata: {name: gw}
            spec:
              servers:
              - port: {number: 443, name: https, protocol: HTTPS}
                hosts: [a.example.com]
              - port: {number: 80, name: tcp, protocol: TCP}
                hosts: [a/b/c]
            """,
            [
                "4: Gateway default/gw: spec.selector: must select gateway workloads by labels",
                "6: Gateway default/gw: spec.servers[0].tls: an HTTPS server needs tls "
                "settings (mode SIMPLE, PASSTHROUGH, ...)",
                "9: Gateway default/gw: spec.servers[1].hosts[0]: 'a/b/c' must be 'host' or "
                "'namespace/host'",
            ],
        ),
    ],
)
def test_findings(tmp_path: Path, text: str, expected: list[str]) -> None:
    result = load(tmp_path, text)
    assert sorted(findings(result, tmp_path)) == sorted(expected)
    # Errors block the config (the server keeps its last good one); warnings do not.
    assert (result.config is None) == any(": warning: " not in e for e in expected)


def test_every_example_is_valid_with_the_registry() -> None:
    examples = [p for p in sorted(EXAMPLES.iterdir()) if p.is_dir() and p != REGISTRY]
    assert len(examples) >= 9
    for example in examples:
        result = load_paths([REGISTRY, example])
        assert [str(e) for e in (*result.errors, *result.warnings)] == [], example


def test_the_model_reads_what_was_written(tmp_path: Path) -> None:
    result = load(
        tmp_path,
        DR_REVIEWS.replace(
            "  subsets:",
            "  trafficPolicy:\n    tls: {mode: ISTIO_MUTUAL}\n"
            "    loadBalancer: {simple: LEAST_CONN}\n  subsets:",
        )
        + vs("""\
        http:
        - match: [{uri: {prefix: /a}, ignoreUriCase: true, headers: {x-a: {}}}]
          route: [{destination: {host: reviews, subset: v1}}]
          timeout: 1.5s
          mirrorPercentage: {value: 12.5}
          mirror: {host: ratings}
        """),
    )
    config = result.config_or_raise()
    [rule] = config.destination_rules
    assert rule.host == "reviews.default.svc.cluster.local"
    assert rule.traffic_policy is not None
    assert rule.traffic_policy.tls_mode == "ISTIO_MUTUAL"
    assert rule.policy(9080, "v1") == TrafficPolicy(
        load_balancer="LEAST_REQUEST", tls=ClientTLS("ISTIO_MUTUAL", namespace="default")
    )
    [service] = config.virtual_services
    [route] = service.http
    assert route.match[0].uri == StringMatch("prefix", "/a")
    assert route.match[0].ignore_uri_case
    assert route.match[0].headers[0].match is None  # {} means "present"
    assert route.route[0].destination == Destination("reviews.default.svc.cluster.local", "v1")
    assert route.route[0].weight == 100
    assert route.timeout_ms == 1500
    assert route.mirror == Destination("ratings.default.svc.cluster.local")
    assert route.mirror_percent == 12.5
    assert not HTTPMatch(uri=StringMatch("prefix", "/a")).is_catch_all


def test_validate_command_exit_codes(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(vs("http:\n- route: [{destination: {host: nope}}]\n"))
    run = [sys.executable, "-m", "xds_server.cli", "validate"]
    failed = subprocess.run([*run, str(REGISTRY), str(bad)], capture_output=True, text=True)
    assert failed.returncode == 1
    assert (
        f"{bad}:7: VirtualService default/reviews: spec.http[0].route[0].destination.host: "
        "no ServiceEntry declares host 'nope.default.svc.cluster.local'"
    ) in failed.stdout
    good = subprocess.run(
        [*run, str(REGISTRY), str(EXAMPLES / "request-routing")], capture_output=True, text=True
    )
    assert good.returncode == 0, good.stdout + good.stderr


CREDENTIAL = (EXAMPLES / "secure-ingress-gateway" / "httpbin-credential.yaml").read_text()
HTTPS_GATEWAY = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8443, name: https, protocol: HTTPS}
    tls: {mode: SIMPLE, credentialName: CREDENTIAL}
    hosts: [httpbin.example.com]
"""


def test_gateway_credentials(tmp_path: Path) -> None:
    ok = load(
        tmp_path, CREDENTIAL + "---\n" + HTTPS_GATEWAY.replace("CREDENTIAL", "httpbin-credential")
    )
    assert ok.errors == ()
    config = ok.config_or_raise()
    [credential] = config.tls_credentials
    assert credential.meta.key == "istio-system/httpbin-credential"
    assert credential.cert_pem.startswith("-----BEGIN CERTIFICATE-----")

    missing = load(tmp_path, HTTPS_GATEWAY.replace("CREDENTIAL", "nope"))
    assert findings(missing, tmp_path) == [
        "8: Gateway default/gw: spec.servers[0].tls.credentialName: no Secret 'nope' in "
        "namespace default or istio-system"
    ]


def test_secret_contents_are_checked(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    other_key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    cert = yaml.safe_load(CREDENTIAL)["data"]["tls.crt"]
    secret = """\
apiVersion: v1
kind: Secret
metadata: {name: s, namespace: istio-system}
type: kubernetes.io/tls
"""
    wrong_key = secret + "stringData:\n  tls.key: |\n" + textwrap.indent(other_key.decode(), "    ")
    wrong_key += f"data:\n  tls.crt: {cert}\n"
    assert findings(load(tmp_path, wrong_key), tmp_path) == [
        '6: Secret istio-system/s: stringData["tls.key"]: does not match the first '
        "certificate of tls.crt"
    ]
    not_base64 = secret + "data: {tls.crt: '%%%', tls.key: 'a2V5'}\n"
    assert findings(load(tmp_path, not_base64), tmp_path) == [
        '5: Secret istio-system/s: data["tls.crt"]: must be base64-encoded PEM'
    ]
    opaque = secret.replace("kubernetes.io/tls", "Opaque") + "data: {}\n"
    assert findings(load(tmp_path, opaque), tmp_path) == [
        "5: Secret istio-system/s: data: holds neither a certificate and key (tls.crt/tls.key "
        "or cert/key) nor a CA (ca.crt or cacert)"
    ]
    docker = secret.replace("kubernetes.io/tls", "kubernetes.io/dockerconfigjson") + "data: {}\n"
    assert findings(load(tmp_path, docker), tmp_path) == [
        "4: Secret istio-system/s: type: pocketmesh reads Secrets of type kubernetes.io/tls or "
        "Opaque only"
    ]


def test_header_edits_and_empty_gateways(tmp_path: Path) -> None:
    result = load(
        tmp_path,
        vs("""\
        gateways: []
        http:
        - route: [{destination: {host: reviews}}]
          headers: {request: {set: {host: x}}}
        """),
    )
    assert findings(result, tmp_path) == [
        "9: VirtualService default/reviews: spec.http[0].headers.request.set.host: 'host' "
        "cannot be changed here: use rewrite.authority"
    ]
    fixed = load(tmp_path, vs("gateways: []\nhttp:\n- route: [{destination: {host: reviews}}]\n"))
    [service] = fixed.config_or_raise().virtual_services
    assert service.gateways == ("mesh",)  # Istio: an empty list means the sidecars


def test_warnings_for_rules_that_apply_to_nothing(tmp_path: Path) -> None:
    result = load(
        tmp_path,
        vs("http:\n- route: [{destination: {host: reviews}}]\n", hosts="[nothing.example.com]")
        + "---\n"
        + HTTPS_GATEWAY.replace("CREDENTIAL", "c")
        .replace("istio: ingressgateway", "app: none")
        .replace("    tls: {mode: SIMPLE, credentialName: c}\n", "")
        .replace("HTTPS", "HTTP"),
    )
    assert result.errors == ()
    assert findings(result, tmp_path) == [
        "5: warning: VirtualService default/reviews: spec.hosts[0]: no ServiceEntry declares "
        "'nothing.example.com': the rule never applies",
        "13: warning: Gateway default/gw: spec.selector: selects no WorkloadEntry",
    ]


def test_validate_strict_fails_on_warnings(tmp_path: Path) -> None:
    warn = tmp_path / "warn.yaml"
    warn.write_text(vs("http:\n- route: [{destination: {host: reviews}}]\n", hosts="[x.example]"))
    run = [sys.executable, "-m", "xds_server.cli", "validate", str(REGISTRY), str(warn)]
    assert subprocess.run(run, capture_output=True).returncode == 0
    strict = subprocess.run([*run, "--strict"], capture_output=True, text=True)
    assert strict.returncode == 1
    files = len(list(REGISTRY.glob("*.yaml"))) + 1
    assert f"1 warning(s) in {files} file(s) (--strict)" in strict.stderr
