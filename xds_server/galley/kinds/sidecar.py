"""Sidecar: which ports a workload's proxy listens on, and which hosts it can reach."""

from __future__ import annotations

from collections.abc import Mapping

from ..fields import Shape, each, label, no_effect, not_yet, obj, restricted, shape, supported
from ..model import EgressListener, IngressListener, ObjectMeta, Sidecar, SidecarPort
from ..names import dns1123_label_problem, host_port_problem, is_ip, wildcard_host_problem
from ..schema import DocChecker, Located
from .common import (
    SELECTOR,
    parse_optional_protocol,
    parse_port_name,
    parse_port_number,
    parse_selector,
)

CAPTURE_MODES = frozenset({"DEFAULT", "IPTABLES", "NONE"})
# pocketmesh never captures traffic (no iptables): listeners bind addresses.
NO_CAPTURE = frozenset({"DEFAULT", "NONE"})
OUTBOUND_MODES = frozenset({"REGISTRY_ONLY", "ALLOW_ANY"})
REGISTRY_ONLY = "REGISTRY_ONLY"

PORT: Shape = shape(
    number=supported(),
    protocol=supported("unset: each connection is sniffed (HTTP or TCP)"),
    name=label(),
    targetPort=no_effect("Istio applies targetPort to ServiceEntry ports only"),
)
CAPTURE = restricted(
    "DEFAULT or NONE: pocketmesh never captures traffic, its listeners bind addresses; "
    "IPTABLES is refused"
)
INGRESS: Shape = shape(
    port=obj(PORT),
    bind=supported("the address the inbound listener binds (default: the workload's)"),
    defaultEndpoint=supported("where the app listens: 127.0.0.1:PORT, 0.0.0.0:PORT or host:port"),
    captureMode=CAPTURE,
    tls=not_yet("TLS termination of ingress listeners"),
    connectionPool=not_yet(),
)
EGRESS: Shape = shape(
    port=not_yet("per-port egress listeners; an egress entry without a port scopes all"),
    bind=not_yet(),
    hosts=supported("ns/host patterns: './*', 'istio-system/*', '*/reviews.x'"),
    captureMode=CAPTURE,
)
OUTBOUND: Shape = shape(
    mode=supported(
        "REGISTRY_ONLY (the default here): a host no ServiceEntry declares gets 404; "
        "ALLOW_ANY: the 15001 proxy forwards such requests to the host they name (HTTP only: "
        "a TCP connection to the sidecar names no destination)"
    ),
    egressProxy=not_yet("routing unknown hosts through an egress gateway"),
)
SPEC: Shape = shape(
    workloadSelector=obj(SELECTOR),
    ingress=each(INGRESS),
    egress=each(EGRESS),
    outboundTrafficPolicy=obj(OUTBOUND),
    inboundConnectionPool=not_yet(),
)


def _bind_problem(value: str) -> str | None:
    return None if is_ip(value) else "must be an IP address"


def _egress_host_problem(value: str) -> str | None:
    namespace, sep, host = value.partition("/")
    if not sep or not namespace or not host:
        return "must be namespace/dnsName, like './*' or 'istio-system/*.example.com'"
    if namespace not in {".", "*", "~"} and dns1123_label_problem(namespace) is not None:
        return "must start with '.', '*', '~' or a namespace name before the '/'"
    if namespace == "~" and host != "*":
        return "may only be '~/*' with the '~' namespace"
    if (problem := wildcard_host_problem(host)) is not None:
        return f"has a dnsName that {problem}"
    return None


def parse_sidecar(ck: DocChecker, meta: ObjectMeta, spec: Located | None) -> Sidecar | None:
    before = len(ck.errors)
    selector: Mapping[str, str] | None = None
    ingress: tuple[IngressListener, ...] = ()
    egress: tuple[EgressListener, ...] = ()
    outbound = REGISTRY_ONLY
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
            outbound = _parse_outbound(ck, at)
    if len(ck.errors) > before:
        return None
    return Sidecar(
        meta=meta,
        workload_selector=selector,
        ingress=ingress,
        egress=egress,
        outbound_traffic_policy=outbound,
    )


def _parse_port(ck: DocChecker, at: Located) -> SidecarPort | None:
    """A Sidecar port: number and protocol required, name optional."""
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
            default_endpoint = ck.string(endpoint_at, host_port_problem) or ""
        _capture_mode(ck, fields.get("captureMode"))
        if port is None:
            continue
        key = (bind, port.number)
        if port_at is not None and key in seen:
            ck.error(port_at, f"port {port.number} is already used by {seen[key]}")
            continue
        seen[key] = item.path
        listeners.append(IngressListener(port, bind, default_endpoint))
    return tuple(listeners)


def _parse_egress(ck: DocChecker, at: Located) -> tuple[EgressListener, ...]:
    listeners: list[EgressListener] = []
    for i, item in enumerate(ck.items(at) or ()):
        fields = ck.fields(item, EGRESS)
        if fields is None:
            continue
        if i == 1:  # every entry is port-less (ports are refused): Istio allows one
            ck.error(item, "egress can have only one listener without a port")
        _capture_mode(ck, fields.get("captureMode"))
        hosts: list[str] = []
        if (hosts_at := ck.required(fields, "hosts", item)) is not None:
            found = ck.strings(hosts_at, _egress_host_problem, non_empty=True)
            hosts = [h for h, _ in found or ()]
        listeners.append(EgressListener(tuple(hosts)))
    return tuple(listeners)


def _capture_mode(ck: DocChecker, at: Located | None) -> None:
    if at is None:
        return
    mode = ck.enum(at, CAPTURE_MODES)
    if mode is not None and mode not in NO_CAPTURE:
        ck.not_yet(at, f"captureMode {mode} (pocketmesh binds addresses, it never captures)")


def _parse_outbound(ck: DocChecker, at: Located) -> str:
    """`outboundTrafficPolicy`: REGISTRY_ONLY (pocketmesh's default) or ALLOW_ANY."""
    fields = ck.fields(at, OUTBOUND)
    if fields is None or (mode_at := fields.get("mode")) is None:
        return REGISTRY_ONLY
    return ck.enum(mode_at, OUTBOUND_MODES) or REGISTRY_ONLY
