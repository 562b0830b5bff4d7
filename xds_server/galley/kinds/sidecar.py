"""Sidecar: which ports a workload's proxy listens on, and which hosts it can reach."""

from __future__ import annotations

from collections.abc import Mapping

from ..model import EgressListener, IngressListener, ObjectMeta, Sidecar, SidecarPort
from ..names import dns1123_label_problem, host_port_problem, is_ip, wildcard_host_problem
from ..schema import DocChecker, Located
from .common import parse_port_name, parse_port_number, parse_protocol, parse_selector

SIDECAR_FIELDS = frozenset({"workloadSelector", "ingress", "egress", "outboundTrafficPolicy"})
SIDECAR_UNSUPPORTED = frozenset({"inboundConnectionPool"})
INGRESS_FIELDS = frozenset({"port", "bind", "defaultEndpoint", "captureMode"})
INGRESS_UNSUPPORTED = frozenset({"tls", "connectionPool"})
EGRESS_FIELDS = frozenset({"port", "bind", "hosts", "captureMode"})
PORT_FIELDS = frozenset({"number", "protocol", "name", "targetPort"})
CAPTURE_MODES = frozenset({"DEFAULT", "IPTABLES", "NONE"})
OUTBOUND_FIELDS = frozenset({"mode", "egressProxy"})
OUTBOUND_MODES = frozenset({"REGISTRY_ONLY", "ALLOW_ANY"})
EGRESS_PROXY_FIELDS = frozenset({"host", "subset", "port"})


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
    if spec is not None:
        fields = ck.fields(spec, SIDECAR_FIELDS, unsupported=SIDECAR_UNSUPPORTED)
        if fields is None:
            return None
        if (at := fields.get("workloadSelector")) is not None:
            selector = parse_selector(ck, at, allow_empty=False)
        if (at := fields.get("ingress")) is not None:
            ingress = _parse_ingress(ck, at)
        if (at := fields.get("egress")) is not None:
            egress = _parse_egress(ck, at)
        if (at := fields.get("outboundTrafficPolicy")) is not None:
            _parse_outbound(ck, at)
    if len(ck.errors) > before:
        return None
    return Sidecar(meta=meta, workload_selector=selector, ingress=ingress, egress=egress)


def _parse_port(ck: DocChecker, at: Located) -> SidecarPort | None:
    """A Sidecar port: number and protocol required, name optional."""
    fields = ck.fields(at, PORT_FIELDS)
    if fields is None:
        return None
    number = parse_port_number(ck, ck.required(fields, "number", at))
    protocol = parse_protocol(ck, ck.required(fields, "protocol", at))
    name = parse_port_name(ck, fields.get("name"))
    parse_port_number(ck, fields.get("targetPort"))  # accepted, not used
    if number is None or protocol is None:
        return None
    return SidecarPort(number, protocol, name or "")


def _parse_ingress(ck: DocChecker, at: Located) -> tuple[IngressListener, ...]:
    listeners: list[IngressListener] = []
    seen: dict[tuple[str, int], str] = {}
    for item in ck.items(at) or ():
        fields = ck.fields(item, INGRESS_FIELDS, unsupported=INGRESS_UNSUPPORTED)
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
        if (mode_at := fields.get("captureMode")) is not None:
            ck.enum(mode_at, CAPTURE_MODES)
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
    items = ck.items(at) or []
    seen: dict[tuple[str, int], str] = {}
    for i, item in enumerate(items):
        fields = ck.fields(item, EGRESS_FIELDS)
        if fields is None:
            continue
        port: SidecarPort | None = None
        if (port_at := fields.get("port")) is not None:
            port = _parse_port(ck, port_at)
        elif i != len(items) - 1:
            ck.error(item, "an egress listener without a port must be the last one")
        bind = ""
        if (bind_at := fields.get("bind")) is not None:
            bind = ck.string(bind_at, _bind_problem) or ""
        if (mode_at := fields.get("captureMode")) is not None:
            ck.enum(mode_at, CAPTURE_MODES)
        hosts: list[str] = []
        if (hosts_at := ck.required(fields, "hosts", item)) is not None:
            found = ck.strings(hosts_at, _egress_host_problem, non_empty=True)
            hosts = [h for h, _ in found or ()]
        if port is not None and port_at is not None:
            key = (bind, port.number)
            if key in seen:
                ck.error(port_at, f"port {port.number} is already used by {seen[key]}")
            seen[key] = item.path
        listeners.append(EgressListener(tuple(hosts), port, bind))
    return tuple(listeners)


def _parse_outbound(ck: DocChecker, at: Located) -> None:
    """`outboundTrafficPolicy`: checked and accepted; pocketmesh does not act on it yet."""
    fields = ck.fields(at, OUTBOUND_FIELDS)
    if fields is None:
        return
    if (mode_at := fields.get("mode")) is not None:
        ck.enum(mode_at, OUTBOUND_MODES)
    if (proxy_at := fields.get("egressProxy")) is not None:
        proxy = ck.fields(proxy_at, EGRESS_PROXY_FIELDS)
        if proxy is not None:
            if (host_at := proxy.get("host")) is not None:
                ck.string(host_at)
            if (subset_at := proxy.get("subset")) is not None:
                ck.string(subset_at)
            if (port_at := proxy.get("port")) is not None:
                port = ck.fields(port_at, {"number"})
                if port is not None:
                    parse_port_number(ck, port.get("number"))
