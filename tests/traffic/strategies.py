"""Hypothesis strategies for valid traffic config over the examples' registry.

`mesh_config()` draws a YAML text of a Gateway plus DestinationRules and
VirtualServices that are valid by construction (hosts, ports and subsets exist,
weights add up to 100, one rule per host): every field pocketmesh supports appears
in some draw. The Envoy ACK property and the validation properties both use it.
Some draws add an edge Gateway (TLS ended with files, MUTUAL and its client
checks, TCP, TLS passthrough and TLS-ended TCP servers), delegated routes, and
`tls[]` routes for a TLS service the sidecars reach.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

from tests.traffic.mesh import EXAMPLES

SERVICES = {"reviews": 9080, "ratings": 9080, "httpbin": 8000}
VERSIONS = ("v1", "v2", "v3")
HEADERS = ("end-user", "x-group", "x-id", "cookie", "user-agent")
REGEXES = ("/items/[0-9]+", "^/api/v[12]/.*", "[a-z]+", ".*", "(foo|bar)")
SIMPLE_LB = ("ROUND_ROBIN", "LEAST_REQUEST", "RANDOM")
DURATIONS = ("1ms", "0.25s", "2s", "1m", "100ms", "1h")
# Throwaway certificates for TLS origination (SIMPLE / MUTUAL). ISTIO_MUTUAL is not
# drawn: these meshes run without workload identities, where it is refused.
TLS_DATA = Path(__file__).resolve().parent / "data"
GATEWAY = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: httpbin-gateway}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: SIMPLE, credentialName: httpbin-credential}
  - port: {number: 8443, name: https-named, protocol: HTTPS}
    hosts: [httpbin.example.com, "*/reviews.example.com"]
    tls: {mode: SIMPLE, credentialName: httpbin-credential}
"""
CREDENTIAL = (EXAMPLES / "secure-ingress-gateway" / "httpbin-credential.yaml").read_text()

words = st.text("abcdefghij-", min_size=1, max_size=8).filter(lambda s: s[0] != "-")


def string_match(kinds: tuple[str, ...] = ("exact", "prefix", "regex")) -> st.SearchStrategy:
    return st.one_of(
        *[
            st.builds(lambda v, k=k: {k: v}, st.sampled_from(REGEXES) if k == "regex" else words)
            for k in kinds
        ]
    )


uri_match = st.one_of(
    st.builds(lambda w: {"exact": f"/{w}"}, words),
    st.builds(lambda w: {"prefix": f"/{w}"}, words),
    st.builds(lambda r: {"regex": r}, st.sampled_from(REGEXES)),
)

http_match = st.fixed_dictionaries(
    {},
    optional={
        "name": words,
        "uri": uri_match,
        "headers": st.dictionaries(
            st.sampled_from(HEADERS), st.one_of(string_match(), st.just({})), max_size=2
        ),
        "queryParams": st.dictionaries(words, string_match(("exact", "regex")), max_size=2),
        "method": st.sampled_from(["GET", "POST", "PUT"]).map(lambda m: {"exact": m}),
        "authority": string_match(("exact", "prefix")),
        "scheme": st.sampled_from(["http", "https"]).map(lambda s: {"exact": s}),
        "withoutHeaders": st.dictionaries(st.sampled_from(HEADERS), st.just({}), max_size=1),
        "ignoreUriCase": st.booleans(),
        "statPrefix": words,
        "sourceLabels": st.sampled_from([{"app": "productpage"}, {"app": "sleep"}]),
        "sourceNamespace": st.sampled_from(["default", "istio-system"]),
        "port": st.sampled_from([9080, 8000, 8080]),
    },
)


def weights(n: int) -> st.SearchStrategy[list[int]]:
    """n non-negative weights adding up to 100, at least one positive."""
    if n == 1:
        return st.just([100])
    return (
        st.lists(st.integers(0, 100), min_size=n - 1, max_size=n - 1)
        .map(
            lambda cuts: [
                b - a for a, b in zip([0, *sorted(cuts)], [*sorted(cuts), 100], strict=True)
            ]
        )
        .filter(lambda ws: any(ws))
    )


