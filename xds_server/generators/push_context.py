"""The push context: everything the generators need, computed once per config change.

`PushContext.build(mesh)` resolves the model into plans (which endpoints back each
service port, which services each visibility scope sees, which domains each virtual
host owns, which inbound listeners each proxy needs) and records every conflict it
had to settle. The per-type generators only turn plans into protobufs, memoizing
each resource in the context so that proxies sharing a scope share the very same
message objects (the cache serializes each object once, by identity).
"""

from __future__ import annotations

import functools
import ipaddress
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from google.protobuf.message import Message

from xds_server.galley.model import (
    MeshConfig,
    ObjectMeta,
    ServiceEntry,
    ServicePort,
    Sidecar,
    WorkloadEntry,
    labels_match,
)
from xds_server.galley.model_traffic import (
    ConnectionPool,
    DestinationRule,
    Gateway,
    ServerTLS,
    TrafficPolicy,
)
from xds_server.galley.names import is_unix
from xds_server.generators import naming
from xds_server.generators.frozen import Frozen
from xds_server.generators.sidecar_scope import (
    egress_allows,
    egress_namespaces,
    exported_to,
    namespace_default_conflicts,
    select_sidecar,
)
from xds_server.generators.traffic_index import TrafficIndex

T = TypeVar("T")
M = TypeVar("M", bound=Message)

