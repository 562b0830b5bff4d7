"""DestinationRule: subsets of a service's endpoints, and how traffic to them behaves."""

from __future__ import annotations

from ..model import ObjectMeta
from ..model_traffic import (
    ConnectionPool,
    ConsistentHash,
    DestinationRule,
    OutlierDetection,
    Subset,
    TrafficPolicy,
    qualify_host,
)
from ..names import dns1123_label_problem
from ..schema import DocChecker, Located
from .common import freeze, parse_labels, parse_port_number
from .traffic_common import boolean, duration_ms, export_to_problem, host_problem

DR_FIELDS = frozenset({"host", "trafficPolicy", "subsets", "exportTo"})
DR_UNSUPPORTED = frozenset({"workloadSelector"})
POLICY_FIELDS = frozenset(
    {"loadBalancer", "connectionPool", "outlierDetection", "tls", "portLevelSettings"}
)
POLICY_UNSUPPORTED = frozenset({"tunnel", "proxyProtocol", "retryBudget"})
PORT_POLICY_FIELDS = frozenset(
    {"port", "loadBalancer", "connectionPool", "outlierDetection", "tls"}
)
SUBSET_FIELDS = frozenset({"name", "labels", "trafficPolicy"})
LB_FIELDS = frozenset({"simple", "consistentHash"})
LB_UNSUPPORTED = frozenset({"localityLbSetting", "warmup", "warmupDurationSecs"})
LB_SIMPLE = frozenset({"ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "LEAST_CONN"})
LB_SIMPLE_UNSUPPORTED = frozenset({"PASSTHROUGH", "UNSPECIFIED"})
HASH_FIELDS = frozenset({"httpHeaderName", "httpCookie", "useSourceIp", "minimumRingSize"})
HASH_UNSUPPORTED = frozenset({"httpQueryParameterName", "ringHash", "maglev", "localityLbSetting"})
COOKIE_FIELDS = frozenset({"name", "path", "ttl"})
POOL_FIELDS = frozenset({"tcp", "http"})
POOL_TCP_FIELDS = frozenset({"maxConnections", "connectTimeout"})
POOL_TCP_UNSUPPORTED = frozenset({"tcpKeepalive", "maxConnectionDuration", "idleTimeout"})
POOL_HTTP_FIELDS = frozenset(
    {
        "http1MaxPendingRequests",
        "http2MaxRequests",
        "maxRequestsPerConnection",
        "maxRetries",
        "idleTimeout",
    }
)
POOL_HTTP_UNSUPPORTED = frozenset({"h2UpgradePolicy", "useClientProtocol", "maxConcurrentStreams"})
OUTLIER_FIELDS = frozenset(
    {
        "consecutive5xxErrors",
        "consecutiveErrors",
        "consecutiveGatewayErrors",
        "interval",
        "baseEjectionTime",
        "maxEjectionPercent",
        "minHealthPercent",
    }
)
OUTLIER_UNSUPPORTED = frozenset(
    {"splitExternalLocalOriginErrors", "consecutiveLocalOriginFailures"}
)
TLS_FIELDS = frozenset(
    {
        "mode",
        "clientCertificate",
        "privateKey",
        "caCertificates",
        "credentialName",
        "subjectAltNames",
        "sni",
        "insecureSkipVerify",
    }
)
TLS_MODES = frozenset({"DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"})
MAX_INT32 = 2**31 - 1


def parse_destination_rule(
    ck: DocChecker, meta: ObjectMeta, spec: Located | None
) -> DestinationRule | None:
    if spec is None:
        return None
    before = len(ck.errors)
    fields = ck.fields(spec, DR_FIELDS, unsupported=DR_UNSUPPORTED)
    if fields is None:
        return None
    host = ""
    if (at := ck.required(fields, "host", spec)) is not None:
        host = qualify_host(ck.string(at, host_problem) or "", meta.namespace)
    policy = _policy(ck, fields["trafficPolicy"]) if "trafficPolicy" in fields else None
    subsets: list[Subset] = []
    seen: set[str] = set()
    for item in ck.items(fields["subsets"]) or () if "subsets" in fields else ():
        subset = _subset(ck, item)
        if subset is None:
            continue
        if subset.name in seen:
            ck.error(item, f"duplicate subset name {subset.name!r}", path=f"{item.path}.name")
        seen.add(subset.name)
        subsets.append(subset)
    export_to: tuple[str, ...] = ()
    if (at := fields.get("exportTo")) is not None:
        export_to = tuple(v for v, _ in ck.strings(at, export_to_problem) or ())
    if len(ck.errors) > before:
        return None
    return DestinationRule(meta, host, policy, tuple(subsets), export_to)


def _subset(ck: DocChecker, at: Located) -> Subset | None:
    fields = ck.fields(at, SUBSET_FIELDS)
    if fields is None:
        return None
    name_at = ck.required(fields, "name", at)
    name = ck.string(name_at, dns1123_label_problem) if name_at is not None else None
    labels = freeze(parse_labels(ck, fields.get("labels")))
    policy = _policy(ck, fields["trafficPolicy"]) if "trafficPolicy" in fields else None
    if policy is not None and policy.port_level:
        ck.warn(fields["trafficPolicy"], "portLevelSettings of a subset are applied per port")
    if name is None:
        return None
    return Subset(name, labels, policy)


def _policy(ck: DocChecker, at: Located, *, for_port: bool = False) -> TrafficPolicy | None:
    allowed = PORT_POLICY_FIELDS if for_port else POLICY_FIELDS
    fields = ck.fields(at, allowed, unsupported=POLICY_UNSUPPORTED)
    if fields is None:
        return None
    simple, consistent = None, None
    if (lb := fields.get("loadBalancer")) is not None:
        simple, consistent = _load_balancer(ck, lb)
    pool = _pool(ck, fields["connectionPool"]) if "connectionPool" in fields else None
    outlier = _outlier(ck, fields["outlierDetection"]) if "outlierDetection" in fields else None
    tls_mode = None
    if (tls := fields.get("tls")) is not None:
        tls_fields = ck.fields(tls, TLS_FIELDS)
        if tls_fields is not None and (mode := tls_fields.get("mode")) is not None:
            tls_mode = ck.enum(mode, TLS_MODES)
    port_level: list[tuple[int, TrafficPolicy]] = []
    for item in (
        ck.items(fields["portLevelSettings"]) or () if "portLevelSettings" in fields else ()
    ):
        entry = _policy(ck, item, for_port=True)
        item_fields = item.value if isinstance(item.value, dict) else {}
        port_at = item_fields.get("port") if isinstance(item_fields, dict) else None
        number = None
        if port_at is not None:
            port = ck.fields(Located(port_at, f"{item.path}.port", item.line), {"number"})
            if port is not None:
                number = parse_port_number(ck, port.get("number"))
        else:
            ck.error(item, "required field missing", path=f"{item.path}.port")
        if number is not None and any(n == number for n, _ in port_level):
            ck.error(item, f"port {number} has two portLevelSettings", path=f"{item.path}.port")
        elif number is not None and entry is not None:
            port_level.append((number, entry))
    return TrafficPolicy(simple, consistent, pool, outlier, tls_mode, tuple(port_level))


def _load_balancer(ck: DocChecker, at: Located) -> tuple[str | None, ConsistentHash | None]:
    fields = ck.fields(at, LB_FIELDS, unsupported=LB_UNSUPPORTED)
    if fields is None:
        return None, None
    if len(fields) > 1:
        ck.error(at, "must set only one of simple, consistentHash")
    simple = None
    if (s := fields.get("simple")) is not None:
        if isinstance(s.value, str) and s.value in LB_SIMPLE_UNSUPPORTED:
            ck.error(s, f"{s.value!r} is not supported by pocketmesh yet")
        else:
            simple = ck.enum(s, LB_SIMPLE)
            simple = "LEAST_REQUEST" if simple == "LEAST_CONN" else simple
    consistent = None
    if (c := fields.get("consistentHash")) is not None:
        consistent = _consistent_hash(ck, c)
    return simple, consistent


def _consistent_hash(ck: DocChecker, at: Located) -> ConsistentHash | None:
    fields = ck.fields(at, HASH_FIELDS, unsupported=HASH_UNSUPPORTED)
    if fields is None:
        return None
    keys = [k for k in ("httpHeaderName", "httpCookie", "useSourceIp") if k in fields]
    if len(keys) != 1:
        ck.error(at, "must set exactly one of httpHeaderName, httpCookie, useSourceIp")
        return None
    ring = ck.integer(fields["minimumRingSize"], 1, 8_388_608) if "minimumRingSize" in fields else 0
    if "httpHeaderName" in fields:
        header = ck.string(fields["httpHeaderName"])
        return (
            ConsistentHash(http_header_name=header.lower(), minimum_ring_size=ring or 0)
            if header
            else None
        )
    if "useSourceIp" in fields:
        on = boolean(ck, fields["useSourceIp"])
        if on is False:
            ck.error(fields["useSourceIp"], "must be true when it is the hash key")
        return ConsistentHash(use_source_ip=True, minimum_ring_size=ring or 0) if on else None
    cookie = ck.fields(fields["httpCookie"], COOKIE_FIELDS)
    if cookie is None:
        return None
    name_at = ck.required(cookie, "name", fields["httpCookie"])
    name = ck.string(name_at) if name_at is not None else None
    path = ck.string(cookie["path"]) or "" if "path" in cookie else ""
    ttl = duration_ms(ck, cookie["ttl"], minimum_ms=0) if "ttl" in cookie else 0
    if name is None:
        return None
    return ConsistentHash(
        http_cookie_name=name,
        http_cookie_path=path,
        http_cookie_ttl_ms=ttl or 0,
        minimum_ring_size=ring or 0,
    )


def _pool(ck: DocChecker, at: Located) -> ConnectionPool | None:
    fields = ck.fields(at, POOL_FIELDS)
    if fields is None:
        return None
    values: dict[str, int | None] = {}
    if (tcp_at := fields.get("tcp")) is not None:
        tcp = ck.fields(tcp_at, POOL_TCP_FIELDS, unsupported=POOL_TCP_UNSUPPORTED) or {}
        if "maxConnections" in tcp:
            values["max_connections"] = ck.integer(tcp["maxConnections"], 1, MAX_INT32)
        if "connectTimeout" in tcp:
            values["connect_timeout_ms"] = duration_ms(ck, tcp["connectTimeout"])
    if (http_at := fields.get("http")) is not None:
        http = ck.fields(http_at, POOL_HTTP_FIELDS, unsupported=POOL_HTTP_UNSUPPORTED) or {}
        for key, attr in (
            ("http1MaxPendingRequests", "http1_max_pending_requests"),
            ("http2MaxRequests", "http2_max_requests"),
            ("maxRequestsPerConnection", "max_requests_per_connection"),
            ("maxRetries", "max_retries"),
        ):
            if key in http:
                values[attr] = ck.integer(http[key], 1, MAX_INT32)
        if "idleTimeout" in http:
            values["idle_timeout_ms"] = duration_ms(ck, http["idleTimeout"])
    return ConnectionPool(**values)


def _outlier(ck: DocChecker, at: Located) -> OutlierDetection | None:
    fields = ck.fields(at, OUTLIER_FIELDS, unsupported=OUTLIER_UNSUPPORTED)
    if fields is None:
        return None
    values: dict[str, int | None] = {}
    five = fields.get("consecutive5xxErrors") or fields.get("consecutiveErrors")
    if five is not None:
        values["consecutive_5xx_errors"] = ck.integer(five, 0, MAX_INT32)
    if "consecutiveGatewayErrors" in fields:
        values["consecutive_gateway_errors"] = ck.integer(
            fields["consecutiveGatewayErrors"], 0, MAX_INT32
        )
    if "interval" in fields:
        values["interval_ms"] = duration_ms(ck, fields["interval"])
    if "baseEjectionTime" in fields:
        values["base_ejection_time_ms"] = duration_ms(ck, fields["baseEjectionTime"])
    if "maxEjectionPercent" in fields:
        values["max_ejection_percent"] = ck.integer(fields["maxEjectionPercent"], 0, 100)
    if "minHealthPercent" in fields:
        values["min_health_percent"] = ck.integer(fields["minHealthPercent"], 0, 100)
    return OutlierDetection(**values)
