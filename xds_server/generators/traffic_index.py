"""Lookups over the traffic kinds, computed once per push context.

Which DestinationRule applies to a host, which VirtualService routes a host for a
gateway (or the `mesh`), which Gateways select a workload, and the one fact about
a proxy that changes its routes: which `sourceLabels` selectors match it.
"""

from __future__ import annotations

from collections.abc import Mapping

from xds_server.galley.model import (
    EMPTY_LABELS,
    MeshConfig,
    ServiceEntry,
    WorkloadEntry,
    labels_match,
)
from xds_server.galley.model_traffic import (
    MESH_GATEWAY,
    DestinationRule,
    Gateway,
    TrafficPolicy,
    VirtualService,
)
from xds_server.generators.destination_rules import DestinationRuleIndex
from xds_server.generators.sidecar_scope import host_matches


class TrafficIndex:
    __slots__ = (
        "_by_host",
        "_selectors",
        "_services",
        "_wildcard_vs",
        "gateways",
        "mesh",
        "rules",
        "virtual_services",
    )

    def __init__(self, mesh: MeshConfig) -> None:
        self.mesh = mesh
        self.virtual_services = mesh.virtual_services
        self.gateways = mesh.gateways
        self._services: dict[str, ServiceEntry] = {}
        for se in mesh.service_entries:
            for host in se.hosts:
                self._services.setdefault(host.lower(), se)
        self.rules = DestinationRuleIndex(mesh.destination_rules, mesh.root_namespace)
        # Exact hosts are looked up, not scanned: a lookup per service per proxy over
        # 1,000 VirtualServices was most of an unscoped build.
        self._by_host: dict[str, list[VirtualService]] = {}
        self._wildcard_vs: list[VirtualService] = []
        for vs in mesh.virtual_services:
            if any(p.startswith("*") for p in vs.hosts):
                self._wildcard_vs.append(vs)
            for pattern in vs.hosts:
                if not pattern.startswith("*"):
                    self._by_host.setdefault(pattern, []).append(vs)
        selectors: list[Mapping[str, str]] = []
        for vs in mesh.virtual_services:
            labels = [m.source_labels for r in vs.http for m in r.match]
            labels += [m.source_labels for r in vs.tcp for m in r.match]
            labels += [m.source_labels for r in vs.tls for m in r.match]
            for selector in labels:
                if selector is not None and selector not in selectors:
                    selectors.append(selector)
        self._selectors = tuple(selectors)

    def service(self, host: str) -> ServiceEntry | None:
        return self._services.get(host.lower())

    def service_ports(self, host: str) -> tuple[int, ...]:
        service = self.service(host)
        return tuple(p.number for p in service.ports) if service is not None else ()

    # --- DestinationRule ----------------------------------------------------

    def rule(self, host: str) -> DestinationRule | None:
        """The rule for `host` as its service's own namespace sees it (no selector)."""
        service = self.service(host)
        namespace = service.meta.namespace if service is not None else self.mesh.root_namespace
        return self.rules.lookup(host, namespace, namespace, EMPTY_LABELS)

    def rule_for(
        self, host: str, proxy_namespace: str, service_namespace: str, labels: Mapping[str, str]
    ) -> DestinationRule | None:
        """The rule a proxy in `proxy_namespace` with `labels` uses (destination_rules)."""
        return self.rules.lookup(host, proxy_namespace, service_namespace, labels)

    def policy(self, host: str, port: int, subset: str = "") -> TrafficPolicy | None:
        rule = self.rule(host)
        return None if rule is None else rule.policy(port, subset)

    # --- VirtualService -----------------------------------------------------

    def virtual_service(
        self, host: str, namespace: str, gateway: str = MESH_GATEWAY
    ) -> VirtualService | None:
        """The VirtualService routing `host` for `gateway`, visible from `namespace`.

        An exact host beats a wildcard; among wildcards the longest wins (Istio).
        """
        host = host.lower()
        for vs in self._by_host.get(host, ()):  # in mesh order: the first exact one wins
            if gateway in vs.gateways and _exported(vs, namespace):
                return vs
        best: tuple[int, VirtualService] | None = None
        for vs in self._wildcard_vs:
            if gateway not in vs.gateways or not _exported(vs, namespace):
                continue
            for pattern in vs.hosts:
                if pattern.startswith("*") and host_matches(pattern, host):
                    score = len(pattern)
                    if best is None or score > best[0]:
                        best = (score, vs)
        return None if best is None else best[1]

    def bound_to(self, gateway: str, namespace: str | None = None) -> tuple[VirtualService, ...]:
        """The VirtualServices bound to `gateway` (delegates never are), in mesh order;
        with `namespace`, only those exported to it (Istio's VirtualServicesForGateway)."""
        return tuple(
            vs
            for vs in self.virtual_services
            if gateway in vs.gateways
            and not vs.is_delegate
            and (namespace is None or vs.exported_to(namespace))
        )

    def source_key(self, labels: Mapping[str, str]) -> tuple[bool, ...]:
        """Which `sourceLabels` selectors match a proxy: proxies with equal keys share routes."""
        return tuple(labels_match(s, labels) for s in self._selectors)

    # --- Gateway ------------------------------------------------------------

    def gateways_for(self, workload: WorkloadEntry) -> tuple[Gateway, ...]:
        return tuple(g for g in self.gateways if g.selects(workload.labels))


def _exported(vs: VirtualService, namespace: str) -> bool:
    return vs.exported_to(namespace)


def service_port(service: ServiceEntry, wanted: int | None, listener_port: int) -> int:
    """The port a destination means: as given, else the listener's, else the only one."""
    numbers = sorted(p.number for p in service.ports)
    if wanted is not None:
        return wanted
    if listener_port in numbers:
        return listener_port
    return numbers[0] if numbers else listener_port
