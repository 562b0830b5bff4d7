"""Hypothesis strategies for valid traffic config over the examples' registry.

`mesh_config()` draws a YAML text of a Gateway plus DestinationRules and
VirtualServices that are valid by construction (hosts, ports and subsets exist,
weights add up to 100, one rule per host): every field pocketmesh supports appears
in some draw. The Envoy ACK property and the validation properties both use it.
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
                        },
                    ),
                    "rewrite": st.fixed_dictionaries(
                        {"uri": words.map(lambda w: f"/{w}")}, optional={"authority": words}
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
                            "abort": st.fixed_dictionaries(
                                {
                                    "httpStatus": st.integers(200, 599),
                                    "percentage": st.floats(0, 100).map(lambda v: {"value": v}),
                                }
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
    for doc in docs:
        doc["apiVersion"] = "networking.istio.io/v1"
    return GATEWAY + "".join("---\n" + yaml.safe_dump(d, sort_keys=False) for d in docs)