DNS_RESOLUTIONS = frozenset({"DNS", "DNS_ROUND_ROBIN"})
TLS_PROTOCOLS = frozenset({"TLS", "HTTPS"})


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One backend of one service port."""

    address: str
    port: int
    workload: WorkloadEntry


# eq=False: plans are compared and hashed by identity, so they can key the memo.
@dataclass(frozen=True, slots=True, eq=False)
class OutboundService:
    """One (ServiceEntry host, port): one outbound cluster."""

    service: ServiceEntry
    host: str
    port: ServicePort
    cluster_name: str
    endpoints: tuple[Endpoint, ...]  # sorted, deduplicated by (address, port)
    subset: str = ""  # a DestinationRule subset: `outbound|9080|v1|reviews...`
    policy: TrafficPolicy | None = None  # the DestinationRule's, for this port and subset
    parent: OutboundService | None = None  # a subset's: the whole service port
    rule: DestinationRule | None = None  # the rule the policy comes from (as merged)

    @property
    def uses_eds(self) -> bool:
        return self.service.resolution not in DNS_RESOLUTIONS

    @property
    def forwards(self) -> bool:
        """To where each request says (Istio's ORIGINAL_DST; see generators.passthrough):
        HTTP ports (the authority) and TLS ports (the SNI) of resolution NONE entries
        and of PASSTHROUGH rules. Gateways load-balance over the endpoints (Istio)."""
        if not (self.port.carries_http or self.port.protocol in TLS_PROTOCOLS):
            return False
        if self.service.resolution in ("NONE", "DYNAMIC_DNS"):
            return True
        return self.policy is not None and self.policy.load_balancer == "PASSTHROUGH"

    def uses_eds_for(self, *, sidecar: bool) -> bool:
        return self.uses_eds and not (sidecar and self.forwards)


@dataclass(frozen=True, slots=True)
class VirtualHostPlan:
    name: str
    cluster: str
    domains: tuple[str, ...]
    host: str = ""
    port: int = 0
    # The DestinationRule policy of the cluster, as this scope sees it (consistentHash
    # needs the route's half).
    policy: TrafficPolicy | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True, eq=False)
class SidecarScope:
    """What proxies of one namespace under one Sidecar see; shared by all of them."""

    namespace: str
    sidecar: Sidecar | None
    services: tuple[OutboundService, ...]  # sorted by (namespace, name, host, port)
    virtual_hosts: tuple[VirtualHostPlan, ...]


@dataclass(frozen=True, slots=True)
class InboundPlan:
    """One inbound listener and the cluster behind it (hashable: equal plans share output)."""

    listener_name: str
    bind: str
    port: int
    protocol: str
    cluster_name: str
    upstream_host: str
    upstream_port: int
    # The Sidecar's connectionPool for the port (or its inboundConnectionPool).
    connection_pool: ConnectionPool | None = None
    # TLS the listener ends with the user's certificate (a Sidecar's ingress tls);
    # `protocol` is then what is inside it (HTTPS -> HTTP, TLS -> TCP, as Istio).
    tls: ServerTLS | None = None


@dataclass(frozen=True, slots=True, eq=False)
class Proxy:
    workload: WorkloadEntry
    namespace: str
    sidecar: Sidecar | None
    scope: SidecarScope
    inbound: tuple[InboundPlan, ...]
    # Gateways selecting this workload: it is then a gateway proxy, not a sidecar.
    gateways: tuple[Gateway, ...] = ()

    @property
    def node_id(self) -> str:
        return self.workload.proxy_id

    @property
    def address(self) -> str:
        return self.workload.address

    @property
    def egress_ports(self) -> set[int]:
        """The ports its Sidecar's egress listeners take on the workload's own address."""
        listeners = self.sidecar.egress if self.sidecar else ()
        return {
            listener.port.number
            for listener in listeners
            if listener.port is not None and (listener.bind or self.address) == self.address
        }


class PushContext:
    """Immutable plans for one MeshConfig plus a memo of the resources built from them."""

    __slots__ = ("_memo", "_proxies", "conflicts", "mesh", "traffic")

    def __init__(
        self,
        mesh: MeshConfig,
        proxies: dict[str, Proxy],
        conflicts: list[str],
        traffic: TrafficIndex | None = None,
    ) -> None:
        self.mesh = mesh
        self.traffic = traffic or TrafficIndex(mesh)
        self.conflicts = conflicts
        self._proxies = proxies
        self._memo: dict[Hashable, object] = {}

    @classmethod
    def build(cls, mesh: MeshConfig) -> PushContext:
        return _Builder(mesh).build()

    def proxy(self, node_id: str) -> Proxy | None:
        return self._proxies.get(node_id)

    @property
    def proxies(self) -> tuple[Proxy, ...]:
        return tuple(self._proxies[k] for k in sorted(self._proxies))

    def shared(self, key: Hashable, factory: Callable[[], M]) -> Frozen[M]:
        """The resource built for `key`, read-only: it may be handed to many proxies."""
        try:
            return self._memo[key]  # type: ignore[return-value]
        except KeyError:
            return self._memo.setdefault(key, Frozen(factory()))  # type: ignore[return-value]

    def memoize(self, key: Hashable, factory: Callable[[], T]) -> T:
        """The object built for `key`, building it on first use.

        setdefault keeps one winner even if two threads race on the same key.
        """
        try:
            return self._memo[key]  # type: ignore[return-value]
        except KeyError:
            return self._memo.setdefault(key, factory())  # type: ignore[return-value]


def resolve_port(workload: WorkloadEntry, port: ServicePort) -> int:
    """Where `workload` serves `port`: its named port, else targetPort, else the number."""
    return workload.ports.get(port.name) or port.target_port or port.number


@functools.lru_cache(maxsize=1 << 16)
def is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def _service_order(se: ServiceEntry) -> tuple[str, str]:
    return (se.meta.namespace, se.meta.name)


class _Builder:
    """Computes every plan of a PushContext; lives only during `build`."""

    def __init__(self, mesh: MeshConfig) -> None:
        self.mesh = mesh
        self.conflicts: list[str] = []
        self._reported: set[str] = set()
        self.services = sorted(mesh.service_entries, key=_service_order)
        # Indexes so that matching workloads and services is not services x workloads.
        self._rank = {id(se): i for i, se in enumerate(self.services)}
        self.inline_by_address: dict[str, list[tuple[ServiceEntry, WorkloadEntry]]] = defaultdict(
            list
        )
        for se in self.services:
            for ep in se.endpoints:
                self.inline_by_address[ep.address].append((se, ep))
        self.workloads_by_ns: dict[str, list[WorkloadEntry]] = defaultdict(list)
        # (namespace, label, value) -> workloads: a selector looks only at those with
        # its first label, not at every workload of the namespace.
        self.workloads_by_label: dict[tuple[str, str, str], list[WorkloadEntry]] = defaultdict(list)
        for we in mesh.workload_entries:
            self.workloads_by_ns[we.meta.namespace].append(we)
            for label in we.labels.items():
                self.workloads_by_label[(we.meta.namespace, *label)].append(we)
        # id(workload) -> the services whose selector picks it (filled with `outbound`).
        self.selected_by: dict[int, list[ServiceEntry]] = defaultdict(list)
        self.sidecars: dict[str, list[Sidecar]] = defaultdict(list)
        for sc in sorted(mesh.sidecars, key=lambda s: (s.meta.namespace, s.meta.name)):
            self.sidecars[sc.meta.namespace].append(sc)
        self.scopes: dict[tuple[str, str, tuple[str, ...]], SidecarScope] = {}
        # (service, host, the workloads backing it), in service order.
        self.entries: list[tuple[ServiceEntry, str, list[WorkloadEntry]]] = []
        self.entries_by_ns: dict[str, list[tuple[ServiceEntry, str, list[WorkloadEntry]]]] = (
            defaultdict(list)
        )
        # The plans of one (service, host) under one DestinationRule (rules can differ
        # between namespaces: exportTo; and between workloads: workloadSelector).
        self._plans: dict[tuple[int, str, int], list[OutboundService]] = {}
        self.traffic = TrafficIndex(mesh)

    def build(self) -> PushContext:
        for namespace, sidecars in sorted(self.sidecars.items()):
            message = namespace_default_conflicts(sidecars)
            if message:
                self.conflicts.append(f"namespace {namespace}: {message}")
        self._outbound_entries()
        proxies: dict[str, Proxy] = {}
        for we in sorted(self.mesh.workload_entries, key=lambda w: (w.meta.namespace, w.meta.name)):
            if we.proxy_id in proxies:
                self._conflict(f"workload {we.meta.key}: duplicate WorkloadEntry ignored")
                continue
            if not is_ip(we.address):
                # Listeners bind the workload's address; a hostname would get LDS NACKed.
                self._conflict(
                    f"workload {we.meta.key}: address {we.address!r} is not an IP; no sidecar"
                )
                continue
            gateways = self.traffic.gateways_for(we)
            # Istio: Sidecar resources shape sidecars; a gateway sees every exported service.
            sidecar = (
                None
                if gateways
                else select_sidecar(we, self.sidecars, self.mesh.root_namespace, self.conflicts)
            )
            proxies[we.proxy_id] = Proxy(
                workload=we,
                namespace=we.meta.namespace,
                sidecar=sidecar,
                scope=self._scope(we, sidecar),
                inbound=() if gateways else self._inbound(we, sidecar),
                gateways=gateways,
            )
        return PushContext(self.mesh, proxies, self.conflicts, self.traffic)

    # --- outbound: services, endpoints, visibility, domains -----------------

    def _outbound_entries(self) -> None:
        for se in self.services:
            backing = self._selected(se)
            for we in backing:
                self.selected_by[id(we)].append(se)
            backing.extend(se.endpoints)
            for host in sorted(se.hosts):
                entry = (se, host, backing)
                self.entries.append(entry)
                self.entries_by_ns[se.meta.namespace].append(entry)

    def _plans_for(
        self,
        se: ServiceEntry,
        host: str,
        backing: list[WorkloadEntry],
        rule: DestinationRule | None,
    ) -> list[OutboundService]:
        """The clusters of one host of `se` under `rule`: one per port, and one per
        port and subset (every subset, routed to or not, as Istio)."""
        key = (id(se), host, id(rule))
        found = self._plans.get(key)
        if found is not None:
            return found
        plans: list[OutboundService] = []
        for port in sorted(se.ports, key=lambda p: p.number):
            endpoints = self._endpoints(se, port, backing)
            if se.resolution == "NONE" and not endpoints and _tcp_only(port):
                endpoints = _original_destination(se, port)
            whole = OutboundService(
                service=se,
                host=host,
                port=port,
                cluster_name=naming.outbound_cluster(port.number, host),
                endpoints=endpoints,
                policy=rule.policy(port.number) if rule else None,
                rule=rule,
            )
            plans.append(whole)
            if rule is None:
                continue
            for subset in rule.subsets:
                chosen = [w for w in backing if labels_match(subset.labels, w.labels)]
                plans.append(
                    OutboundService(
                        service=se,
                        host=host,
                        port=port,
                        cluster_name=naming.outbound_cluster(port.number, host, subset.name),
                        endpoints=self._endpoints(se, port, chosen),
                        subset=subset.name,
                        policy=rule.policy(port.number, subset.name),
                        parent=whole,
                        rule=rule,
                    )
                )
        self._plans[key] = plans
        return plans

    def _selected(self, se: ServiceEntry) -> list[WorkloadEntry]:
        """The workloads of the service's namespace its selector picks, in mesh order."""
        selector = se.workload_selector
        if selector is None:
            return []
        if not selector:  # an empty selector selects every workload (labels_match)
            return list(self.workloads_by_ns.get(se.meta.namespace, ()))
        first = next(iter(selector.items()))
        candidates = self.workloads_by_label.get((se.meta.namespace, *first), ())
        return [we for we in candidates if labels_match(selector, we.labels)]

    def _endpoints(
        self, se: ServiceEntry, port: ServicePort, backing: list[WorkloadEntry]
    ) -> tuple[Endpoint, ...]:
        found: dict[tuple[str, int], Endpoint] = {}
        for we in backing:
            if not we.address or not we.healthy:  # an unhealthy workload gets no traffic
                continue
            if se.resolution not in DNS_RESOLUTIONS and not (
                is_ip(we.address) or is_unix(we.address)
            ):
                # Envoy NACKs a whole EDS response for one hostname: drop just this one.
                self.conflicts.append(
                    f"service {se.meta.key}: endpoint {we.meta.key} address {we.address!r} "
                    f"is not an IP (resolution {se.resolution}); skipped"
                )
                continue
            endpoint = Endpoint(we.address, resolve_port(we, port), we)
            found.setdefault((endpoint.address, endpoint.port), endpoint)
        if se.resolution == "DNS_ROUND_ROBIN" and len(found) > 1:
            self._conflict(
                f"service {se.meta.key}: DNS_ROUND_ROBIN (LOGICAL_DNS) takes one endpoint; "
                f"{len(found)} given, using the first"
            )
        return tuple(sorted(found.values(), key=lambda e: (e.address, e.port, e.workload.meta.key)))

    def _scope(self, we: WorkloadEntry, sidecar: Sidecar | None) -> SidecarScope:
        namespace = we.meta.namespace
        # Workloads a DestinationRule's workloadSelector picks see other rules.
        selected_by = tuple(
            r.meta.key
            for r in self.traffic.rules.selectors(namespace)
            if labels_match(r.workload_selector, we.labels)
        )
        key = (namespace, sidecar.meta.key if sidecar else "", selected_by)
        scope = self.scopes.get(key)
        if scope is None:
            services = self._visible(namespace, sidecar, we.labels)
            scope = SidecarScope(
                namespace=namespace,
                sidecar=sidecar,
                services=services,
                virtual_hosts=self._virtual_hosts(namespace, services),
            )
            self.scopes[key] = scope
        return scope

    def _visible(
        self, namespace: str, sidecar: Sidecar | None, labels: Mapping[str, str]
    ) -> tuple[OutboundService, ...]:
        chosen: dict[str, OutboundService] = {}
        namespaces = egress_namespaces(sidecar, namespace)
        Entry = tuple[ServiceEntry, str, list[WorkloadEntry]]
        if namespaces is None:
            candidates: Iterable[Entry] = self.entries
        else:  # entries are in namespace order, and so is this
            by_ns = self.entries_by_ns
            candidates = (e for ns in sorted(namespaces) for e in by_ns.get(ns, ()))
        for se, host, backing in candidates:
            if not exported_to(se, namespace):
                continue
            if not egress_allows(sidecar, namespace, se, host):
                continue
            rule = self.traffic.rule_for(host, namespace, se.meta.namespace, labels)
            for plan in self._plans_for(se, host, backing, rule):
                first = chosen.setdefault(plan.cluster_name, plan)
                if first is not plan and first.service is not se:
                    self._conflict(
                        f"cluster {plan.cluster_name}: defined by {first.service.meta.key} "
                        f"and {se.meta.key}; using {first.service.meta.key}"
                    )
        return tuple(chosen.values())

    def _virtual_hosts(
        self, namespace: str, services: tuple[OutboundService, ...]
    ) -> tuple[VirtualHostPlan, ...]:
        owner: dict[str, str] = {}  # domain -> vhost name that claimed it first
        plans: list[VirtualHostPlan] = []
        for svc in services:
            if not svc.port.carries_http or svc.subset:
                continue
            name = naming.vhost_name(svc.host, svc.port.number)
            names = list(naming.host_aliases(svc.host, namespace))
            # VIPs are names too: an app may address the service by its virtual IP. They
            # go with the first host only; every host of the entry would claim them.
            if svc.host == min(svc.service.hosts):
                names += [a for a in svc.service.addresses if "/" not in a]
            candidates = [f"{n}:{svc.port.number}" for n in names]
            if _takes_portless(svc):
                candidates += names
            domains: list[str] = []
            for domain in (d.lower() for d in candidates):
                holder = owner.setdefault(domain, name)
                if holder == name:
                    if domain not in domains:
                        domains.append(domain)
                else:
                    self._conflict(
                        f"namespace {namespace}: domain {domain!r} of {name} "
                        f"({svc.service.meta.key}) already belongs to {holder}; dropped"
                    )
            if domains:
                plans.append(
                    VirtualHostPlan(
                        name,
                        svc.cluster_name,
                        tuple(domains),
                        svc.host,
                        svc.port.number,
                        svc.policy,
                    )
                )
            else:
                self._conflict(f"namespace {namespace}: virtual host {name} has no domain left")
        return tuple(plans)

    # --- inbound -------------------------------------------------------------

    def _inbound(self, we: WorkloadEntry, sidecar: Sidecar | None) -> tuple[InboundPlan, ...]:
        plans = (
            self._ingress(we, sidecar)
            if sidecar and sidecar.ingress
            else self._derived(we, sidecar.inbound_connection_pool if sidecar else None)
        )
        by_port: dict[int, InboundPlan] = {}
        for plan in plans:
            if plan.port == naming.OUTBOUND_HTTP_PORT and plan.bind == we.address:
                self._conflict(f"workload {we.meta.key}: inbound port {plan.port} is reserved")
                continue
            first = by_port.setdefault(plan.port, plan)
            if first is not plan and first != plan:
                self._conflict(
                    f"workload {we.meta.key}: inbound port {plan.port} declared twice "
                    f"({first.protocol} to {first.upstream_host}:{first.upstream_port}, "
                    f"{plan.protocol} to {plan.upstream_host}:{plan.upstream_port}); "
                    "using the first"
                )
        return tuple(by_port[p] for p in sorted(by_port))

    def _derived(self, we: WorkloadEntry, pool: ConnectionPool | None) -> list[InboundPlan]:
        plans: list[InboundPlan] = []
        # The services that select this workload, or list it inline, in service order.
        specs: dict[int, tuple[ServiceEntry, WorkloadEntry]] = {}
        for se in self.selected_by.get(id(we), ()):
            specs[id(se)] = (se, we)
        for se, ep in self.inline_by_address.get(we.address, ()):
            specs.setdefault(id(se), (se, ep))  # the first inline endpoint at this address
        for se, spec in sorted(specs.values(), key=lambda pair: self._rank[id(pair[0])]):
            for port in sorted(se.ports, key=lambda p: p.number):
                target = resolve_port(spec, port)
                plans.append(
                    InboundPlan(
                        listener_name=naming.listener_name(we.address, target),
                        bind=we.address,
                        port=target,
                        protocol=port.protocol,
                        cluster_name=naming.inbound_cluster(target),
                        upstream_host="127.0.0.1",
                        upstream_port=target,
                        connection_pool=pool,
                    )
                )
        return plans

    def _ingress(self, we: WorkloadEntry, sidecar: Sidecar) -> list[InboundPlan]:
        plans: list[InboundPlan] = []
        for ingress in sorted(sidecar.ingress, key=lambda i: i.port.number):
            number = ingress.port.number
            bind = ingress.bind or we.address
            if not is_ip(bind):
                self._conflict(f"sidecar {sidecar.meta.key}: ingress bind {bind!r} is not an IP")
                continue
            host, port = "127.0.0.1", number
            if is_unix(ingress.default_endpoint):  # the app's unix socket
                host, port = ingress.default_endpoint, 0
            elif ingress.default_endpoint:
                parsed = _parse_host_port(ingress.default_endpoint)
                if parsed is None:
                    self._conflict(
                        f"sidecar {sidecar.meta.key}: defaultEndpoint "
                        f"{ingress.default_endpoint!r} is not host:port; using {host}:{port}"
                    )
                else:
                    host, port = parsed
                    # 0.0.0.0 means "the workload's own address" (Istio: the pod IP).
                    if host == "0.0.0.0":
                        host = we.address
            if (host, port) == (bind, number):
                self._conflict(
                    f"sidecar {sidecar.meta.key}: ingress {bind}:{number} forwards to itself"
                )
            protocol = ingress.port.protocol
            if ingress.tls is not None:  # what the ended TLS carries
                protocol = "HTTP" if protocol == "HTTPS" else "TCP"
            plans.append(
                InboundPlan(
                    listener_name=naming.listener_name(bind, number),
                    bind=bind,
                    port=number,
                    protocol=protocol,
                    cluster_name=naming.inbound_cluster(number),
                    upstream_host=host,
                    upstream_port=port,
                    connection_pool=ingress.connection_pool or sidecar.inbound_connection_pool,
                    tls=ingress.tls,
                )
            )
        return plans

    def _conflict(self, message: str) -> None:
        # Scopes repeat the same service pairs: report each conflict once.
        if message not in self._reported:
            self._reported.add(message)
            self.conflicts.append(message)


def _tcp_only(port: ServicePort) -> bool:
    return not port.carries_http and port.protocol not in TLS_PROTOCOLS


def _original_destination(se: ServiceEntry, port: ServicePort) -> tuple[Endpoint, ...]:
    """A TCP port of a resolution NONE entry: the connection names no destination (no
    iptables), so it goes to the entry's one address, where the app would have gone
    (Galley refuses such a port without exactly one address)."""
    ips = [a for a in se.addresses if is_ip(a)]
    if len(ips) != 1:
        return ()
    name = f"{se.meta.name}-address"
    meta = ObjectMeta("WorkloadEntry", name, se.meta.namespace, se.meta.source)
    target = WorkloadEntry(meta=meta, address=ips[0])
    return (Endpoint(ips[0], port.target_port or port.number, target),)


def _takes_portless(svc: OutboundService) -> bool:
    """Port-less names go on port 80's vhost, or on the only HTTP port's."""
    http_ports = [p.number for p in svc.service.ports if p.carries_http]
    if naming.DEFAULT_HTTP_PORT in http_ports:
        return svc.port.number == naming.DEFAULT_HTTP_PORT
    return len(http_ports) == 1


def _parse_host_port(value: str) -> tuple[str, int] | None:
    host, colon, port = value.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host.strip("[]"), int(port)
