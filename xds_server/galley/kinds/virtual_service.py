"""VirtualService: how requests to a host are routed (Istio's HTTP, TLS and TCP routes).

Checks within one document: field names and types, durations, weights summing
to 100, one of route/redirect per HTTP route, rules that can never match, SNI
names within the hosts. A VirtualService without hosts is a delegate: only a root's
`http[].delegate` uses it, so it has no gateways and no tls or tcp routes (Istio).
Checks that need other documents (hosts, subsets, gateways, delegates) are in
`traffic_checks`.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import replace

from ..fields import Shape, deprecated, each, keyed, not_yet, obj, shape, supported
from ..model import ObjectMeta
from ..model_security import routing_claims
from ..model_traffic import (
    MESH_GATEWAY,
    CorsPolicy,
    Delegate,
    Destination,
    DirectResponse,
    Fault,
    HeaderOps,
    HTTPMatch,
    HTTPRoute,
    KeyMatch,
    Redirect,
    Retries,
    Rewrite,
    RouteDestination,
    StringMatch,
    TCPMatch,
    TCPRoute,
    TLSMatch,
    TLSRoute,
    VirtualService,
    gateway_key,
    qualify_host,
)
from ..names import dns1123_label_problem, dns1123_subdomain_problem, is_ip
from ..schema import DocChecker, Located
from .common import export_to_problem, freeze, parse_labels, parse_port_number
from .traffic_common import (
    PERCENTAGE,
    STRING_MATCH,
    boolean,
    duration_ms,
    header_name_problem,
    host_problem,
    percentage,
    regex_problem,
    string_match,
)

PERCENT = obj(PERCENTAGE)
MATCH: Shape = shape(
    name=supported("appended to the Envoy route name"),
    uri=obj(STRING_MATCH),
    method=obj(STRING_MATCH),
    authority=obj(STRING_MATCH),
    scheme=obj(STRING_MATCH),
    headers=keyed(
        STRING_MATCH,
        "header name -> match; {} means present; @request.auth.claims.NAME (or [NAME][SUB]): "
        "a claim of the JWT a gateway verified (RequestAuthentication)",
    ),
    queryParams=keyed(STRING_MATCH, "parameter name -> match; {} means present"),
    withoutHeaders=keyed(STRING_MATCH, "header name -> match that must not hold"),
    port=supported(),
    sourceLabels=supported("proxies whose workload labels match"),
    sourceNamespace=supported(),
    gateways=supported("names from spec.gateways"),
    ignoreUriCase=supported(),
    statPrefix=supported("the Envoy route's stat_prefix: its stats under vhost.*.route.<prefix>"),
)
DESTINATION: Shape = shape(
    host=supported(), subset=supported(), port=obj(shape(number=supported()))
)
REGEX_REWRITE: Shape = shape(
    match=supported("RE2, as Envoy runs it"), rewrite=supported("\\1 for a group")
)
HEADER_OPS: Shape = shape(set=supported("overwrites"), add=supported("appends"), remove=supported())
HEADERS: Shape = shape(request=obj(HEADER_OPS), response=obj(HEADER_OPS))
ROUTE_DESTINATION: Shape = shape(
    destination=obj(DESTINATION),
    weight=supported(),
    headers=obj(HEADERS, "only when this destination is picked"),
)
TCP_ROUTE_DESTINATION: Shape = shape(destination=obj(DESTINATION), weight=supported())
REDIRECT: Shape = shape(
    uri=supported(),
    authority=supported(),
    redirectCode=supported("301, 302, 303, 307, 308"),
    scheme=supported(),
    port=supported(),
    derivePort=supported("FROM_PROTOCOL_DEFAULT, or FROM_REQUEST_PORT: the listener's port"),
    prefixRewrite=supported("replaces the matched uri prefix; every uri match is a prefix"),
)
DIRECT_BODY: Shape = shape(string=supported(), bytes=supported("base64 of UTF-8 text"))
DIRECT: Shape = shape(status=supported(), body=obj(DIRECT_BODY, "up to 4 KiB (Envoy's limit)"))
REWRITE: Shape = shape(
    uri=supported("replaces the matched prefix"),
    authority=supported(),
    uriRegexRewrite=obj(
        REGEX_REWRITE, "the path's matches of `match` replaced by `rewrite`; not with uri"
    ),
)
RETRIES: Shape = shape(
    attempts=supported(),
    perTryTimeout=supported(),
    retryOn=supported("Envoy's retry_on conditions and status codes"),
    retryRemoteLocalities=supported("Envoy's previous_priorities retry priority (as Istio)"),
    retryIgnorePreviousHosts=supported(
        "retry on another host than the ones tried; default true unless the destination "
        "hashes (consistentHash), as Istio"
    ),
    backoff=supported("Envoy's retry back-off base interval (at least 1ms); up to 10 times it"),
)
DELAY: Shape = shape(
    fixedDelay=supported(),
    percentage=PERCENT,
    percent=deprecated("use percentage: {value: N}"),
    exponentialDelay=not_yet(),
)
ABORT: Shape = shape(
    httpStatus=supported(),
    percentage=PERCENT,
    grpcStatus=supported("a gRPC status name (UNAVAILABLE, ...); not with httpStatus"),
    http2Error=not_yet(),
)
FAULT: Shape = shape(delay=obj(DELAY), abort=obj(ABORT))
CORS: Shape = shape(
    allowOrigins=each(STRING_MATCH),
    allowMethods=supported(),
    allowHeaders=supported(),
    exposeHeaders=supported(),
    maxAge=supported(),
    allowCredentials=supported(),
    allowOrigin=not_yet("deprecated in Istio: use allowOrigins"),
    unmatchedPreflights=supported("FORWARD (the default) or IGNORE"),
)
MIRROR: Shape = shape(destination=obj(DESTINATION), percentage=PERCENT)
HTTP: Shape = shape(
    name=supported("the Envoy route name"),
    match=each(MATCH),
    route=each(ROUTE_DESTINATION),
    redirect=obj(REDIRECT),
    directResponse=obj(DIRECT),
    rewrite=obj(REWRITE),
    timeout=supported(),
    retries=obj(RETRIES, "no retries unless configured (Istio adds 2 by default)"),
    fault=obj(FAULT),
    mirror=obj(DESTINATION),
    mirrorPercentage=PERCENT,
    mirrorPercent=deprecated("use mirrorPercentage: {value: N}"),
    mirrors=each(MIRROR),
    headers=obj(HEADERS),
    corsPolicy=obj(CORS),
    delegate=obj(
        shape(name=supported(), namespace=supported("default: the root's namespace")),
        "the routes of a VirtualService without hosts, narrowed by this route's matches",
    ),
)
TCP_MATCH: Shape = shape(
    port=supported(),
    sourceLabels=supported(),
    gateways=supported(),
    sourceNamespace=supported(),
    destinationSubnets=not_yet(),
    sourceSubnet=not_yet(),
)
TCP: Shape = shape(match=each(TCP_MATCH), route=each(TCP_ROUTE_DESTINATION))
TLS_MATCH: Shape = shape(
    sniHosts=supported("the SNI names, within the VirtualService's hosts"),
    port=supported(),
    sourceLabels=supported("sidecars whose labels match (gateways ignore it, as Istio)"),
    gateways=supported(),
    sourceNamespace=supported("sidecars of that namespace (gateways ignore it, as Istio)"),
    destinationSubnets=not_yet(
        "no iptables: a sidecar sees its own address as the destination, never the original one"
    ),
)
TLS: Shape = shape(match=each(TLS_MATCH), route=each(TCP_ROUTE_DESTINATION))
SPEC: Shape = shape(
    hosts=supported("short names resolve in the VirtualService's namespace; none: a delegate"),
    gateways=supported("mesh, name, ns/name"),
    http=each(HTTP),
    tcp=each(TCP, "TCP ports of sidecars; TCP and TLS-ended servers of gateways"),
    tls=each(TLS, "passthrough servers of gateways; TLS and HTTPS ports of sidecars"),
    exportTo=supported(),
)
# gRPC status names, in code order (Istio's grpcStatus takes the name).
GRPC_STATUS = (
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
    "UNAUTHENTICATED",
)  # fmt: skip
UNMATCHED_PREFLIGHTS = frozenset({"UNSPECIFIED", "FORWARD", "IGNORE"})
MAX_DIRECT_BODY = 4096  # Envoy's default max_direct_response_body_size_bytes
REDIRECT_SCHEMES = frozenset({"http", "https"})
REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
DERIVE_PORTS = frozenset({"FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT"})
# Envoy's retry_on vocabulary (Istio passes it through), plus status codes.
RETRY_ON = frozenset(
    {
        "5xx",
        "gateway-error",
        "reset",
        "reset-before-request",
        "connect-failure",
        "envoy-ratelimited",
        "retriable-4xx",
        "refused-stream",
        "retriable-status-codes",
        "retriable-headers",
        "http3-post-connect-failure",
        "cancelled",
        "deadline-exceeded",
        "internal",
        "resource-exhausted",
        "unavailable",
    }
)


def parse_virtual_service(
    ck: DocChecker, meta: ObjectMeta, spec: Located | None
) -> VirtualService | None:
    if spec is None:
        return None
    before = len(ck.errors)
    fields = ck.fields(spec, SPEC)
    if fields is None:
        return None
    namespace = meta.namespace
    written: list[str] = []  # the hosts as written, for the SNI names to be within
    if (at := fields.get("hosts")) is not None:
        written = [h for h, _ in ck.strings(at, host_problem) or ()]
    hosts = [qualify_host(h, namespace) for h in written]
    delegate = not hosts and (at is None or at.value == [] or len(ck.errors) == before)
    if delegate:
        for key in ("gateways", "tls", "tcp"):
            if key in fields:
                ck.error(
                    fields[key],
                    f"a VirtualService without hosts is a delegate, used only through a root's "
                    f"http[].delegate: it takes no {key}",
                )
    gateways: tuple[str, ...] = (MESH_GATEWAY,)
    if (at := fields.get("gateways")) is not None:
        # Istio: an empty list means the default, the sidecars (`mesh`).
        gateways = tuple(_gateway_names(ck, at, namespace)) or (MESH_GATEWAY,)
    http: list[HTTPRoute] = []
    if (at := fields.get("http")) is not None:
        http = [
            r
            for item in ck.items(at) or ()
            if (r := _http_route(ck, item, namespace, in_delegate=delegate))
        ]
        if len(ck.errors) == before:  # a broken match is no catch-all: warn only on sound rules
            _unreachable(ck, at, http)
    tcp: list[TCPRoute] = []
    if (at := fields.get("tcp")) is not None:
        tcp = [t for item in ck.items(at) or () if (t := _tcp_route(ck, item, namespace))]
    tls: list[TLSRoute] = []
    if (at := fields.get("tls")) is not None:
        tls = [x for item in ck.items(at) or () if (x := _tls_route(ck, item, namespace, written))]
    if not any(k in fields for k in ("http", "tcp", "tls")):
        ck.error(spec, "must have at least one of http, tcp, tls")
    export_to: tuple[str, ...] = ()
    if (at := fields.get("exportTo")) is not None:
        export_to = tuple(v for v, _ in ck.strings(at, export_to_problem) or ())
    if len(ck.errors) > before:
        return None
    return VirtualService(
        meta, tuple(hosts), gateways, tuple(http), tuple(tcp), export_to, tuple(tls)
    )


def _gateway_names(ck: DocChecker, at: Located, namespace: str) -> list[str]:
    def problem(value: str) -> str | None:
        ns, slash, name = value.rpartition("/")
        if slash and (not ns or not name):
            return "must be 'mesh', 'name' or 'namespace/name'"
        return None

    return [gateway_key(v, namespace) for v, _ in ck.strings(at, problem) or ()]


# --- HTTP -------------------------------------------------------------------


def _http_route(
    ck: DocChecker, at: Located, namespace: str, *, in_delegate: bool = False
) -> HTTPRoute | None:
    fields = ck.fields(at, HTTP)
    if fields is None:
        return None
    delegate = None
    if (d := fields.get("delegate")) is not None:
        delegate = _delegate(ck, d, namespace)
        if in_delegate:
            ck.error(d, "a delegate's routes cannot delegate again (one level, as in Istio)")
    name = ck.string(fields["name"]) or "" if "name" in fields else ""
    matches: tuple[HTTPMatch, ...] = ()
    if (m := fields.get("match")) is not None:
        matches = tuple(x for item in ck.items(m) or () if (x := _http_match(ck, item)))
    route: tuple[RouteDestination, ...] = ()
    if (r := fields.get("route")) is not None:
        route = _destinations(ck, r, namespace)
    redirect = _redirect(ck, fields["redirect"], matches) if "redirect" in fields else None
    direct = _direct(ck, fields["directResponse"]) if "directResponse" in fields else None
    if sum(k in fields for k in ("route", "redirect", "directResponse", "delegate")) != 1:
        ck.error(at, "must set exactly one of route, redirect, directResponse, delegate")
    rewrite = None
    if (rw := fields.get("rewrite")) is not None:
        rewrite = _rewrite(ck, rw)
        if "route" not in fields:
            ck.error(rw, "can only be used with route")
    timeout = duration_ms(ck, fields["timeout"], minimum_ms=0) if "timeout" in fields else None
    retries = parse_retries(ck, fields["retries"]) if "retries" in fields else None
    fault = _fault(ck, fields["fault"]) if "fault" in fields else None
    mirror = None
    if (mi := fields.get("mirror")) is not None:
        mirror = parse_destination(ck, mi, namespace)
    mirror_percent = 100.0
    if (mp := fields.get("mirrorPercentage")) is not None:
        mirror_percent = percentage(ck, mp) or 0.0
    elif (mp := fields.get("mirrorPercent")) is not None:
        mirror_percent = float(ck.integer(mp, 0, 100) or 0)
    if mirror is None and ("mirrorPercentage" in fields or "mirrorPercent" in fields):
        ck.warn(at, "mirrorPercentage without mirror has no effect")
    mirrors: list[tuple[Destination, float]] = []
    if (ms := fields.get("mirrors")) is not None:
        if mirror is not None:
            ck.error(ms, "cannot be used with mirror")
        for item in ck.items(ms) or ():
            entry = ck.fields(item, MIRROR)
            if entry is None:
                continue
            dest_at = ck.required(entry, "destination", item)
            dest = parse_destination(ck, dest_at, namespace) if dest_at is not None else None
            share = percentage(ck, entry["percentage"]) if "percentage" in entry else 100.0
            if dest is not None:
                mirrors.append((dest, 100.0 if share is None else share))
    request_headers = response_headers = HeaderOps()
    if (h := fields.get("headers")) is not None:
        request_headers, response_headers = _headers(ck, h)
    cors = _cors(ck, fields["corsPolicy"]) if "corsPolicy" in fields else None
    return HTTPRoute(
        name=name,
        match=matches,
        route=route,
        redirect=redirect,
        direct_response=direct,
        rewrite=rewrite,
        timeout_ms=timeout,
        retries=retries,
        fault=fault,
        mirror=mirror,
        mirror_percent=mirror_percent,
        mirrors=tuple(mirrors),
        request_headers=request_headers,
        response_headers=response_headers,
        cors=cors,
        delegate=delegate,
    )


def _delegate(ck: DocChecker, at: Located, namespace: str) -> Delegate | None:
    fields = ck.fields(at, HTTP["delegate"].fields or {})
    if fields is None:
        return None
    name_at = ck.required(fields, "name", at)
    name = ck.string(name_at, dns1123_subdomain_problem) if name_at is not None else None
    delegate_ns = namespace
    if (ns_at := fields.get("namespace")) is not None:
        delegate_ns = ck.string(ns_at, dns1123_label_problem) or namespace
    return None if name is None else Delegate(name, delegate_ns)


def _http_match(ck: DocChecker, at: Located) -> HTTPMatch | None:
    fields = ck.fields(at, MATCH)
    if fields is None:
        return None

    def one(key: str) -> StringMatch | None:
        return string_match(ck, fields[key]) if key in fields else None

    source_labels: Mapping[str, str] | None = None
    if (sl := fields.get("sourceLabels")) is not None:
        source_labels = freeze(parse_labels(ck, sl))
    gateways: tuple[str, ...] = ()
    if (g := fields.get("gateways")) is not None:
        gateways = tuple(v for v, _ in ck.strings(g) or ())
    ignore_case = False
    if (ic := fields.get("ignoreUriCase")) is not None:
        ignore_case = bool(boolean(ck, ic))
    method = one("method")
    return HTTPMatch(
        name=ck.string(fields["name"]) or "" if "name" in fields else "",
        uri=one("uri"),
        method=method,
        authority=one("authority"),
        scheme=one("scheme"),
        headers=_key_matches(ck, fields.get("headers"), headers=True),
        query_params=_key_matches(ck, fields.get("queryParams"), headers=False),
        without_headers=_key_matches(ck, fields.get("withoutHeaders"), headers=True),
        port=parse_port_number(ck, fields.get("port")),
        source_labels=source_labels,
        source_namespace=_namespace(ck, fields.get("sourceNamespace")),
        gateways=gateways,
        ignore_uri_case=ignore_case,
        stat_prefix=ck.string(fields["statPrefix"]) or "" if "statPrefix" in fields else "",
    )


def _key_matches(ck: DocChecker, at: Located | None, *, headers: bool) -> tuple[KeyMatch, ...]:
    if at is None:
        return ()
    result = []
    for key, child in (ck.children(at) or {}).items():
        if not isinstance(key, str):
            ck.error(child, "key must be a string")
            continue
        claim = headers and routing_claims(key) is not None  # a verified JWT's claim
        if claim and child.value is None:
            ck.error(child, f"{key!r}: a claim match needs exact, prefix or regex")
            continue
        if headers and not claim and (problem := header_name_problem(key)) is not None:
            ck.error(child, f"{key!r} {problem}")
            continue
        if child.value is None:
            result.append(KeyMatch(key, None))
            continue
        result.append(KeyMatch(key, string_match(ck, child, allow_present=True)))
    return tuple(result)


def _destinations(
    ck: DocChecker, at: Located, namespace: str, *, http: bool = True
) -> tuple[RouteDestination, ...]:
    items = ck.items(at, non_empty=True) or []
    result: list[RouteDestination] = []
    weights: list[int | None] = []
    for item in items:
        fields = ck.fields(item, ROUTE_DESTINATION if http else TCP_ROUTE_DESTINATION)
        if fields is None:
            continue
        request = response = HeaderOps()
        if "headers" in fields:
            request, response = _headers(ck, fields["headers"])
        dest_at = ck.required(fields, "destination", item)
        dest = parse_destination(ck, dest_at, namespace) if dest_at is not None else None
        weight = ck.integer(fields["weight"], 0, 100) if "weight" in fields else None
        weights.append(weight)
        if dest is not None:
            given = weight if weight is not None else 0
            result.append(RouteDestination(dest, given, request, response))
    if len(items) == 1 and weights and weights[0] is None and result:
        return (replace(result[0], weight=100),)
    if len(items) > 1 or (weights and weights[0] is not None):
        total = sum(w or 0 for w in weights)
        if total != 100:
            ck.error(at, f"weights add up to {total}, not 100")
    return tuple(result)


def parse_destination(ck: DocChecker, at: Located, namespace: str) -> Destination | None:
    fields = ck.fields(at, DESTINATION)
    if fields is None:
        return None
    host_at = ck.required(fields, "host", at)
    host = ck.string(host_at, host_problem) if host_at is not None else None
    if host is not None and host.startswith("*"):
        ck.error(host_at or at, f"{host!r} must not be a wildcard")
        host = None
    subset = ck.string(fields["subset"]) or "" if "subset" in fields else ""
    port = None
    if (p := fields.get("port")) is not None:
        number = ck.fields(p, DESTINATION["port"].fields or {})
        if number is not None:
            port = parse_port_number(ck, ck.required(number, "number", p))
    if host is None:
        return None
    return Destination(qualify_host(host, namespace), subset, port)


def _redirect(ck: DocChecker, at: Located, matches: tuple[HTTPMatch, ...]) -> Redirect | None:
    fields = ck.fields(at, REDIRECT)
    if fields is None:
        return None
    uri = ck.string(fields["uri"]) or "" if "uri" in fields else ""
    authority = ck.string(fields["authority"]) or "" if "authority" in fields else ""
    code = 301
    if (c := fields.get("redirectCode")) is not None:
        value = ck.integer(c, 300, 399)
        if value is not None and value not in REDIRECT_CODES:
            ck.error(c, f"{value} must be one of {', '.join(map(str, sorted(REDIRECT_CODES)))}")
        code = value or 301
    scheme = ck.enum(fields["scheme"], REDIRECT_SCHEMES) or "" if "scheme" in fields else ""
    port = parse_port_number(ck, fields.get("port"))
    derive = ck.enum(fields["derivePort"], DERIVE_PORTS) or "" if "derivePort" in fields else ""
    if port and "derivePort" in fields:
        ck.error(fields["derivePort"], "cannot be set with port: one or the other")
    prefix = ck.string(fields["prefixRewrite"]) or "" if "prefixRewrite" in fields else ""
    if uri and prefix:
        ck.error(fields["prefixRewrite"], "cannot be set with uri: one or the other")
    for i, m in enumerate(matches):
        if prefix and m.uri is not None and m.uri.kind != "prefix":
            ck.error(
                fields["prefixRewrite"],
                f"needs every uri match to be a prefix, and match[{i}] is {m.uri.kind} (Istio)",
            )
    if not (uri or authority or scheme or port or prefix or derive):
        ck.error(at, "must set uri, prefixRewrite, authority, scheme or port")
    if uri and not uri.startswith("/"):
        ck.error(fields["uri"], f"{uri!r} must start with '/'")
    return Redirect(uri, authority, code, scheme, port, prefix, derive)


def _direct(ck: DocChecker, at: Located) -> DirectResponse | None:
    fields = ck.fields(at, DIRECT)
    if fields is None:
        return None
    status_at = ck.required(fields, "status", at)
    status = ck.integer(status_at, 200, 599) if status_at is not None else None
    body = ""
    if (body_at := fields.get("body")) is not None:
        kinds = ck.fields(body_at, DIRECT_BODY) or {}
        if len(kinds) != 1:
            ck.error(body_at, "must set exactly one of string, bytes")
        elif "string" in kinds:
            body = ck.string(kinds["string"]) or ""
        else:
            text = ck.string(kinds["bytes"]) or ""
            try:
                body = base64.b64decode(text, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                ck.error(kinds["bytes"], "must be base64 of UTF-8 text")
        if len(body.encode()) > MAX_DIRECT_BODY:
            ck.error(body_at, f"is longer than Envoy's {MAX_DIRECT_BODY} bytes")
    return None if status is None else DirectResponse(status, body)


def _rewrite(ck: DocChecker, at: Located) -> Rewrite | None:
    fields = ck.fields(at, REWRITE)
    if fields is None:
        return None
    uri = ck.string(fields["uri"]) or "" if "uri" in fields else ""
    authority = ck.string(fields["authority"]) or "" if "authority" in fields else ""
    regex = substitution = ""
    if (r := fields.get("uriRegexRewrite")) is not None:
        regex_fields = ck.fields(r, REGEX_REWRITE) or {}
        match_at = ck.required(regex_fields, "match", r)
        rewrite_at = ck.required(regex_fields, "rewrite", r)
        if match_at is not None:
            regex = ck.string(match_at) or ""
            if regex and (problem := regex_problem(regex)):
                ck.error(match_at, problem)
        if rewrite_at is not None:
            substitution = ck.string(rewrite_at) or ""
            # RE2 leaves the path as it was when the substitution names a missing group:
            # Envoy accepts it, and the rewrite would silently do nothing.
            groups = _regex_groups(regex)
            for ref in sorted({int(n) for n in re.findall(r"\\(\d)", substitution)}):
                if groups is not None and ref > groups:
                    ck.error(rewrite_at, f"uses \\{ref}, but match has {groups} group(s)")
        if "uri" in fields:
            ck.error(r, "only one of uri and uriRegexRewrite may be set (Istio)")
    if not uri and not authority and "uriRegexRewrite" not in fields:
        ck.error(at, "must set uri, uriRegexRewrite or authority")
    return Rewrite(uri, authority, regex, substitution)


def parse_retries(ck: DocChecker, at: Located) -> Retries | None:
    fields = ck.fields(at, RETRIES)
    if fields is None:
        return None
    attempts_at = ck.required(fields, "attempts", at)
    attempts = ck.integer(attempts_at, 0, 1000) if attempts_at is not None else None
    per_try = duration_ms(ck, fields["perTryTimeout"]) if "perTryTimeout" in fields else None
    retry_on = ""
    if (r := fields.get("retryOn")) is not None:
        retry_on = ck.string(r) or ""
        for policy in filter(None, (p.strip() for p in retry_on.split(","))):
            if policy not in RETRY_ON and not (policy.isdigit() and 100 <= int(policy) <= 599):
                ck.error(r, f"{policy!r} is not a retry policy Envoy knows")
    remote = False
    if (r := fields.get("retryRemoteLocalities")) is not None:
        remote = bool(boolean(ck, r))
    ignore_previous = None
    if (r := fields.get("retryIgnorePreviousHosts")) is not None:
        ignore_previous = boolean(ck, r)
    backoff = duration_ms(ck, fields["backoff"]) if "backoff" in fields else None
    if attempts is None:
        return None
    return Retries(attempts, per_try, retry_on, remote, ignore_previous, backoff)


def _fault(ck: DocChecker, at: Located) -> Fault | None:
    fields = ck.fields(at, FAULT)
    if fields is None:
        return None
    fault = Fault()
    if (d := fields.get("delay")) is not None:
        delay = ck.fields(d, DELAY)
        if delay is not None:
            fixed = ck.required(delay, "fixedDelay", d)
            ms = duration_ms(ck, fixed) if fixed is not None else None
            percent = _fault_percent(ck, delay)
            fault = Fault(ms, percent, fault.abort_status, fault.abort_percent)
    if (a := fields.get("abort")) is not None:
        abort = ck.fields(a, ABORT)
        if abort is not None:
            status, grpc = _abort_status(ck, abort, a)
            percent = _fault_percent(ck, abort)
            fault = Fault(fault.delay_ms, fault.delay_percent, status, percent, grpc)
    if not fields:
        ck.error(at, "must set delay or abort")
    return fault


def _regex_groups(regex: str) -> int | None:
    """How many groups `regex` captures; None if it does not compile (reported apart)."""
    try:
        return re.compile(regex).groups
    except re.error:
        return None


def _abort_status(
    ck: DocChecker, abort: dict[str, Located], at: Located
) -> tuple[int | None, bool]:
    """(status, is it gRPC's): httpStatus, or grpcStatus by name, exactly one."""
    if "grpcStatus" in abort:
        if "httpStatus" in abort:
            ck.error(at, "must set exactly one of httpStatus, grpcStatus")
        name_at = abort["grpcStatus"]
        name = ck.string(name_at)
        if name is None:
            return None, True
        if name not in GRPC_STATUS:
            ck.error(name_at, f"{name!r} is not a gRPC status ({', '.join(GRPC_STATUS)})")
            return None, True
        return GRPC_STATUS.index(name), True
    status_at = ck.required(abort, "httpStatus", at)
    return (ck.integer(status_at, 200, 599) if status_at is not None else None), False


def _fault_percent(ck: DocChecker, fields: dict[str, Located]) -> float:
    if (p := fields.get("percentage")) is not None:
        value = percentage(ck, p)
        return 100.0 if value is None else value
    if (p := fields.get("percent")) is not None:  # deprecated integer form
        return float(ck.integer(p, 0, 100) or 0)
    return 100.0


def _headers(ck: DocChecker, at: Located) -> tuple[HeaderOps, HeaderOps]:
    fields = ck.fields(at, HEADERS)
    if fields is None:
        return HeaderOps(), HeaderOps()
    request = _header_ops(ck, fields.get("request"))
    response = _header_ops(ck, fields.get("response"))
    return request, response


def _header_ops(ck: DocChecker, at: Located | None) -> HeaderOps:
    if at is None:
        return HeaderOps()
    fields = ck.fields(at, HEADER_OPS)
    if fields is None:
        return HeaderOps()

    def pairs(key: str) -> tuple[tuple[str, str], ...]:
        if key not in fields:
            return ()
        values = ck.string_map(fields[key], _editable_header_problem) or {}
        return tuple(values.items())

    remove: tuple[str, ...] = ()
    if (r := fields.get("remove")) is not None:
        remove = tuple(v for v, _ in ck.strings(r, _editable_header_problem) or ())
    return HeaderOps(pairs("set"), pairs("add"), remove)


def _namespace(ck: DocChecker, at: Located | None) -> str:
    return "" if at is None else ck.string(at, dns1123_label_problem) or ""


def _editable_header_problem(value: str) -> str | None:
    # Envoy refuses to set or remove Host (use rewrite.authority for that).
    if value == "host":
        return "cannot be changed here: use rewrite.authority"
    return header_name_problem(value)


def _cors(ck: DocChecker, at: Located) -> CorsPolicy | None:
    fields = ck.fields(at, CORS)
    if fields is None:
        return None
    origins: list[StringMatch] = []
    if (o := fields.get("allowOrigins")) is not None:
        origins = [m for item in ck.items(o) or () if (m := string_match(ck, item))]

    def strings(key: str) -> tuple[str, ...]:
        return tuple(v for v, _ in ck.strings(fields[key]) or ()) if key in fields else ()

    max_age = duration_ms(ck, fields["maxAge"], minimum_ms=0) if "maxAge" in fields else None
    credentials = None
    if (c := fields.get("allowCredentials")) is not None:
        credentials = boolean(ck, c)
    forward = True
    if (u := fields.get("unmatchedPreflights")) is not None:
        value = ck.string(u)
        if value is not None and value not in UNMATCHED_PREFLIGHTS:
            ck.error(u, f"must be one of {', '.join(sorted(UNMATCHED_PREFLIGHTS))}")
        forward = value != "IGNORE"
    return CorsPolicy(
        tuple(origins),
        strings("allowMethods"),
        strings("allowHeaders"),
        strings("exposeHeaders"),
        max_age,
        credentials,
        forward,
    )


def _unreachable(ck: DocChecker, at: Located, routes: list[HTTPRoute]) -> None:
    """Warn about HTTP routes after one that matches every request: they never match."""
    items = at.value if isinstance(at.value, list) else []
    for i, route in enumerate(routes[:-1]):
        if route.delegate is not None:
            continue  # requests the delegate's routes do not match go on to the next rule
        if not route.match or any(m.is_catch_all for m in route.match):
            if i + 1 < len(items):
                line = ck.lines.get(f"{at.path}[{i + 1}]", at.line)
                ck.warn(
                    Located(None, f"{at.path}[{i + 1}]", line),
                    f"never matches: {at.path}[{i}] already matches every request",
                )
            return


# --- TCP ----------------------------------------------------------------------


def _tcp_route(ck: DocChecker, at: Located, namespace: str) -> TCPRoute | None:
    fields = ck.fields(at, TCP)
    if fields is None:
        return None
    matches: list[TCPMatch] = []
    for item in ck.items(fields["match"]) or () if "match" in fields else ():
        m = ck.fields(item, TCP_MATCH)
        if m is None:
            continue
        labels = freeze(parse_labels(ck, m["sourceLabels"])) if "sourceLabels" in m else None
        gateways = tuple(v for v, _ in ck.strings(m["gateways"]) or ()) if "gateways" in m else ()
        namespace_ = _namespace(ck, m.get("sourceNamespace"))
        matches.append(TCPMatch(parse_port_number(ck, m.get("port")), labels, gateways, namespace_))
    route_at = ck.required(fields, "route", at)
    route = _destinations(ck, route_at, namespace, http=False) if route_at is not None else ()
    return TCPRoute(tuple(matches), route)


# --- TLS ------------------------------------------------------------------------


def _tls_route(ck: DocChecker, at: Located, namespace: str, hosts: list[str]) -> TLSRoute | None:
    """Istio's validateTLSRoute: at least one match, each with SNI names within the
    VirtualService's hosts, and a route."""
    fields = ck.fields(at, TLS)
    if fields is None:
        return None
    matches: list[TLSMatch] = []
    if (m := ck.required(fields, "match", at)) is not None:
        for item in ck.items(m, non_empty=True) or ():
            if (match := _tls_match(ck, item, hosts)) is not None:
                matches.append(match)
    route_at = ck.required(fields, "route", at)
    route = _destinations(ck, route_at, namespace, http=False) if route_at is not None else ()
    return TLSRoute(tuple(matches), route)


def _tls_match(ck: DocChecker, at: Located, hosts: list[str]) -> TLSMatch | None:
    m = ck.fields(at, TLS_MATCH)
    if m is None:
        return None
    sni: list[str] = []
    if (s := ck.required(m, "sniHosts", at)) is not None:
        for name, item in ck.strings(s, _sni_problem, non_empty=True) or ():
            if is_ip(name):
                ck.warn(item, f"{name!r} is an IP address: TLS clients send no SNI for an IP")
            elif hosts and not any(_sni_within(name.lower(), h.lower()) for h in hosts):
                ck.error(
                    item,
                    f"SNI host {name!r} is not within the VirtualService's hosts "
                    f"({', '.join(hosts)})",
                )
                continue
            sni.append(name.lower())
    labels = freeze(parse_labels(ck, m["sourceLabels"])) if "sourceLabels" in m else None
    gateways = tuple(v for v, _ in ck.strings(m["gateways"]) or ()) if "gateways" in m else ()
    return TLSMatch(
        tuple(sni),
        parse_port_number(ck, m.get("port")),
        labels,
        gateways,
        _namespace(ck, m.get("sourceNamespace")),
    )


def _sni_problem(value: str) -> str | None:
    return None if is_ip(value) else host_problem(value)


def _sni_within(sni: str, host: str) -> bool:
    """Istio's SubsetOf: `a.example.com` and `*.example.com` are within `*.example.com`."""
    if host == "*":
        return True
    if host.startswith("*."):
        return sni.endswith(host[1:])
    return sni == host