@st.composite
def destinations(draw: st.DrawFn, host: str, subsets: list[str]) -> list[dict[str, Any]]:
    n = draw(st.integers(1, 3))
    ws = draw(weights(n))
    result = []
    for weight in ws:
        dest: dict[str, Any] = {"host": host}
        if subsets and draw(st.booleans()):
            dest["subset"] = draw(st.sampled_from(subsets))
        if draw(st.booleans()):
            dest["port"] = {"number": SERVICES[host]}
        entry: dict[str, Any] = {"destination": dest}
        if draw(st.integers(0, 3)) == 0:
            entry["headers"] = draw(
                st.fixed_dictionaries({}, optional={"request": header_ops, "response": header_ops})
            )
        if n > 1 or draw(st.booleans()):
            entry["weight"] = weight
        result.append(entry)
    return result


header_ops = st.fixed_dictionaries(
    {},
    optional={
        "set": st.dictionaries(st.sampled_from(HEADERS), words, max_size=2),
        "add": st.dictionaries(st.sampled_from(("x-a", "x-b")), words, max_size=2),
        "remove": st.lists(st.sampled_from(HEADERS), max_size=2),
    },
)


@st.composite
def http_route(draw: st.DrawFn, host: str, subsets: list[str]) -> dict[str, Any]:
    route: dict[str, Any] = {}
    if draw(st.booleans()):
        route["match"] = draw(st.lists(http_match, min_size=1, max_size=3))
    action = draw(st.integers(0, 7))
    if action == 0:
        route["redirect"] = draw(
            st.fixed_dictionaries(
                {"uri": words.map(lambda w: f"/{w}")},
                optional={
                    "authority": words,
                    "redirectCode": st.sampled_from([301, 302, 303, 307, 308]),
                    "scheme": st.sampled_from(["http", "https"]),
                    "port": st.integers(1, 65535),
                },
            )
        )
    elif action == 1:
        route["directResponse"] = draw(
            st.fixed_dictionaries(
                {"status": st.integers(200, 599)},
                optional={"body": st.text(max_size=20).map(lambda b: {"string": b})},
            )
        )
    else:
        route["route"] = draw(destinations(host, subsets))
        extras = draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "timeout": st.sampled_from(DURATIONS),
                    "retries": st.fixed_dictionaries(
                        {"attempts": st.integers(0, 5)},
                        optional={
                            "perTryTimeout": st.sampled_from(DURATIONS),
                            "retryOn": st.sampled_from(
                                ["5xx", "gateway-error,connect-failure", "503,reset"]
                            ),
                            "retryIgnorePreviousHosts": st.booleans(),
                            "backoff": st.sampled_from(DURATIONS),
                        },
                    ),
                    "rewrite": st.one_of(
                        st.fixed_dictionaries({"uri": words.map(lambda w: f"/{w}")}),
                        st.fixed_dictionaries(
                            {
                                "uriRegexRewrite": st.sampled_from(
                                    [
                                        {"match": "^/(foo|bar)/(.*)$", "rewrite": "/\\2/\\1"},
                                        {"match": "/items/[0-9]+", "rewrite": "/items"},
                                        {"match": ".*", "rewrite": "/"},
                                    ]
                                )
                            }
                        ),
                    ).flatmap(
                        lambda r: st.fixed_dictionaries(
                            {k: st.just(v) for k, v in r.items()}, optional={"authority": words}
                        )
                    ),
                    "mirror": st.sampled_from(sorted(SERVICES)).map(lambda h: {"host": h}),
                    "mirrorPercentage": st.floats(0, 100).map(lambda v: {"value": v}),
                    "mirrors": st.lists(
                        st.fixed_dictionaries(
                            {
                                "destination": st.sampled_from(sorted(SERVICES)).map(
                                    lambda h: {"host": h}
                                )
                            },
                            optional={"percentage": st.floats(0, 100).map(lambda v: {"value": v})},
                        ),
                        min_size=1,
                        max_size=2,
                    ),
                },
            )
        )
        if "mirrorPercentage" in extras and "mirror" not in extras:
            del extras["mirrorPercentage"]
        if "mirror" in extras:
            extras.pop("mirrors", None)  # Istio: one or the other
        route.update(extras)
    route.update(
        draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "fault": st.fixed_dictionaries(
                        {},
                        optional={
                            "delay": st.fixed_dictionaries(
                                {
                                    "fixedDelay": st.sampled_from(DURATIONS),
                                    "percentage": st.floats(0, 100).map(lambda v: {"value": v}),
                                }
                            ),
                            "abort": st.one_of(
                                st.fixed_dictionaries({"httpStatus": st.integers(200, 599)}),
                                st.fixed_dictionaries(
                                    {"grpcStatus": st.sampled_from(["UNAVAILABLE", "INTERNAL"])}
                                ),
                            ).flatmap(
                                lambda a: st.floats(0, 100).map(
                                    lambda v: {**a, "percentage": {"value": v}}
                                )
                            ),
                        },
                    ).filter(bool),
                    "headers": st.fixed_dictionaries(
                        {}, optional={"request": header_ops, "response": header_ops}
                    ),
                    "corsPolicy": st.fixed_dictionaries(
                        {},
                        optional={
                            "allowOrigins": st.lists(string_match(), max_size=2),
                            "allowMethods": st.lists(st.sampled_from(["GET", "POST"]), max_size=2),
                            "allowHeaders": st.lists(st.sampled_from(HEADERS), max_size=2),
                            "maxAge": st.sampled_from(DURATIONS),
                            "allowCredentials": st.booleans(),
                            "unmatchedPreflights": st.sampled_from(["FORWARD", "IGNORE"]),
                        },
                    ),
                },
            )
        )
    )
    return route


