"""ServiceEntry: a service's hosts and ports, and where its endpoints come from.

Defaults follow Istio (location MESH_EXTERNAL, resolution NONE), not the
model's constructor defaults, so a document means what it means in Istio.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..fields import Shape, each, obj, shape, supported
from ..model import EMPTY_LABELS, ObjectMeta, ServiceEntry, ServicePort, Source, WorkloadEntry
from ..names import (
    UNIX_PREFIX,
    address_problem,
    ip_or_cidr_problem,
    is_ip,
    is_unix,
    san_problem,
    unix_path_problem,
    wildcard_host_problem,
)
from ..schema import DocChecker, Located, child_path
from . import workload_entry
from .common import (
    SELECTOR,
    parse_export_to,
    parse_optional_protocol,
    parse_port_name,
    parse_port_number,
    parse_selector,
)
from .workload_entry import parse_workload_spec

PORT: Shape = shape(
    number=supported(),
    protocol=supported(
        "HTTP, HTTP2, GRPC, GRPC-WEB are routed as HTTP; others as TCP; unset: each "
        "connection is sniffed (HTTP is routed as HTTP, anything else proxied as TCP)"
    ),
    name=supported("WorkloadEntry ports map by this name"),
    targetPort=supported("where endpoints serve it, unless their ports say otherwise"),
)
SPEC: Shape = shape(
    hosts=supported(),
    addresses=supported(
        "IPs: extra virtual-host domains (Istio's VIPs), and a NONE entry's TCP destination; "
        "ranges are accepted with a warning (no capture: TCP ports are told apart by port)"
    ),
    ports=each(PORT),
    location=supported("MESH_INTERNAL services get auto-mTLS"),
    resolution=supported(
        "STATIC: EDS; DNS: STRICT_DNS; DNS_ROUND_ROBIN: LOGICAL_DNS; NONE and DYNAMIC_DNS: "
        "sidecars forward HTTP to the request's authority and TLS to its SNI (Envoy's "
        "dynamic forward proxy; no traffic capture), a NONE TCP port to the entry's address"
    ),
    endpoints=each(workload_entry.SPEC),
    workloadSelector=obj(SELECTOR),
    exportTo=supported(),
    subjectAltNames=supported(
        "the identities its endpoints may present: checked on (ISTIO_)MUTUAL and SIMPLE "
        "upstream TLS when the DestinationRule names none"
    ),
)
LOCATIONS = frozenset({"MESH_INTERNAL", "MESH_EXTERNAL"})
RESOLUTIONS = frozenset({"NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN", "DYNAMIC_DNS"})
# Istio: DYNAMIC_DNS is for these (the host comes from the Host header or the SNI).
DYNAMIC_DNS_PROTOCOLS = frozenset({"HTTP", "TLS", "GRPC", "HTTP2"})
DNS_RESOLUTIONS = frozenset({"DNS", "DNS_ROUND_ROBIN"})
DEFAULT_LOCATION = "MESH_EXTERNAL"
DEFAULT_RESOLUTION = "NONE"


def _static_address_problem(value: str) -> str | None:
    if is_unix(value):
        return unix_path_problem(value.removeprefix(UNIX_PREFIX))
    return None if is_ip(value) else "must be an IP address (or unix:///path) for resolution STATIC"


def _dns_address_problem(value: str) -> str | None:
    if is_unix(value):
        return "a unix socket cannot be resolved by DNS: use resolution STATIC"
    return address_problem(value)


def _export_to(ck: DocChecker, at: Located, namespace: str) -> tuple[str, ...]:
    """Istio's validateExportTo for a ServiceEntry: `.`, `*`, `~` or namespace names."""
    values, written = parse_export_to(ck, at, namespace, none_allowed=True)
    if written > 1 and "*" in values:
        ck.error(at, "'*' exports everywhere and cannot be combined with other entries")
    if written > 1 and "~" in values:
        ck.error(at, "'~' exports to no namespace and cannot be combined with other entries")
    return tuple(values)


