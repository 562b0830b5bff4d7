"""Sidecar: which ports a workload's proxy listens on, and which hosts it can reach."""

from __future__ import annotations

from collections.abc import Mapping

from ..fields import Shape, each, label, no_effect, not_yet, obj, restricted, shape, supported
from ..model import EgressListener, IngressListener, ObjectMeta, Sidecar, SidecarPort
from ..model_traffic import Destination, ServerTLS
from ..names import (
    UNIX_PREFIX,
    dns1123_label_problem,
    host_port_problem,
    is_ip,
    is_unix,
    unix_path_problem,
    wildcard_host_problem,
)
from ..schema import DocChecker, Located
from . import connection_pool
from .common import (
    SELECTOR,
    parse_optional_protocol,
    parse_port_name,
    parse_port_number,
    parse_selector,
)
from .connection_pool import parse_connection_pool
from .gateway import SERVER_TLS, parse_server_tls
from .virtual_service import DESTINATION, parse_destination

CAPTURE_MODES = frozenset({"DEFAULT", "IPTABLES", "NONE"})
# pocketmesh never captures traffic (no iptables): listeners bind addresses.
NO_CAPTURE = frozenset({"DEFAULT", "NONE"})
OUTBOUND_MODES = frozenset({"REGISTRY_ONLY", "ALLOW_ANY"})
REGISTRY_ONLY = "REGISTRY_ONLY"
HTTP_LIKE = frozenset({"HTTP", "HTTP2", "GRPC", "GRPC-WEB", ""})

PORT: Shape = shape(
    number=supported(),
    protocol=supported("unset: each connection is sniffed (HTTP or TCP)"),
    name=label(),
    targetPort=no_effect("Istio applies targetPort to ServiceEntry ports only"),
)
CAPTURE = restricted(
    "DEFAULT or NONE. Deliberate non-goal: IPTABLES; pocketmesh never captures traffic (no "
    "iptables, no root): its listeners bind addresses, and apps use the 15001 HTTP proxy"
)
# Istio's validation refuses these in a Sidecar's ingress tls.
_NOT_ON_A_SIDECAR = "Istio refuses it in a Sidecar's ingress tls too"
SIDECAR_TLS: Shape = shape(
    **{
        **SERVER_TLS,
        "mode": restricted(
            "SIMPLE, MUTUAL or OPTIONAL_MUTUAL (Istio refuses ISTIO_MUTUAL and "
            "AUTO_PASSTHROUGH here; PASSTHROUGH would end no TLS)"
        ),
        "credentialName": not_yet(_NOT_ON_A_SIDECAR),
        "credentialNames": not_yet(_NOT_ON_A_SIDECAR),
        "caCertCredentialName": not_yet("without credentialName it names nothing"),
        "tlsCertificates": not_yet(_NOT_ON_A_SIDECAR),
        "subjectAltNames": not_yet(_NOT_ON_A_SIDECAR),
        "httpsRedirect": not_yet(_NOT_ON_A_SIDECAR),
    }
)
SIDECAR_TLS_MODES = frozenset({"SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL"})
TLS_PORT_PROTOCOLS = frozenset({"HTTPS", "TLS"})
INGRESS: Shape = shape(
    port=obj(PORT),
    bind=supported("the address the inbound listener binds (default: the workload's)"),
    defaultEndpoint=supported(
        "where the app listens: 127.0.0.1:PORT, 0.0.0.0:PORT, host:port or unix:///path"
    ),
    captureMode=CAPTURE,
    tls=obj(
        SIDECAR_TLS,
        "TLS ended by the sidecar with these files, on an HTTPS (then HTTP to the app) or TLS "
        "(then TCP) port whose PeerAuthentication mode is DISABLE (Istio applies it only "
        "then; pocketmesh refuses it otherwise)",
    ),
    connectionPool=obj(connection_pool.SHAPE, "this port's inbound cluster (Istio)"),
)
EGRESS: Shape = shape(
    port=obj(
        PORT,
        "a listener of its own on bind:port: plain HTTP requests (no proxy form) routed by "
        "Host to the hosts it imports, on this port; TCP: to the one it imports",
    ),
    bind=supported(
        "an IP (default: the workload's address; Istio's 127.0.0.1 would be "
        "shared by every workload of the machine)"
    ),
    hosts=supported(
        "ns/host patterns: './*', 'istio-system/*', '*/reviews.x'; '~ns/host' excludes "
        "('~/host' in every namespace, '~/*' everything)"
    ),
    captureMode=CAPTURE,
)
OUTBOUND: Shape = shape(
    mode=supported(
        "REGISTRY_ONLY (the default here): a host no ServiceEntry declares gets 404; "
        "ALLOW_ANY: the 15001 proxy forwards such requests to the host they name (HTTP only: "
        "a TCP connection to the sidecar names no destination)"
    ),
    egressProxy=obj(
        DESTINATION,
        "with ALLOW_ANY: requests for hosts outside the registry go to this service (an "
        "egress gateway), Host unchanged, instead of to the host they name; it must be "
        "visible to the workload (its egress hosts)",
    ),
)
SPEC: Shape = shape(
    workloadSelector=obj(SELECTOR),
    ingress=each(INGRESS),
    egress=each(EGRESS),
    outboundTrafficPolicy=obj(OUTBOUND),
    inboundConnectionPool=obj(
        connection_pool.SHAPE, "every inbound cluster, unless the port sets its own"
    ),
)