# Locality load balancing over the registry's localities (none, so every endpoint is
# in the proxy's: the settings must still be ACKed), with the three shapes Istio has.
LOCALITY_LB = (
    {"failover": [{"from": "us-east", "to": "eu-west"}]},
    {"failoverPriority": ["version", "topology.kubernetes.io/zone"]},
    {"distribute": [{"from": "us-east/*", "to": {"us-east/a": 70, "eu-west": 30}}]},
    {"enabled": False},
)
policy_fields: dict[str, st.SearchStrategy[Any]] = {
    "loadBalancer": st.one_of(
        st.sampled_from((*SIMPLE_LB, "PASSTHROUGH", "UNSPECIFIED")).map(lambda s: {"simple": s}),
        st.sampled_from(
            [
                {"httpHeaderName": "x-user"},
                {"useSourceIp": True},
                {"httpCookie": {"name": "session", "ttl": "10s"}},
                {"httpHeaderName": "end-user", "minimumRingSize": 64},
                {"httpQueryParameterName": "user", "maglev": {"tableSize": 65537}},
                {
                    "httpCookie": {
                        "name": "s",
                        "attributes": [{"name": "SameSite", "value": "Lax"}],
                    },
                    "ringHash": {"minimumRingSize": 256},
                },
            ]
        ).map(lambda c: {"consistentHash": c}),
        st.fixed_dictionaries(
            {"simple": st.sampled_from(("ROUND_ROBIN", "LEAST_REQUEST"))},
            optional={
                "localityLbSetting": st.sampled_from(LOCALITY_LB),
                "warmup": st.fixed_dictionaries(
                    {"duration": st.sampled_from(DURATIONS)},
                    optional={
                        "minimumPercent": st.integers(0, 100),
                        "aggression": st.sampled_from((0.5, 1, 2.5)),
                    },
                ),
            },
        ),
        st.sampled_from(DURATIONS).map(lambda d: {"warmupDurationSecs": d}),
    ),
    "connectionPool": st.fixed_dictionaries(
        {},
        optional={
            "tcp": st.fixed_dictionaries(
                {},
                optional={
                    "maxConnections": st.integers(1, 1000),
                    "connectTimeout": st.sampled_from(DURATIONS),
                    "tcpKeepalive": st.fixed_dictionaries(
                        {},
                        optional={
                            "probes": st.integers(1, 9),
                            "time": st.sampled_from(("1s", "60s", "2h")),
                            "interval": st.sampled_from(("1s", "75s")),
                        },
                    ),
                    "maxConnectionDuration": st.sampled_from(DURATIONS),
                    "idleTimeout": st.sampled_from(("0s", *DURATIONS)),
                },
            ),
            "http": st.fixed_dictionaries(
                {},
                optional={
                    "http1MaxPendingRequests": st.integers(1, 1000),
                    "http2MaxRequests": st.integers(1, 1000),
                    "maxRequestsPerConnection": st.integers(1, 100),
                    "maxRetries": st.integers(1, 10),
                    "idleTimeout": st.sampled_from(DURATIONS),
                    "h2UpgradePolicy": st.sampled_from(("DEFAULT", "DO_NOT_UPGRADE", "UPGRADE")),
                    "maxConcurrentStreams": st.integers(1, 1000),
                    "http2KeepAlive": st.fixed_dictionaries(
                        {
                            "interval": st.sampled_from(("1s", "30s")),
                            "timeout": st.sampled_from(("1s", "5s")),
                        }
                    ),
                },
            ),
        },
    ).filter(bool),  # Istio: a connection pool must set something
    "outlierDetection": st.fixed_dictionaries(
        {},
        optional={
            "consecutive5xxErrors": st.integers(0, 10),
            "consecutiveGatewayErrors": st.integers(0, 10),
            "interval": st.sampled_from(DURATIONS),
            "baseEjectionTime": st.sampled_from(DURATIONS),
            "maxEjectionPercent": st.integers(0, 100),
            "splitExternalLocalOriginErrors": st.just(True),
            "outlierDetectionHttpErrorCodes": st.lists(
                st.sampled_from((404, 418, 500)), min_size=1
            ),
        },
    ),
    "tls": st.deferred(lambda: tls_settings),
    "retryBudget": st.fixed_dictionaries(
        {}, optional={"percent": st.integers(0, 100), "minRetryConcurrency": st.integers(1, 9)}
    ),
    "proxyProtocol": st.fixed_dictionaries({}, optional={"version": st.sampled_from(["V1", "V2"])}),
    "tunnel": st.fixed_dictionaries(
        {
            "targetHost": st.sampled_from(["api.example.com", "10.1.2.3"]),
            "targetPort": st.integers(1, 65535),
        }
    ),
}
# Istio: a traffic policy must set something.
policy = st.fixed_dictionaries({}, optional=policy_fields).filter(bool)


