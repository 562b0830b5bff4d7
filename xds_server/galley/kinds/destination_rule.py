"""DestinationRule: subsets of a service's endpoints, and how traffic to them behaves."""

from __future__ import annotations

import os
from collections.abc import Mapping

from ..fields import Shape, deprecated, each, not_yet, obj, restricted, shape, supported
from ..model import EMPTY_LABELS, ObjectMeta
from ..model_traffic import (
    ClientTLS,
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
    is_ip,
    san_problem,
)
from ..schema import DocChecker, Located
from . import connection_pool, load_balancer
from .common import freeze, parse_export_to, parse_labels, parse_port_number
from .connection_pool import parse_connection_pool
from .load_balancer import LoadBalancer, parse_load_balancer
from .traffic_common import boolean, duration_ms, host_problem

# `istio.type.v1beta1.WorkloadSelector` (the networking kinds' own one says `labels`).
MATCH_LABELS: Shape = shape(matchLabels=supported())
TLS_MODES = frozenset({"DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"})
MAX_INT32 = 2**31 - 1

OUTLIER: Shape = shape(
    consecutive5xxErrors=supported("0 turns the check off"),
    consecutiveErrors=deprecated("use consecutive5xxErrors"),
    consecutiveGatewayErrors=supported(),
    interval=supported(),
    baseEjectionTime=supported(),
    maxEjectionPercent=supported(),
    minHealthPercent=supported("Envoy's healthy_panic_threshold"),
    splitExternalLocalOriginErrors=supported(
        "connect failures and timeouts count apart from the upstream's 5xx answers"
    ),
    consecutiveLocalOriginFailures=supported("needs splitExternalLocalOriginErrors: true"),
    outlierDetectionHttpErrorCodes=supported(
        "these answers count as errors (Envoy's HTTP outlier detection error matcher)"
    ),
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
    caCrl=supported(
        "a PEM file: upstream certificates it revokes are refused (with caCertificates or "
        "the system roots; with credentialName, the Secret's ca.crl)"
    ),
)
PROXY_PROTOCOL_VERSIONS = frozenset({"V1", "V2"})
TUNNEL_PROTOCOLS = frozenset({"CONNECT", "POST"})
# Envoy 1.40 crashes (segfault) when a listener drains while a connection it tunnels
# with POST over HTTP/1.1 is open (found by tests/traffic/test_tunnel_e2e.py).
WHY_NOT_POST = (
    "Envoy 1.40 crashes when a listener with an open POST tunnel drains (a config "
    "change), so pocketmesh builds CONNECT tunnels only"
)
TUNNEL: Shape = shape(
    protocol=restricted("CONNECT (the default) only; POST is refused: " + WHY_NOT_POST),
    targetHost=supported("the host the proxy connects to (a name or an IP)"),
    targetPort=supported(),
)
RETRY_BUDGET: Shape = shape(
    percent=supported("of the active requests; default 20"),
    minRetryConcurrency=supported("default 3"),
    budgetInterval=not_yet("Envoy 1.40 has no budget interval"),
)
PORT_POLICY: Shape = shape(
    port=obj(shape(number=supported())),
    loadBalancer=obj(load_balancer.SHAPE),
    connectionPool=obj(connection_pool.SHAPE),
    outlierDetection=obj(OUTLIER),
    tls=obj(TLS),
)
POLICY: Shape = shape(
    loadBalancer=obj(load_balancer.SHAPE),
    connectionPool=obj(connection_pool.SHAPE),
    outlierDetection=obj(OUTLIER),
    tls=obj(TLS),
    portLevelSettings=each(PORT_POLICY, "replaces each policy field it sets, for its port"),
    tunnel=obj(
        TUNNEL,
        "TCP and TLS routes to this host (a forward proxy) carry each connection in an HTTP "
        "CONNECT to targetHost:targetPort; h2 if the proxy's port is HTTP2 or GRPC, else "
        "HTTP/1.1",
    ),
    proxyProtocol=obj(
        shape(version=supported("V1 (text, the default) or V2 (binary)")),
        "a PROXY protocol header before each upstream connection's bytes (TLS after it)",
    ),
    retryBudget=obj(RETRY_BUDGET, "Envoy's retry budget circuit breaker"),
)
SUBSET: Shape = shape(name=supported(), labels=supported(), trafficPolicy=obj(POLICY))
SPEC: Shape = shape(
    host=supported(),
    trafficPolicy=obj(POLICY),
    subsets=each(SUBSET),
    exportTo=supported("'*', '.', namespace names: which namespaces' proxies use the rule"),
    workloadSelector=obj(
        MATCH_LABELS, "only the sidecars of these workloads of the rule's namespace use it"
    ),
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
    selector = None
    if (at := fields.get("workloadSelector")) is not None:
        selector = _selector(ck, at)
    export_to: tuple[str, ...] = ()
    if (at := fields.get("exportTo")) is not None:
        export_to = _export_to(ck, at, meta.namespace, has_selector=selector is not None)
    if len(ck.errors) > before:
        return None
    return DestinationRule(meta, host, policy, tuple(subsets), export_to, selector)


def _selector(ck: DocChecker, at: Located) -> Mapping[str, str]:
    """Istio's `istio.type.v1beta1.WorkloadSelector`: `matchLabels`."""
    raw = at.value if isinstance(at.value, dict) else {}
    if "labels" in raw and "matchLabels" not in raw:  # the networking kinds' spelling
        path = f"{at.path}.labels"
        ck.error(
            Located(raw["labels"], path, ck.lines.get(path, at.line)),
            "a DestinationRule's workloadSelector says matchLabels (Istio's "
            "istio.type.v1beta1.WorkloadSelector), not labels",
        )
        return EMPTY_LABELS
    fields = ck.fields(at, MATCH_LABELS) or {}
    labels = parse_labels(ck, fields.get("matchLabels"))
    if not labels:
        ck.warn(at, "workload selector specified without labels: it selects every workload "
                    "of the namespace")  # fmt: skip
    return freeze(labels)


def _export_to(
    ck: DocChecker, at: Located, namespace: str, *, has_selector: bool
) -> tuple[str, ...]:
    """Istio's validateExportTo for a DestinationRule (`~` is for ServiceEntries only)."""
    values, written = parse_export_to(ck, at, namespace, none_allowed=False)
    if "*" in values and written > 1:
        ck.error(at, "cannot have both public (*) and non-public exportTo values")
    seen = {namespace if v == "." else v for v in values}
    if has_selector and seen:
        if namespace not in seen:
            ck.error(at, "a rule with workloadSelector cannot be exported beyond its namespace")
        elif len(seen) > 1:
            ck.error(at, "a rule with workloadSelector cannot have several exportTo entries")
    return tuple(values)


def _retry_budget(ck: DocChecker, at: Located) -> tuple[float, int]:
    """(percent, minRetryConcurrency) with Istio's defaults (20 %, 3)."""
    fields = ck.fields(at, RETRY_BUDGET) or {}
    percent = 20.0
    if (percent_at := fields.get("percent")) is not None:  # a DoubleValue: a number
        value = percent_at.value
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 100:
            ck.error(percent_at, f"{value!r} must be a number from 0 to 100")
        else:
            percent = float(value)
    minimum = 3
    if (min_at := fields.get("minRetryConcurrency")) is not None:
        minimum = ck.integer(min_at, 1, 2**32 - 1) or 3
    return percent, minimum


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
    if not fields:
        ck.error(at, "traffic policy must have at least one field")
    lb = LoadBalancer()
    if (lb_at := fields.get("loadBalancer")) is not None:
        lb = parse_load_balancer(ck, lb_at, has_outlier="outlierDetection" in fields)
    pool = None
    if "connectionPool" in fields:
        pool = parse_connection_pool(ck, fields["connectionPool"])
    outlier = _outlier(ck, fields["outlierDetection"]) if "outlierDetection" in fields else None
    tls = _tls(ck, fields["tls"], namespace) if "tls" in fields else None
    budget = _retry_budget(ck, fields["retryBudget"]) if "retryBudget" in fields else None
    tunnel = _tunnel(ck, fields["tunnel"]) if "tunnel" in fields else None
    proxy_protocol = None
    if (pp_at := fields.get("proxyProtocol")) is not None:
        pp = ck.fields(pp_at, POLICY["proxyProtocol"].fields or {})
        if pp is not None:
            proxy_protocol = "V1"  # the API's default (enum value 0)
            if (version_at := pp.get("version")) is not None:
                proxy_protocol = ck.enum(version_at, PROXY_PROTOCOL_VERSIONS) or "V1"
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
    return TrafficPolicy(
        load_balancer=lb.simple,
        consistent_hash=lb.consistent_hash,
        locality_lb=lb.locality,
        zone_aware=lb.zone_aware,
        warmup=lb.warmup,
        connection_pool=pool,
        outlier_detection=outlier,
        tls=tls,
        port_level=tuple(port_level),
        retry_budget=budget,
        proxy_protocol=proxy_protocol,
        tunnel=tunnel,
    )


def _target_problem(value: str) -> str | None:
    """A tunnel's target: an IP (v4 or v6) or a DNS name."""
    return None if is_ip(value) else hostname_problem(value)


def _tunnel(ck: DocChecker, at: Located) -> tuple[str, str, int] | None:
    fields = ck.fields(at, TUNNEL)
    if fields is None:
        return None
    protocol = "CONNECT"
    if (p := fields.get("protocol")) is not None:
        protocol = ck.enum(p, TUNNEL_PROTOCOLS) or protocol
        if protocol == "POST":
            ck.error(p, f"POST is not supported by pocketmesh: {WHY_NOT_POST}")
    host_at = ck.required(fields, "targetHost", at)
    host = ck.string(host_at, _target_problem) if host_at is not None else None
    port = parse_port_number(ck, ck.required(fields, "targetPort", at))
    if host is None or port is None:
        return None
    return protocol, host, port


# Fields that only mean something when pocketmesh originates TLS (SIMPLE / MUTUAL).
_ORIGINATION_ONLY = (
    "clientCertificate",
    "privateKey",
    "caCertificates",
    "caCrl",
    "credentialName",
)


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
    crl = pem_file("caCrl")
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

    if mode_at is None:
        # No mode is Istio's DISABLE: plaintext. With TLS settings beside it, TLS was
        # meant: refused rather than sent in plaintext (fail closed).
        for key in (*_ORIGINATION_ONLY, "sni", "subjectAltNames", "insecureSkipVerify"):
            if key in fields:
                ck.error(
                    fields[key],
                    "needs a tls.mode: without one the mode is DISABLE (plaintext, Istio's "
                    "default); set mode SIMPLE or MUTUAL to originate TLS, or DISABLE if "
                    "plaintext is meant",
                )
    # Fields the mode does not use: Istio accepts them and does nothing with them, so
    # pocketmesh accepts them too, and says that they do nothing (never silently).
    elif mode in ("DISABLE", "ISTIO_MUTUAL"):
        for key in _ORIGINATION_ONLY:
            if key in fields:
                ck.warn(
                    fields[key],
                    f"has no effect with mode {mode}: it is used only with mode SIMPLE or "
                    "MUTUAL (Istio ignores it too)",
                )
    if mode == "DISABLE" and mode_at is not None:
        for key in ("sni", "subjectAltNames", "insecureSkipVerify"):
            if key in fields:
                ck.warn(fields[key], "has no effect with mode DISABLE: plaintext (as in Istio)")
    if mode == "ISTIO_MUTUAL" and insecure:
        ck.warn(fields["insecureSkipVerify"], "has no effect with ISTIO_MUTUAL (as in Istio)")
    if mode == "SIMPLE":
        for key in ("clientCertificate", "privateKey"):
            if key in fields:
                ck.warn(
                    fields[key],
                    "has no effect with mode SIMPLE: no client certificate is presented; "
                    "it is used only with mode MUTUAL (Istio ignores it too)",
                )
    if mode in ("SIMPLE", "MUTUAL"):
        if credential and (client_cert or private_key or ca or crl):
            ck.error(
                at,
                "credentialName cannot be combined with clientCertificate, privateKey, "
                "caCertificates or caCrl (the Secret's ca.crl is its CRL)",
                path=f"{at.path}.credentialName",
            )
        if mode == "MUTUAL" and not credential:
            for key, given in (("clientCertificate", client_cert), ("privateKey", private_key)):
                if given is None and key not in fields:
                    ck.error(at, "required for mode MUTUAL", path=f"{at.path}.{key}")
        if insecure:
            clash = ["caCertificates", "caCrl", "subjectAltNames"]
            if mode == "SIMPLE":
                clash.append("credentialName")
            for key in clash:
                if key in fields:
                    ck.error(fields[key], "cannot be set with insecureSkipVerify: true")
    if len(ck.errors) > before:
        return None
    if mode != "MUTUAL":  # what the mode does not use is not kept (warned above)
        client_cert = private_key = None
    if mode not in ("SIMPLE", "MUTUAL"):
        ca, crl, credential = None, None, ""
    if mode == "DISABLE":
        sans, sni, insecure = (), "", False
    return ClientTLS(
        mode=mode,
        client_certificate=client_cert,
        private_key=private_key,
        ca_certificates=ca,
        ca_crl=crl,
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
    split = False
    if (split_at := fields.get("splitExternalLocalOriginErrors")) is not None:
        split = bool(boolean(ck, split_at))
    if (local_at := fields.get("consecutiveLocalOriginFailures")) is not None:
        values["consecutive_local_origin_failures"] = ck.integer(local_at, 0, MAX_INT32)
        if not split and values["consecutive_local_origin_failures"]:
            ck.error(
                local_at,
                "is set, but splitExternalLocalOriginErrors is false: local origin failures "
                "then count as 5xx (as Istio says)",
            )
    codes: tuple[int, ...] = ()
    if (codes_at := fields.get("outlierDetectionHttpErrorCodes")) is not None:
        codes = tuple(
            c for item in ck.items(codes_at) or () if (c := ck.integer(item, 100, 599)) is not None
        )
    return OutlierDetection(
        **values, split_external_local_origin_errors=split, http_error_codes=codes
    )