def _default_endpoint_problem(value: str) -> str | None:
    if is_unix(value):  # the app listens on a unix socket
        return unix_path_problem(value.removeprefix(UNIX_PREFIX))
    return host_port_problem(value)


def _bind_problem(value: str) -> str | None:
    return None if is_ip(value) else "must be an IP address"


def _egress_host_problem(value: str) -> str | None:
    namespace, sep, host = value.partition("/")
    if not sep or not namespace or not host:
        return "must be namespace/dnsName, like './*' or 'istio-system/*.example.com'"
    excluded = namespace.removeprefix("~")  # `~ns/host` excludes (`~/host`: everywhere)
    if excluded not in {"", ".", "*"} and dns1123_label_problem(excluded) is not None:
        return "must start with '.', '*', '~' or a namespace name (or ~name) before the '/'"
    if (problem := wildcard_host_problem(host)) is not None:
        return f"has a dnsName that {problem}"
    return None


def parse_sidecar(ck: DocChecker, meta: ObjectMeta, spec: Located | None) -> Sidecar | None:
    before = len(ck.errors)
    selector: Mapping[str, str] | None = None
    ingress: tuple[IngressListener, ...] = ()
    egress: tuple[EgressListener, ...] = ()
    outbound = ""  # not set: the mesh settings' mode
    egress_proxy = None
    inbound_pool = None
    if spec is not None:
        fields = ck.fields(spec, SPEC)
        if fields is None:
            return None
        if (at := fields.get("workloadSelector")) is not None:
            selector = parse_selector(ck, at, allow_empty=False)
        if (at := fields.get("ingress")) is not None:
            ingress = _parse_ingress(ck, at)
        if (at := fields.get("egress")) is not None:
            egress = _parse_egress(ck, at)
        if (at := fields.get("outboundTrafficPolicy")) is not None:
            outbound, egress_proxy = _parse_outbound(ck, at, meta.namespace)
        if (at := fields.get("inboundConnectionPool")) is not None:
            inbound_pool = parse_connection_pool(ck, at)
    if len(ck.errors) > before:
        return None
    return Sidecar(
        meta=meta,
        workload_selector=selector,
        ingress=ingress,
        egress=egress,
        outbound_traffic_policy=outbound,
        inbound_connection_pool=inbound_pool,
        egress_proxy=egress_proxy,
    )


def _parse_port(ck: DocChecker, at: Located) -> SidecarPort | None:
    """A Sidecar port: number required; protocol optional (unset: sniffed), name too."""
    fields = ck.fields(at, PORT)
    if fields is None:
        return None
    number = parse_port_number(ck, ck.required(fields, "number", at))
    protocol = parse_optional_protocol(ck, fields.get("protocol"))
    name = parse_port_name(ck, fields.get("name"))
    if number is None or protocol is None:
        return None
    return SidecarPort(number, protocol, name or "")


def _parse_ingress(ck: DocChecker, at: Located) -> tuple[IngressListener, ...]:
    listeners: list[IngressListener] = []
    seen: dict[tuple[str, int], str] = {}
    for item in ck.items(at) or ():
        fields = ck.fields(item, INGRESS)
        if fields is None:
            continue
        port_at = ck.required(fields, "port", item)
        port = _parse_port(ck, port_at) if port_at is not None else None
        bind = ""
        if (bind_at := fields.get("bind")) is not None:
            bind = ck.string(bind_at, _bind_problem) or ""
        default_endpoint = ""
        if (endpoint_at := fields.get("defaultEndpoint")) is not None:
            default_endpoint = ck.string(endpoint_at, _default_endpoint_problem) or ""
        _capture_mode(ck, fields.get("captureMode"))
        pool = None
        if (pool_at := fields.get("connectionPool")) is not None:
            pool = parse_connection_pool(ck, pool_at)
            pool_fields = pool_at.value if isinstance(pool_at.value, dict) else {}
            if port is not None and "http" in pool_fields and port.protocol not in HTTP_LIKE:
                ck.warn(
                    pool_at,
                    f"HTTP settings for port {port.number}, whose protocol is not HTTP "
                    f"({port.protocol or 'unset'}): only the TCP settings apply (as in Istio)",
                )
        tls = None
        if (tls_at := fields.get("tls")) is not None:
            tls = _ingress_tls(ck, tls_at, port)
        if port is None:
            continue
        key = (bind, port.number)
        if port_at is not None and key in seen:
            ck.error(port_at, f"port {port.number} is already used by {seen[key]}")
            continue
        seen[key] = item.path
        listeners.append(IngressListener(port, bind, default_endpoint, pool, tls))
    return tuple(listeners)