@st.composite
def _tls(draw: st.DrawFn) -> dict[str, Any]:
    mode = draw(st.sampled_from(["DISABLE", "SIMPLE", "MUTUAL"]))
    if mode == "DISABLE":
        return {"mode": mode}
    tls: dict[str, Any] = {"mode": mode}
    if mode == "MUTUAL":
        tls["clientCertificate"] = str(TLS_DATA / "client.crt")
        tls["privateKey"] = str(TLS_DATA / "client.key")
    if draw(st.booleans()):
        tls["sni"] = draw(st.sampled_from(["api.example.com", "reviews.default.svc"]))
    if draw(st.booleans()):
        tls["insecureSkipVerify"] = True
    else:
        if draw(st.booleans()):
            tls["caCertificates"] = str(TLS_DATA / "ca.crt")
        if draw(st.booleans()):
            tls["subjectAltNames"] = draw(
                st.lists(st.sampled_from(["a.example.com", "spiffe://td/ns/a/sa/b"]), min_size=1)
            )
    return tls


tls_settings = _tls()


@st.composite
def traffic_policy(draw: st.DrawFn, port: int) -> dict[str, Any]:
    result = draw(policy)
    if draw(st.booleans()):
        level = draw(
            st.fixed_dictionaries(
                {},
                optional={
                    k: policy_fields[k]
                    for k in ("loadBalancer", "connectionPool", "outlierDetection", "tls")
                },
            )
        )
        result["portLevelSettings"] = [{"port": {"number": port}, **level}]
    return result


@st.composite
def mesh_config(draw: st.DrawFn) -> str:
    docs: list[dict[str, Any]] = []
    subsets: dict[str, list[str]] = {}
    for host in sorted(SERVICES):
        if not draw(st.booleans()):
            continue
        names = draw(st.lists(st.sampled_from(VERSIONS), unique=True, max_size=3))
        spec: dict[str, Any] = {
            "host": host,
            "subsets": [
                {
                    "name": n,
                    "labels": {"version": n},
                    **({"trafficPolicy": draw(policy)} if draw(st.booleans()) else {}),
                }
                for n in names
            ],
        }
        if draw(st.booleans()):
            spec["trafficPolicy"] = draw(traffic_policy(SERVICES[host]))
        subsets[host] = names
        docs.append({"kind": "DestinationRule", "metadata": {"name": host}, "spec": spec})
    if draw(st.booleans()):  # a rule for one workload's sidecar only (14c)
        selected = {
            "host": draw(st.sampled_from(sorted(SERVICES))),
            "workloadSelector": {"matchLabels": {"app": "productpage"}},
            "trafficPolicy": draw(policy),
        }
        if draw(st.booleans()):
            selected["exportTo"] = ["."]
        docs.append(
            {"kind": "DestinationRule", "metadata": {"name": "for-productpage"}, "spec": selected}
        )
    for host in sorted(SERVICES):
        if not draw(st.booleans()):
            continue
        gateways = draw(
            st.sampled_from([None, ["mesh"], ["httpbin-gateway"], ["httpbin-gateway", "mesh"]])
        )
        spec = {
            "hosts": [host]
            if gateways is None or gateways == ["mesh"]
            else [f"{host}.example.com", host],
            "http": draw(st.lists(http_route(host, subsets.get(host, [])), min_size=1, max_size=4)),
        }
        if gateways is not None:
            spec["gateways"] = gateways
        docs.append({"kind": "VirtualService", "metadata": {"name": host}, "spec": spec})
    if draw(st.booleans()):
        tcp = {
            "hosts": ["tcp-echo"],
            "tcp": [{"route": [{"destination": {"host": "tcp-echo"}, "weight": 100}]}],
        }
        docs.append({"kind": "VirtualService", "metadata": {"name": "tcp-echo"}, "spec": tcp})
    docs += draw(edge())
    if draw(st.booleans()):
        docs += draw(delegation())
    if draw(st.booleans()):
        docs += draw(sidecar_tls())
    for doc in docs:
        doc["apiVersion"] = "networking.istio.io/v1"
    if draw(st.booleans()):
        docs += draw(security_docs())
    return GATEWAY + "".join("---\n" + yaml.safe_dump(d, sort_keys=False) for d in docs)


