"""DestinationRule: subsets of a service's endpoints, and how traffic to them behaves."""

from __future__ import annotations

import os

from ..fields import Shape, deprecated, each, not_yet, obj, restricted, shape, supported
from ..model import ObjectMeta
from ..model_traffic import (
    ClientTLS,
    ConnectionPool,
    ConsistentHash,
    DestinationRule,
    OutlierDetection,
    PemFile,
    Subset,
    TrafficPolicy,
    qualify_host,
)
from ..names import (
    dns1123_label_problem,
    dns1123_subdomain_problem,
    hostname_problem,
    san_problem,
)
from ..schema import DocChecker, Located
from .common import freeze, parse_labels, parse_port_number
from .traffic_common import boolean, duration_ms, export_to_problem, host_problem

TLS_MODES = frozenset({"DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"})
LB_SIMPLE = frozenset({"ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "LEAST_CONN"})
LB_SIMPLE_UNSUPPORTED = frozenset({"PASSTHROUGH", "UNSPECIFIED"})
MAX_INT32 = 2**31 - 1

COOKIE: Shape = shape(name=supported(), path=supported(), ttl=supported())
HASH: Shape = shape(
    httpHeaderName=supported(),
    httpCookie=obj(COOKIE),
    useSourceIp=supported(),
    minimumRingSize=deprecated("use ringHash.minimumRingSize in Istio; still the ring size here"),
    httpQueryParameterName=not_yet(),
    ringHash=not_yet(),
    maglev=not_yet(),
    localityLbSetting=not_yet(),
)
LOAD_BALANCER: Shape = shape(
    simple=supported("ROUND_ROBIN, LEAST_REQUEST (LEAST_CONN), RANDOM; PASSTHROUGH not yet"),
    consistentHash=obj(HASH, "ring hash; the routes hash on the key"),
    localityLbSetting=not_yet(),
    warmup=not_yet(),
    warmupDurationSecs=not_yet(),
)
POOL_TCP: Shape = shape(
    maxConnections=supported(),
    connectTimeout=supported(),
    tcpKeepalive=not_yet(),
    maxConnectionDuration=not_yet(),
    idleTimeout=not_yet(),
)
POOL_HTTP: Shape = shape(
    http1MaxPendingRequests=supported(),
    http2MaxRequests=supported(),
    maxRequestsPerConnection=supported("HTTP ports"),
    maxRetries=supported(),
    idleTimeout=supported("HTTP ports"),
    h2UpgradePolicy=not_yet(),
    useClientProtocol=not_yet(),
    maxConcurrentStreams=not_yet(),
)
POOL: Shape = shape(tcp=obj(POOL_TCP), http=obj(POOL_HTTP))
OUTLIER: Shape = shape(
    consecutive5xxErrors=supported("0 turns the check off"),
    consecutiveErrors=deprecated("use consecutive5xxErrors"),
    consecutiveGatewayErrors=supported(),
    interval=supported(),
    baseEjectionTime=supported(),
    maxEjectionPercent=supported(),
    minHealthPercent=supported("Envoy's healthy_panic_threshold"),
    splitExternalLocalOriginErrors=not_yet(),
    consecutiveLocalOriginFailures=not_yet(),
)
TLS: Shape = shape(
    mode=supported(
        "DISABLE: plaintext; ISTIO_MUTUAL: the mesh's mTLS (SDS); SIMPLE / MUTUAL: TLS "
        "origination to the upstream, verified against caCertificates (else the system roots)"
    ),
    clientCertificate=supported("a PEM file, read at load time and served by SDS (MUTUAL)"),
    privateKey=supported("a PEM file, read at load time and served by SDS (MUTUAL)"),
    caCertificates=supported("a PEM file: the roots that verify the upstream"),
    credentialName=supported(
        "a kubernetes.io/tls Secret in the rule's namespace: tls.crt/tls.key (MUTUAL), ca.crt"
    ),
    subjectAltNames=supported("the upstream certificate must carry one of them"),
    sni=supported("default: the request's host (HTTP), the rule's host (TCP)"),
    insecureSkipVerify=supported("the upstream certificate is not verified"),
    caCrl=not_yet(),
)
PORT_POLICY: Shape = shape(
    port=obj(shape(number=supported())),
    loadBalancer=obj(LOAD_BALANCER),
    connectionPool=obj(POOL),
    outlierDetection=obj(OUTLIER),
    tls=obj(TLS),
)
POLICY: Shape = shape(
    loadBalancer=obj(LOAD_BALANCER),
    connectionPool=obj(POOL),
    outlierDetection=obj(OUTLIER),
    tls=obj(TLS),
    portLevelSettings=each(PORT_POLICY, "replaces each policy field it sets, for its port"),
    tunnel=not_yet(),
    proxyProtocol=not_yet(),
    retryBudget=not_yet(),
)
SUBSET: Shape = shape(name=supported(), labels=supported(), trafficPolicy=obj(POLICY))
SPEC: Shape = shape(
    host=supported(),
    trafficPolicy=obj(POLICY),
    subsets=each(SUBSET),
    exportTo=restricted("'*' (the default: every namespace) only; other values not yet"),
    workloadSelector=not_yet(),
)


def parse_destination_rule(
    ck: DocChecker, meta: ObjectMeta, spec: Located | None
) -> DestinationRule | None:
    if spec is None:
        return None
    before = len(ck.errors)
    fields = ck.fields(spec, SPEC)
    if fields is None:
        return None
    host = ""
    if (at := ck.required(fields, "host", spec)) is not None:
        host = qualify_host(ck.string(at, host_problem) or "", meta.namespace)
    namespace = meta.namespace
    policy = _policy(ck, fields["trafficPolicy"], namespace) if "trafficPolicy" in fields else None
    subsets: list[Subset] = []
    seen: set[str] = set()
    for item in ck.items(fields["subsets"]) or () if "subsets" in fields else ():
        subset = _subset(ck, item, namespace)
        if subset is None:
            continue
        if subset.name in seen:
            ck.error(item, f"duplicate subset name {subset.name!r}", path=f"{item.path}.name")
        seen.add(subset.name)
        subsets.append(subset)
    if (at := fields.get("exportTo")) is not None:
        for value, item in ck.strings(at, export_to_problem) or ():
            if value != "*":
                ck.not_yet(item, f"exportTo {value!r} (a rule applies in every namespace)")
    if len(ck.errors) > before:
        return None
    return DestinationRule(meta, host, policy, tuple(subsets))


def _subset(ck: DocChecker, at: Located, namespace: str) -> Subset | None:
    fields = ck.fields(at, SUBSET)
    if fields is None:
        return None
    name_at = ck.required(fields, "name", at)
    name = ck.string(name_at, dns1123_label_problem) if name_at is not None else None
    labels = freeze(parse_labels(ck, fields.get("labels")))
    policy = _policy(ck, fields["trafficPolicy"], namespace) if "trafficPolicy" in fields else None
    if policy is not None and policy.port_level:
        ck.warn(fields["trafficPolicy"], "portLevelSettings of a subset are applied per port")
    if name is None:
        return None
    return Subset(name, labels, policy)


def _policy(
    ck: DocChecker, at: Located, namespace: str, *, for_port: bool = False
) -> TrafficPolicy | None:
    fields = ck.fields(at, PORT_POLICY if for_port else POLICY)
    if fields is None:
        return None
    simple, consistent = None, None
    if (lb := fields.get("loadBalancer")) is not None:
        simple, consistent = _load_balancer(ck, lb)
    pool = _pool(ck, fields["connectionPool"]) if "connectionPool" in fields else None
    outlier = _outlier(ck, fields["outlierDetection"]) if "outlierDetection" in fields else None
    tls = _tls(ck, fields["tls"], namespace) if "tls" in fields else None
    port_level: list[tuple[int, TrafficPolicy]] = []
    for item in (
        ck.items(fields["portLevelSettings"]) or () if "portLevelSettings" in fields else ()
    ):
        entry = _policy(ck, item, namespace, for_port=True)
        item_fields = item.value if isinstance(item.value, dict) else {}
        port_at = item_fields.get("port") if isinstance(item_fields, dict) else None
        number = None
        if port_at is not None:
            port_shape = PORT_POLICY["port"].fields or {}
            port = ck.fields(Located(port_at, f"{item.path}.port", item.line), port_shape)
            if port is not None:
                number = parse_port_number(ck, port.get("number"))
        else:
            ck.error(item, "required field missing", path=f"{item.path}.port")
        if number is not None and any(n == number for n, _ in port_level):
            ck.error(item, f"port {number} has two portLevelSettings", path=f"{item.path}.port")
        elif number is not None and entry is not None:
            port_level.append((number, entry))
    return TrafficPolicy(simple, consistent, pool, outlier, tls, tuple(port_level))


# Fields that only mean something when pocketmesh originates TLS (SIMPLE / MUTUAL).
_ORIGINATION_ONLY = ("clientCertificate", "privateKey", "caCertificates", "credentialName")


def _tls(ck: DocChecker, at: Located, namespace: str) -> ClientTLS | None:
    """Istio's ClientTLSSettings, with its validation, and stricter where Istio would
    quietly send plaintext or skip a certificate the rule names."""
    fields = ck.fields(at, TLS)
    if fields is None:
        return None
    before = len(ck.errors)
    mode = "DISABLE"  # Istio's default
    if (mode_at := fields.get("mode")) is not None:
        mode = ck.enum(mode_at, TLS_MODES) or mode

    def pem_file(key: str) -> PemFile | None:
        if key not in fields:
            return None
        path = ck.string(fields[key], _path_problem)
        return None if path is None else PemFile(_absolute(path, ck.file))

    client_cert, private_key = pem_file("clientCertificate"), pem_file("privateKey")
    ca = pem_file("caCertificates")
    credential = (
        ck.string(fields["credentialName"], dns1123_subdomain_problem) or ""
        if ("credentialName" in fields)
        else ""
    )
    sans: tuple[str, ...] = ()
    if (sans_at := fields.get("subjectAltNames")) is not None:
        sans = tuple(v for v, _ in ck.strings(sans_at, san_problem) or ())
    sni = ck.string(fields["sni"], hostname_problem) or "" if "sni" in fields else ""
    insecure = False
    if (skip_at := fields.get("insecureSkipVerify")) is not None:
        insecure = bool(boolean(ck, skip_at))

    if mode in ("DISABLE", "ISTIO_MUTUAL"):
        for key in _ORIGINATION_ONLY:
            if key in fields:
                ck.error(fields[key], f"is used only with mode SIMPLE or MUTUAL, not {mode}")
    if mode == "DISABLE":
        for key in ("sni", "subjectAltNames", "insecureSkipVerify"):
            if key in fields:
                ck.error(fields[key], "has no effect with mode DISABLE (plaintext)")
    if mode == "ISTIO_MUTUAL" and insecure:
        ck.warn(fields["insecureSkipVerify"], "has no effect with ISTIO_MUTUAL (as in Istio)")
    if mode == "SIMPLE":
        for key in ("clientCertificate", "privateKey"):
            if key in fields:
                ck.error(fields[key], "is used only with mode MUTUAL")
    if mode in ("SIMPLE", "MUTUAL"):
        if credential and (client_cert or private_key or ca):
            ck.error(
                at,
                "credentialName cannot be combined with clientCertificate, privateKey "
                "or caCertificates",
                path=f"{at.path}.credentialName",
            )
        if mode == "MUTUAL" and not credential:
            for key, given in (("clientCertificate", client_cert), ("privateKey", private_key)):
                if given is None and key not in fields:
                    ck.error(at, "required for mode MUTUAL", path=f"{at.path}.{key}")
        if insecure:
            clash = ["caCertificates", "subjectAltNames"]
            if mode == "SIMPLE":
                clash.append("credentialName")
            for key in clash:
                if key in fields:
                    ck.error(fields[key], "cannot be set with insecureSkipVerify: true")
    if len(ck.errors) > before:
        return None
    return ClientTLS(
        mode=mode,
        client_certificate=client_cert,
        private_key=private_key,
        ca_certificates=ca,
        credential_name=credential,
        namespace=namespace,
        subject_alt_names=sans,
        sni=sni,
        insecure_skip_verify=insecure,
        path=at.path,
    )


def _path_problem(value: str) -> str | None:
    return "must be a file path" if not value.strip() or "\0" in value else None


def _absolute(path: str, document: str) -> str:
    """Relative paths are relative to the directory of the document naming them."""
    if os.path.isabs(path):
        return os.path.normpath(path)
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(document)), path))