def parse_service_entry(
    ck: DocChecker, meta: ObjectMeta, spec: Located | None
) -> ServiceEntry | None:
    if spec is None:
        return None
    before = len(ck.errors)
    fields = ck.fields(spec, SPEC)
    if fields is None:
        return None
    location = DEFAULT_LOCATION
    if (at := fields.get("location")) is not None:
        location = ck.enum(at, LOCATIONS) or location
    resolution = DEFAULT_RESOLUTION
    if (at := fields.get("resolution")) is not None:
        resolution = ck.enum(at, RESOLUTIONS) or resolution

    selector_at = fields.get("workloadSelector")
    endpoints_at = fields.get("endpoints")
    has_endpoints = endpoints_at is not None and endpoints_at.value != []
    if selector_at is not None and endpoints_at is not None and has_endpoints:
        ck.error(endpoints_at, "endpoints and workloadSelector are mutually exclusive")

    hosts = _parse_hosts(ck, spec, fields, location, resolution, has_endpoints=has_endpoints)
    addresses: tuple[str, ...] = ()
    if (at := fields.get("addresses")) is not None:
        found = ck.strings(at, ip_or_cidr_problem) or ()
        for value, item in found:
            if is_ip(value):
                continue
            # A range: Istio matches connections by their destination IP (iptables).
            if resolution not in ("NONE", "STATIC"):
                ck.error(item, "address ranges are allowed only with resolution NONE or STATIC")
            else:
                ck.warn(
                    item,
                    f"{value!r}: an address range selects nothing here: without traffic "
                    "capture a connection to the sidecar has no other destination address, so "
                    "a TCP port's connections are this entry's by port alone (HTTP is routed "
                    "by host, as in Istio)",
                )
        addresses = tuple(v for v, _ in found)
    ports = _parse_ports(ck, spec, fields.get("ports"))
    if resolution == "NONE":
        _check_original_destination(ck, ports, addresses)
    elif resolution == "DYNAMIC_DNS":
        _check_dynamic_dns(ck, fields, hosts or (), ports)

    selector: Mapping[str, str] | None = None
    if selector_at is not None:
        selector = parse_selector(ck, selector_at, allow_empty=True)
        if resolution == "NONE":
            ck.warn(selector_at, "has no effect with resolution NONE")
    endpoints: tuple[WorkloadEntry, ...] = ()
    if endpoints_at is not None:
        port_names = {p.name for p in ports}
        endpoints = _parse_endpoints(ck, meta, endpoints_at, resolution, port_names)
    if not has_endpoints and selector_at is None and resolution == "STATIC":
        ck.warn(spec, "no endpoints: resolution STATIC needs endpoints or a workloadSelector")

    export_to: tuple[str, ...] = ()
    if (at := fields.get("exportTo")) is not None:
        export_to = _export_to(ck, at, meta.namespace)
    subject_alt_names: tuple[str, ...] = ()
    if (at := fields.get("subjectAltNames")) is not None:
        subject_alt_names = tuple(v for v, _ in ck.strings(at, san_problem) or ())

    if hosts is None or len(ck.errors) > before:
        return None
    return ServiceEntry(
        meta=meta,
        hosts=hosts,
        ports=ports,
        location=location,
        resolution=resolution,
        addresses=addresses,
        workload_selector=selector,
        endpoints=endpoints,
        export_to=export_to,
        subject_alt_names=subject_alt_names,
    )


def _parse_hosts(
    ck: DocChecker,
    spec: Located,
    fields: dict[str, Located],
    location: str,
    resolution: str,
    *,
    has_endpoints: bool,
) -> tuple[str, ...] | None:
    hosts_at = ck.required(fields, "hosts", spec)
    if hosts_at is None:
        return None
    found = ck.strings(hosts_at, wildcard_host_problem, non_empty=True)
    if found is None:
        return None
    hosts: list[str] = []
    seen: set[str] = set()
    for host, at in found:
        if host == "*":
            ck.error(at, "'*' is not a host: use a domain wildcard like '*.example.com'")
            continue
        if host.lower() in seen:
            ck.error(at, f"duplicate host {host!r}")
            continue
        seen.add(host.lower())
        if host.startswith("*."):
            if location != "MESH_EXTERNAL" and resolution not in ("NONE", "DYNAMIC_DNS"):
                ck.error(at, "a wildcard host needs location MESH_EXTERNAL or resolution NONE")
            elif resolution in DNS_RESOLUTIONS and not has_endpoints:
                ck.error(at, f"a wildcard host cannot be resolved by {resolution} alone")
        elif "." not in host.rstrip("."):
            ck.warn(at, f"{host!r} is not fully qualified")
        hosts.append(host)
    return tuple(hosts)