# --- gateways beyond HTTP, delegates, tls[] -------------------------------------------

SERVER_FILES = {  # a key pair Envoy can serve (the client pair doubles as one), and its CA
    "serverCertificate": str(TLS_DATA / "client.crt"),
    "privateKey": str(TLS_DATA / "client.key"),
}
CLIENT_HASH = "a" * 64  # a well-formed hash no client has: the check is what Envoy gets
CLIENT_SPKI = "A" * 43 + "="
CIPHERS = ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384", "AES128-SHA")


@st.composite
def ending_tls(draw: st.DrawFn) -> dict[str, Any]:
    """A server `tls` that ends TLS with files: SIMPLE, MUTUAL or OPTIONAL_MUTUAL."""
    mode = draw(st.sampled_from(["SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL"]))
    tls: dict[str, Any] = {"mode": mode}
    if draw(st.booleans()):
        tls.update(SERVER_FILES)
    else:
        tls["tlsCertificates"] = [dict(SERVER_FILES)]
    if mode != "SIMPLE":
        tls["caCertificates"] = str(TLS_DATA / "ca.crt")
        optional = {
            "subjectAltNames": st.just(["client.example.com"]),
            "verifyCertificateHash": st.just([CLIENT_HASH]),
            "verifyCertificateSpki": st.just([CLIENT_SPKI]),
            "insecureSkipVerify": st.booleans(),
        }
        tls.update(draw(st.fixed_dictionaries({}, optional=optional)))
    versions = draw(st.sampled_from([(None, None), ("TLSV1_2", None), (None, "TLSV1_2"),
                                     ("TLSV1_2", "TLSV1_3"), ("TLSV1_3", "TLSV1_3")]))  # fmt: skip
    if versions[0]:
        tls["minProtocolVersion"] = versions[0]
    if versions[1]:
        tls["maxProtocolVersion"] = versions[1]
    if versions[0] != "TLSV1_3" and draw(st.booleans()):
        tls["cipherSuites"] = draw(st.lists(st.sampled_from(CIPHERS), min_size=1, unique=True))
    return tls


def _tcp_to_echo(gateway: str, port: int, host: str) -> dict[str, Any]:
    return {
        "kind": "VirtualService",
        "metadata": {"name": host.split(".")[0]},
        "spec": {
            "hosts": [host],
            "gateways": [gateway],
            "tcp": [
                {
                    "match": [{"port": port}],
                    "route": [{"destination": {"host": "tcp-echo", "port": {"number": 9000}}}],
                }
            ],
        },
    }