def _load_balancer(ck: DocChecker, at: Located) -> tuple[str | None, ConsistentHash | None]:
    fields = ck.fields(at, LOAD_BALANCER)
    if fields is None:
        return None, None
    if len(fields) > 1:
        ck.error(at, "must set only one of simple, consistentHash")
    simple = None
    if (s := fields.get("simple")) is not None:
        if isinstance(s.value, str) and s.value in LB_SIMPLE_UNSUPPORTED:
            ck.not_yet(s, repr(s.value))
        else:
            simple = ck.enum(s, LB_SIMPLE)
            simple = "LEAST_REQUEST" if simple == "LEAST_CONN" else simple
    consistent = None
    if (c := fields.get("consistentHash")) is not None:
        consistent = _consistent_hash(ck, c)
    return simple, consistent


def _consistent_hash(ck: DocChecker, at: Located) -> ConsistentHash | None:
    fields = ck.fields(at, HASH)
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
    cookie = ck.fields(fields["httpCookie"], COOKIE)
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
    fields = ck.fields(at, POOL)
    if fields is None:
        return None
    values: dict[str, int | None] = {}
    if (tcp_at := fields.get("tcp")) is not None:
        tcp = ck.fields(tcp_at, POOL_TCP) or {}
        if "maxConnections" in tcp:
            values["max_connections"] = ck.integer(tcp["maxConnections"], 1, MAX_INT32)
        if "connectTimeout" in tcp:
            values["connect_timeout_ms"] = duration_ms(ck, tcp["connectTimeout"])
    if (http_at := fields.get("http")) is not None:
        http = ck.fields(http_at, POOL_HTTP) or {}
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
    fields = ck.fields(at, OUTLIER)
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