def _parse_ports(ck: DocChecker, spec: Located, at: Located | None) -> tuple[ServicePort, ...]:
    if at is None:
        ck.warn(spec, "no ports: no listeners or clusters are built for this entry")
        return ()
    ports: list[ServicePort] = []
    numbers: dict[int, str] = {}
    names: dict[str, str] = {}
    for item in ck.items(at) or ():
        fields = ck.fields(item, PORT)
        if fields is None:
            continue
        number = parse_port_number(ck, ck.required(fields, "number", item))
        protocol = parse_optional_protocol(ck, fields.get("protocol"))
        name = parse_port_name(ck, ck.required(fields, "name", item))
        target = parse_port_number(ck, fields.get("targetPort"))
        if number is not None:
            if number in numbers:
                ck.error(fields["number"], f"port {number} is already used by {numbers[number]}")
                continue
            numbers[number] = item.path
        if name is not None:
            if name in names:
                ck.error(fields["name"], f"port name {name!r} is already used by {names[name]}")
                continue
            names[name] = item.path
        if number is not None and protocol is not None and name is not None:
            ports.append(ServicePort(number, protocol, name, target))
    return tuple(ports)


TLS_PROTOCOLS = frozenset({"TLS", "HTTPS"})


def _check_dynamic_dns(
    ck: DocChecker,
    fields: dict[str, Located],
    hosts: tuple[str, ...],
    ports: tuple[ServicePort, ...],
) -> None:
    """Istio's rules for DYNAMIC_DNS: wildcard hosts, resolved per request from the Host
    header or the SNI (here, as resolution NONE does: Envoy's dynamic forward proxy)."""
    for i, host in enumerate(hosts):
        if not host.startswith("*"):
            path = f"spec.hosts[{i}]"
            ck.error(
                Located(host, path, ck.lines.get(path, 0)),
                "host must be wildcarded for resolution mode DYNAMIC_DNS",
            )
    for key in ("addresses", "endpoints"):
        if key in fields:
            ck.error(fields[key], f"{key} cannot be set for resolution type DYNAMIC_DNS")
    for i, port in enumerate(ports):
        if port.protocol not in DYNAMIC_DNS_PROTOCOLS:
            path = f"spec.ports[{i}].protocol"
            ck.error(
                Located(port.protocol, path, ck.lines.get(path, 0)),
                "only HTTP, TLS, GRPC, and HTTP2 protocols are supported for resolution type "
                "DYNAMIC_DNS",
            )


def _check_original_destination(
    ck: DocChecker, ports: tuple[ServicePort, ...], addresses: tuple[str, ...]
) -> None:
    """Resolution NONE forwards to a connection's original destination. Here an HTTP
    request names it (its authority), a TLS one too (its SNI), and so does an entry's
    only address; a plain TCP connection to the sidecar names nothing else."""
    ips = [a for a in addresses if is_ip(a)]
    for i, port in enumerate(ports):
        path = f"spec.ports[{i}]"
        at = Located(None, path, ck.lines.get(path, 0))
        if port.sniffed:
            ck.warn(
                at,
                "resolution NONE: HTTP requests go where they name (their authority); a "
                "connection that is not HTTP names no destination, so none is listened for",
            )
        elif not port.is_http and port.protocol not in TLS_PROTOCOLS and len(ips) != 1:
            ck.not_yet(
                at,
                f"a {port.protocol} port with resolution NONE and not exactly one IP address "
                "(without traffic capture, a TCP connection to the sidecar names no original "
                "destination; give the entry its one address, or use STATIC or DNS)",
            )


def _parse_endpoints(
    ck: DocChecker,
    meta: ObjectMeta,
    at: Located,
    resolution: str,
    port_names: set[str],
) -> tuple[WorkloadEntry, ...]:
    items = ck.items(at)
    if items is None:
        return ()
    if resolution == "NONE" and items:
        ck.error(at, "resolution NONE takes no endpoints")
        return ()
    rule = _static_address_problem if resolution == "STATIC" else _dns_address_problem
    endpoints: list[WorkloadEntry] = []
    for i, item in enumerate(items):
        endpoint_meta = ObjectMeta(
            kind="WorkloadEntry",
            name=f"{meta.name}-endpoint-{i}",
            namespace=meta.namespace,
            source=Source(ck.file, item.line),
            labels=EMPTY_LABELS,
        )
        entry = parse_workload_spec(ck, endpoint_meta, item, address_rule=rule)
        if entry is None:
            continue
        if is_unix(entry.address) and len(port_names) != 1:
            path = child_path(item.path, "address")
            ck.error(
                Located(None, path, ck.lines.get(path, item.line)),
                "exactly 1 service port required for unix endpoints",
            )
        for port_name in entry.ports:
            if port_name not in port_names:
                path = child_path(child_path(item.path, "ports"), port_name)
                line = ck.lines.get(path, item.line)
                ck.warn(Located(None, path, line), "names no port of this ServiceEntry")
        endpoints.append(entry)
    return tuple(endpoints)