@st.composite
def edge(draw: st.DrawFn) -> list[dict[str, Any]]:
    """An edge Gateway with some of: HTTPS ended with files, TCP, TLS passthrough, and
    TLS-ended TCP, each with the VirtualService that routes it."""
    servers: list[dict[str, Any]] = []
    docs: list[dict[str, Any]] = []
    if draw(st.booleans()):
        servers.append(
            {
                "port": {"number": 9443, "name": "https-edge", "protocol": "HTTPS"},
                "hosts": ["edge.example.com"],
                "tls": draw(ending_tls()),
            }
        )
        docs.append(
            {
                "kind": "VirtualService",
                "metadata": {"name": "edge"},
                "spec": {
                    "hosts": ["edge.example.com"],
                    "gateways": ["edge-gateway"],
                    "http": [{"route": [{"destination": {"host": "httpbin"}}]}],
                },
            }
        )
    if draw(st.booleans()):
        servers.append(
            {"port": {"number": 31400, "name": "tcp", "protocol": "TCP"}, "hosts": ["*"]}
        )
        docs.append(_tcp_to_echo("edge-gateway", 31400, "tcp.example.com"))
    if draw(st.booleans()):
        tls = draw(ending_tls())
        tls.pop("tlsCertificates", None)
        tls.update(SERVER_FILES)
        servers.append(
            {
                "port": {"number": 9445, "name": "tls-ended", "protocol": "TLS"},
                "hosts": ["tls.example.com"],
                "tls": tls,
            }
        )
        docs.append(_tcp_to_echo("edge-gateway", 9445, "tls.example.com"))
    if draw(st.booleans()):
        servers.append(
            {
                "port": {
                    "number": 9444,
                    "name": "passthrough",
                    "protocol": draw(st.sampled_from(["TLS", "HTTPS"])),
                },
                "hosts": ["*.pass.example.com"],
                "tls": {"mode": "PASSTHROUGH"},
            }
        )
        names = draw(st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, unique=True))
        docs.append(
            {
                "kind": "VirtualService",
                "metadata": {"name": "pass"},
                "spec": {
                    "hosts": ["*.pass.example.com"],
                    "gateways": ["edge-gateway"],
                    "tls": [
                        {
                            "match": [{"sniHosts": [f"{n}.pass.example.com"], "port": 9444}],
                            "route": [
                                {"destination": {"host": "httpbin", "port": {"number": 8000}}}
                            ],
                        }
                        for n in names
                    ],
                },
            }
        )
    if not servers:
        return []
    gateway = {
        "kind": "Gateway",
        "metadata": {"name": "edge-gateway"},
        "spec": {"selector": {"istio": "ingressgateway"}, "servers": servers},
    }
    return [gateway, *docs]


@st.composite
def delegation(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A root on the HTTP gateway delegating a prefix to a VirtualService without hosts."""
    sub_prefix = draw(st.sampled_from(["/api/v1", "/api", "/elsewhere"]))
    root = {
        "kind": "VirtualService",
        "metadata": {"name": "root"},
        "spec": {
            "hosts": ["delegated.example.com"],
            "gateways": ["httpbin-gateway"],
            "http": [
                {
                    "match": [{"uri": {"prefix": "/api"}}],
                    "timeout": draw(st.sampled_from(DURATIONS)),
                    "delegate": {"name": "api"},
                },
                {"route": [{"destination": {"host": "httpbin"}}]},
            ],
        },
    }
    delegate = {
        "kind": "VirtualService",
        "metadata": {"name": "api"},
        "spec": {
            "http": [
                {
                    "match": [{"uri": {"prefix": sub_prefix}}],
                    "route": [{"destination": {"host": "reviews"}}],
                },
                {"route": [{"destination": {"host": "ratings"}}]},
            ]
        },
    }
    return [root, delegate]


@st.composite
def sidecar_tls(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A TLS service the sidecars reach on their own address, routed by SNI."""
    service = {
        "kind": "ServiceEntry",
        "metadata": {"name": "secure-tls"},
        "spec": {
            "hosts": ["api.secure.example.com", "backup.secure.example.com"],
            "location": "MESH_EXTERNAL",
            "resolution": "STATIC",
            "ports": [{"number": 9443, "name": "tls", "protocol": "TLS"}],
            "endpoints": [{"address": "127.0.0.1"}],
        },
    }
    match: dict[str, Any] = {"sniHosts": ["api.secure.example.com"]}
    if draw(st.booleans()):
        match["sourceLabels"] = {"app": draw(st.sampled_from(["productpage", "sleep"]))}
    if draw(st.booleans()):
        match["port"] = 9443
    routes = [{"match": [match], "route": [{"destination": {"host": "backup.secure.example.com"}}]}]
    vs = {
        "kind": "VirtualService",
        "metadata": {"name": "secure-tls"},
        "spec": {"hosts": ["api.secure.example.com"], "tls": routes},
    }
    return [service, vs]


# --- security: RequestAuthentication, AuthorizationPolicy, the mesh settings ----------

# An EC public key (the key set RequestAuthentications are drawn with).
JWKS = (
    '{"keys": [{"kty": "EC", "crv": "P-256", "kid": "1", '
    '"x": "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4", '
    '"y": "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}]}'
)
SELECTORS = ({"app": "productpage"}, {"istio": "ingressgateway"}, None)
PROVIDERS = ("authz-grpc", "authz-http")
# The ext_authz service the providers name (its endpoint: nothing listens; Envoy only
# has to accept the config) and the mesh settings declaring them.
EXT_AUTHZ = [
    {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": "ext-authz", "namespace": "default"},
        "spec": {
            "hosts": ["ext-authz.default.svc.cluster.local"],
            "ports": [
                {"number": 8000, "name": "http", "protocol": "HTTP"},
                {"number": 9000, "name": "grpc", "protocol": "GRPC"},
            ],
            "resolution": "STATIC",
            "endpoints": [{"address": "127.0.0.1"}],
        },
    },
    {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "istio", "namespace": "istio-system"},
        "data": {
            "mesh": yaml.safe_dump(
                {
                    "extensionProviders": [
                        {
                            "name": "authz-grpc",
                            "envoyExtAuthzGrpc": {
                                "service": "ext-authz.default.svc.cluster.local",
                                "port": 9000,
                                "timeout": "0.5s",
                                "includeRequestBodyInCheck": {"maxRequestBytes": 4096},
                            },
                        },
                        {
                            "name": "authz-http",
                            "envoyExtAuthzHttp": {
                                "service": "ext-authz.default.svc.cluster.local",
                                "port": "8000",
                                "pathPrefix": "/check",
                                "failOpen": True,
                                "statusOnError": "503",
                                "includeRequestHeadersInCheck": ["x-ext-authz", "x-b3-*"],
                                "includeAdditionalHeadersInCheck": {"x-from": "mesh"},
                                "headersToUpstreamOnAllow": ["x-user"],
                                "headersToDownstreamOnDeny": ["*-reason"],
                                "headersToDownstreamOnAllow": ["x-result"],
                            },
                        },
                    ]
                }
            )
        },
    },
]
few_words = st.lists(words, min_size=1, max_size=2)
ips = st.lists(st.sampled_from(["10.0.0.0/8", "127.0.0.1", "::1", "192.168.1.0/24"]),
               min_size=1, max_size=2)  # fmt: skip