def _ingress_tls(ck: DocChecker, at: Located, port: SidecarPort | None) -> ServerTLS | None:
    """An ingress port's tls: a mode that ends TLS (Istio's sidecar rules), then the
    fields as a gateway server's."""
    mode_at = (ck.children(at) or {}).get("mode")
    mode = mode_at.value if mode_at is not None else "PASSTHROUGH"  # the API's default
    if not isinstance(mode, str) or mode not in SIDECAR_TLS_MODES:
        ck.error(
            mode_at or at,
            f"{mode} is not a mode a sidecar ends TLS with: use SIMPLE, MUTUAL or "
            "OPTIONAL_MUTUAL (Istio refuses ISTIO_MUTUAL and AUTO_PASSTHROUGH here)",
            path=f"{at.path}.mode",
        )
        return None
    if port is not None and port.protocol not in TLS_PORT_PROTOCOLS:
        ck.error(
            at,
            f"TLS settings need a port of protocol HTTPS or TLS, not "
            f"{port.protocol or 'unset'} (Istio)",
        )
    return parse_server_tls(ck, at, SIDECAR_TLS)


def _parse_egress(ck: DocChecker, at: Located) -> tuple[EgressListener, ...]:
    """Istio's rules: at most one listener without a port, and it comes last; ports on
    one bind address are unique; bind needs a port."""
    listeners: list[EgressListener] = []
    items = ck.items(at) or []
    portless_seen = False
    ports: dict[tuple[str, int], str] = {}
    for i, item in enumerate(items):
        fields = ck.fields(item, EGRESS)
        if fields is None:
            continue
        _capture_mode(ck, fields.get("captureMode"))
        port = _parse_port(ck, fields["port"]) if "port" in fields else None
        bind = ""
        if (bind_at := fields.get("bind")) is not None:
            bind = ck.string(bind_at, _bind_problem) or ""
            if "port" not in fields:
                ck.error(bind_at, "a bind address needs a port")
        if "port" not in fields:
            if portless_seen:
                ck.error(item, "egress can have only one listener without a port")
            elif i != len(items) - 1:
                ck.error(item, "the egress listener without a port must be the last one")
            portless_seen = True
        elif port is not None:
            key = (bind, port.number)
            if key in ports:
                ck.error(fields["port"], f"port {port.number} is already used by {ports[key]}")
            ports[key] = item.path
        hosts: list[str] = []
        if (hosts_at := ck.required(fields, "hosts", item)) is not None:
            found = ck.strings(hosts_at, _egress_host_problem, non_empty=True)
            hosts = [h for h, _ in found or ()]
        listeners.append(EgressListener(tuple(hosts), port, bind))
    return tuple(listeners)


def _capture_mode(ck: DocChecker, at: Located | None) -> None:
    if at is None:
        return
    mode = ck.enum(at, CAPTURE_MODES)
    if mode is not None and mode not in NO_CAPTURE:
        ck.not_yet(
            at, f"captureMode {mode} (a deliberate non-goal: pocketmesh binds addresses, it "
            "never captures traffic)",
        )  # fmt: skip


def _parse_outbound(ck: DocChecker, at: Located, namespace: str) -> tuple[str, Destination | None]:
    """`outboundTrafficPolicy`: REGISTRY_ONLY (pocketmesh's default) or ALLOW_ANY, and
    ALLOW_ANY's egress proxy."""
    fields = ck.fields(at, OUTBOUND)
    if fields is None:
        return "", None
    mode = REGISTRY_ONLY  # the API's default, once outboundTrafficPolicy is written
    if (mode_at := fields.get("mode")) is not None:
        mode = ck.enum(mode_at, OUTBOUND_MODES) or REGISTRY_ONLY
    proxy = None
    if (proxy_at := fields.get("egressProxy")) is not None:
        proxy = parse_destination(ck, proxy_at, namespace)
        if mode != "ALLOW_ANY":
            ck.error(proxy_at, "needs mode ALLOW_ANY: it is where ALLOW_ANY's requests go (Istio)")
    return mode, proxy