request_principals = st.lists(
    st.sampled_from(["*", "https://issuer.example/alice", "issuer@example.com/*", "*/bob"]),
    min_size=1,
    max_size=2,
)
peer_source = {
    "principals": st.lists(st.sampled_from(["cluster.local/ns/default/sa/sleep", "*"]), min_size=1),
    "notPrincipals": st.just(["*/sa/evil"]),
    "namespaces": st.just(["default"]),
    "notNamespaces": st.just(["other"]),
}
account_source = {
    "serviceAccounts": st.just(["default/sleep", "productpage"]),
    "notServiceAccounts": st.just(["evil"]),
}
common_source = {
    "requestPrincipals": request_principals,
    "notRequestPrincipals": request_principals,
    "trustDomains": st.just(["cluster.local", "*.local"]),
    "notTrustDomains": st.just(["evil.org"]),
}
ip_source = {
    "ipBlocks": ips,
    "notIpBlocks": ips,
    "remoteIpBlocks": ips,
    "notRemoteIpBlocks": ips,
}
operation = st.fixed_dictionaries(
    {},
    optional={
        "hosts": st.just(["httpbin.example.com", "*.example.com"]),
        "notHosts": st.just(["evil.example.com"]),
        "ports": st.just(["9080", "8080"]),
        "notPorts": st.just(["15000"]),
        "methods": st.just(["GET", "POST"]),
        "notMethods": st.just(["DELETE"]),
        "paths": st.lists(
            st.sampled_from(["/status/*", "/exact", "*.css", "/api/{*}/info", "/files/{**}"]),
            min_size=1,
        ),
        "notPaths": st.just(["/admin*"]),
    },
).filter(bool)
CUSTOM_KEYS = (
    "request.headers[x-user]", "request.headers[:method]", "source.ip", "remote.ip",
    "destination.ip", "destination.port", "connection.sni",
)  # fmt: skip
OTHER_KEYS = (
    "source.principal", "source.namespace", "source.serviceAccount", "source.trustDomain",
    "request.auth.principal", "request.auth.audiences", "request.auth.presenter",
    "request.auth.claims[groups]", "request.auth.claims[org][team]",
)  # fmt: skip
VALUES = {
    "source.ip": ["10.1.0.0/16"], "remote.ip": ["127.0.0.1"], "destination.ip": ["127.0.0.0/8"],
    "destination.port": ["9080"], "source.serviceAccount": ["default/sleep"],
    "source.trustDomain": ["cluster.local"],
}  # fmt: skip


@st.composite
def _when(draw: st.DrawFn, custom: bool) -> dict[str, Any]:
    key = draw(st.sampled_from(CUSTOM_KEYS if custom else CUSTOM_KEYS + OTHER_KEYS))
    values = VALUES.get(key, draw(st.sampled_from([["a"], ["b*", "*c"], ["*"]])))
    return {"key": key, draw(st.sampled_from(["values", "notValues"])): values}


@st.composite
def _source(draw: st.DrawFn, custom: bool) -> dict[str, Any]:
    fields = dict(ip_source)
    if not custom:
        fields.update(common_source)
        fields.update(draw(st.sampled_from([peer_source, account_source])))
    return draw(st.fixed_dictionaries({}, optional=fields).filter(bool))


@st.composite
def _rule(draw: st.DrawFn, custom: bool) -> dict[str, Any]:
    rule: dict[str, Any] = {}
    if draw(st.booleans()):
        rule["from"] = [
            {"source": s} for s in draw(st.lists(_source(custom), min_size=1, max_size=2))
        ]
    if draw(st.booleans()):
        rule["to"] = [{"operation": o} for o in draw(st.lists(operation, min_size=1, max_size=2))]
    if draw(st.booleans()):
        rule["when"] = draw(st.lists(_when(custom), min_size=1, max_size=3))
    return rule


@st.composite
def _jwt_rule(draw: st.DrawFn) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "issuer": draw(st.sampled_from(["https://issuer.example", "issuer@example.com"])),
        "jwks": JWKS,
    }
    optional = {
        "audiences": st.just(["reviews.example", "web"]),
        "fromHeaders": st.just([{"name": "x-jwt", "prefix": "Bearer "}]),
        "fromParams": st.just(["token"]),
        "fromCookies": st.just(["session"]),
        "outputPayloadToHeader": st.just("x-jwt-payload"),
        "outputClaimToHeaders": st.just([{"header": "x-jwt-sub", "claim": "sub"}]),
        "forwardOriginalToken": st.booleans(),
        "spaceDelimitedClaims": st.just(["roles"]),
    }
    rule.update(draw(st.fixed_dictionaries({}, optional=optional)))
    return rule


def _selector(labels: dict[str, str] | None) -> dict[str, Any]:
    return {} if labels is None else {"selector": {"matchLabels": labels}}


@st.composite
def security_docs(draw: st.DrawFn) -> list[dict[str, Any]]:
    """RequestAuthentications and AuthorizationPolicies (every action, dry-run) on
    productpage, the ingress gateway, or a whole namespace; CUSTOM with the mesh settings."""
    docs: list[dict[str, Any]] = []
    for i in range(draw(st.integers(0, 2))):
        labels = draw(st.sampled_from(SELECTORS))
        docs.append(
            {
                "apiVersion": "security.istio.io/v1",
                "kind": "RequestAuthentication",
                "metadata": {"name": f"jwt-{i}", "namespace": "default"},
                "spec": {
                    **_selector(labels),
                    "jwtRules": draw(st.lists(_jwt_rule(), min_size=1, max_size=2)),
                },
            }
        )
    custom = False
    for i in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["ALLOW", "DENY", "AUDIT", "CUSTOM"]))
        is_custom = action == "CUSTOM"
        custom |= is_custom
        labels = draw(st.sampled_from(SELECTORS))
        # A root-namespace policy applies everywhere: the gateway lives in istio-system.
        namespace = "istio-system" if labels == {"istio": "ingressgateway"} else "default"
        spec: dict[str, Any] = {**_selector(labels), "action": action}
        if is_custom:
            spec["provider"] = {"name": draw(st.sampled_from(PROVIDERS))}
        if is_custom or action == "DENY" or draw(st.booleans()):
            spec["rules"] = draw(st.lists(_rule(is_custom), min_size=1, max_size=2))
        metadata: dict[str, Any] = {"name": f"policy-{i}", "namespace": namespace}
        if not is_custom and draw(st.booleans()):
            metadata["annotations"] = {"istio.io/dry-run": "true"}
        docs.append(
            {
                "apiVersion": "security.istio.io/v1",
                "kind": "AuthorizationPolicy",
                "metadata": metadata,
                "spec": spec,
            }
        )
    if custom:
        docs += EXT_AUTHZ
    return docs
