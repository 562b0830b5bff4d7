"""Traffic rules that need more than one document: hosts, subsets, gateways, conflicts.

Like `crosscheck`, each finding points at the field that is wrong, on the
document that is wrong. A route to a host no ServiceEntry declares, to a
subset no DestinationRule defines, or through a Gateway that does not exist
is an error: Istio would silently send 503s; pocketmesh refuses to push it.
"""

from __future__ import annotations

from collections.abc import Sequence

from .credentials import client_ca, find_secret
from .delegates import delegate_of, merge_route
from .documents import ParsedDoc
from .errors import ERROR, WARNING, ConfigError
from .model import ServiceEntry, Sidecar, WorkloadEntry, labels_match
from .model_traffic import (
    MESH_GATEWAY,
    Destination,
    DestinationRule,
    Gateway,
    GatewayServer,
    RouteDestination,
    TLSCredential,
    VirtualService,
    gateway_key,
)
from .pem import key_type

__all__ = ["check_traffic"]


def _has_tunnel(rule: DestinationRule) -> bool:
    policies = [rule.traffic_policy, *(s.traffic_policy for s in rule.subsets)]
    return any(p is not None and p.tunnel for p in policies)


def _has_proxy_protocol(rule: DestinationRule) -> bool:
    policies = [rule.traffic_policy, *(s.traffic_policy for s in rule.subsets)]
    return any(p is not None and p.proxy_protocol for p in policies)


def check_traffic(docs: Sequence[ParsedDoc]) -> tuple[list[ConfigError], list[ConfigError]]:
    checker = _Checker(docs)
    checker.run()
    return checker.errors, checker.warnings


class _Checker:
    def __init__(self, docs: Sequence[ParsedDoc]) -> None:
        self.docs = docs
        self.errors: list[ConfigError] = []
        self.warnings: list[ConfigError] = []
        self.services: dict[str, ServiceEntry] = {}
        for doc in docs:
            if isinstance(doc.resource, ServiceEntry):
                for host in doc.resource.hosts:
                    self.services.setdefault(host.lower(), doc.resource)
        self.workloads = [d.resource for d in docs if isinstance(d.resource, WorkloadEntry)]
        self.rules: dict[str, list[tuple[DestinationRule, ParsedDoc]]] = {}
        self.credentials = {
            d.resource.meta.key: d.resource for d in docs if isinstance(d.resource, TLSCredential)
        }
        self.gateways = {
            d.resource.meta.key: d.resource for d in docs if isinstance(d.resource, Gateway)
        }
        self.virtual_services = {
            d.resource.meta.key: d.resource for d in docs if isinstance(d.resource, VirtualService)
        }
        self.vs_docs = {
            d.resource.meta.key: d for d in docs if isinstance(d.resource, VirtualService)
        }
        self.delegated: set[str] = set()  # delegates some root names

    def run(self) -> None:
        for doc in self.docs:
            if isinstance(doc.resource, DestinationRule):
                self._destination_rule(doc, doc.resource)
        claimed: dict[tuple[str, str], ParsedDoc] = {}
        for doc in self.docs:
            if isinstance(doc.resource, VirtualService):
                self._virtual_service(doc, doc.resource, claimed)
            elif isinstance(doc.resource, Gateway):
                self._gateway(doc, doc.resource)
            elif isinstance(doc.resource, Sidecar) and doc.resource.egress_proxy is not None:
                self._egress_proxy(doc, doc.resource.egress_proxy)
        for key, vs in self.virtual_services.items():
            if vs.is_delegate and key not in self.delegated:
                self._finding(
                    self.vs_docs[key],
                    "spec.hosts",
                    "has no hosts, so it is a delegate, and no VirtualService delegates to "
                    "it: its routes apply nowhere",
                    WARNING,
                )

    def _gateway(self, doc: ParsedDoc, gateway: Gateway) -> None:
        """Istio reads credentialName from the gateway workload's namespace; pocketmesh
        also looks in the Gateway's own (`galley.credentials`)."""
        selected = [w for w in self.workloads if gateway.selects(w.labels)]
        if not selected:
            self._finding(doc, "spec.selector", "selects no WorkloadEntry", WARNING)
        namespaces = [*sorted({w.meta.namespace for w in selected}), gateway.meta.namespace]
        for server in gateway.servers:
            self._server_credentials(doc, server, namespaces)

    def _server_credentials(
        self, doc: ParsedDoc, server: GatewayServer, namespaces: list[str]
    ) -> None:
        tls = server.tls
        if tls is None or not tls.terminates:
            return
        base = f"spec.servers[{server.index}].tls"
        where = " or ".join(sorted(set(namespaces)))
        secrets = self.credentials.values()
        names = [c.credential_name for c in tls.certificates if c.credential_name]
        key_types: dict[str, str] = {}
        for i, name in enumerate(names):
            field = f"{base}.credentialNames[{i}]" if len(names) > 1 else f"{base}.credentialName"
            found = find_secret(secrets, name, namespaces)
            if found is None:
                self._finding(doc, field, f"no Secret {name!r} in namespace {where}")
            elif not found.has_key_pair:
                self._finding(
                    doc,
                    field,
                    f"Secret {found.meta.key} has no certificate and key (tls.crt/"
                    "tls.key or cert/key) to serve",
                )
            else:
                kind = key_type(found.cert_pem)
                first = key_types.setdefault(kind, name)
                if first != name:
                    self._finding(
                        doc,
                        field,
                        f"Envoy serves one certificate per key type, and Secret "
                        f"{first!r} is already {kind}",
                    )
        if not tls.verifies_clients or not names:
            return  # files: galley.tls_files reads them
        looked_for, holder = client_ca(secrets, tls, namespaces)
        if holder is None or not holder.ca_pem:
            field = (
                f"{base}.caCertCredentialName"
                if tls.ca_cert_credential_name
                else (f"{base}.credentialName" if len(names) < 2 else f"{base}.credentialNames[0]")
            )
            self._finding(
                doc,
                field,
                f"mode {tls.mode} verifies client certificates, and there is no client CA: no "
                f"Secret {looked_for!r} with ca.crt (or cacert) in namespace {where}"
                + ("" if tls.ca_cert_credential_name else f", nor a ca.crt in {names[0]!r}"),
            )

    def _finding(self, doc: ParsedDoc, field: str, message: str, severity: str = ERROR) -> None:
        assert doc.meta is not None
        line = doc.lines.get(field, doc.meta.source.line)
        finding = ConfigError(doc.file, line, doc.kind, doc.meta.key, field, message, severity)
        (self.errors if severity == ERROR else self.warnings).append(finding)

    def _where(self, doc: ParsedDoc, field: str) -> str:
        assert doc.meta is not None
        return f"{doc.file}:{doc.lines.get(field, doc.meta.source.line)}"

    # --- DestinationRule ----------------------------------------------------

    def _destination_rule(self, doc: ParsedDoc, rule: DestinationRule) -> None:
        self._credentials(doc, rule)
        earlier = self.rules.setdefault(rule.host, [])
        if any(other.meta.key == rule.meta.key for other, _ in earlier):
            return  # a duplicate name: crosscheck reports it
        self._merged_with(doc, rule, earlier)
        earlier.append((rule, doc))
        service = self.services.get(rule.host)
        if service is None:
            if not rule.host.startswith("*"):
                self._finding(
                    doc, "spec.host", f"no ServiceEntry declares host {rule.host!r}", WARNING
                )
            return
        sidecars = [  # every WorkloadEntry is a sidecar of the mesh
            w
            for w in self.workloads
            if w.meta.namespace == service.meta.namespace
            and labels_match(service.workload_selector, w.labels)
        ]
        backing = sidecars + list(service.endpoints)
        for i, subset in enumerate(rule.subsets):
            if subset.labels and not any(labels_match(subset.labels, w.labels) for w in backing):
                self._finding(
                    doc,
                    f"spec.subsets[{i}].labels",
                    f"subset {subset.name!r} selects no endpoint of {rule.host}",
                    WARNING,
                )
        if _has_tunnel(rule) and not self._carries_tcp(service):
            self._finding(
                doc,
                "spec.trafficPolicy.tunnel",
                f"{rule.host} has only HTTP ports and no VirtualService tcp or tls route goes "
                "to it: a tunnel applies to TCP and TLS routes only (as in Istio), so nothing "
                "uses it",
                WARNING,
            )
        if sidecars and _has_proxy_protocol(rule):
            self._finding(
                doc,
                "spec.trafficPolicy.proxyProtocol",
                f"{rule.host}'s endpoints include sidecars of the mesh "
                f"({', '.join(w.meta.key for w in sidecars[:3])}), which read no PROXY "
                "header: their connections will fail (meant for services outside the mesh)",
                WARNING,
            )
        ports = {p.number for p in service.ports}
        policy = rule.traffic_policy
        for number, _ in policy.port_level if policy is not None else ():
            if number not in ports:
                self._finding(
                    doc,
                    "spec.trafficPolicy.portLevelSettings",
                    f"port {number} is not a port of {rule.host}",
                    WARNING,
                )

    def _merged_with(
        self,
        doc: ParsedDoc,
        rule: DestinationRule,
        earlier: list[tuple[DestinationRule, ParsedDoc]],
    ) -> None:
        """Istio merges rules for one host seen in the same place (generators.
        destination_rules): say what of this one is then not used."""
        for other, other_doc in earlier:
            if other.meta.namespace != rule.meta.namespace:
                continue
            if (other.workload_selector is None) != (rule.workload_selector is None):
                continue
            if other.workload_selector is not None and dict(other.workload_selector) != dict(
                rule.workload_selector or {}
            ):
                continue
            if set(other.export_to) != set(rule.export_to):
                continue
            where = f"DestinationRule {other.meta.key} ({self._where(other_doc, 'spec.host')})"
            first, later = sorted((other, rule), key=lambda r: r.meta.name)
            if first.traffic_policy is not None and later.traffic_policy is not None:
                self._finding(
                    doc,
                    "spec.trafficPolicy",
                    f"{where} also sets a trafficPolicy for {rule.host!r}: Istio merges the "
                    f"rules and uses {first.meta.key}'s (the first)",
                    WARNING,
                )
            names = {s.name for s in other.subsets}
            for i, subset in enumerate(rule.subsets):
                if subset.name in names:
                    self._finding(
                        doc,
                        f"spec.subsets[{i}].name",
                        f"subset {subset.name!r} is also defined by {where}: Istio merges the "
                        f"rules and keeps {first.meta.key}'s",
                        WARNING,
                    )

    def _credentials(self, doc: ParsedDoc, rule: DestinationRule) -> None:
        """credentialName names a kubernetes.io/tls Secret of the rule's namespace; to
        verify the upstream it needs `ca.crt` (else the rule must skip verification)."""
        for tls in rule.tls_settings():
            if not tls.credential_name or not tls.originates:
                continue
            field = f"{tls.path}.credentialName"
            key = f"{rule.meta.namespace}/{tls.credential_name}"
            credential = self.credentials.get(key)
            if credential is None:
                self._finding(
                    doc,
                    field,
                    f"no Secret {tls.credential_name!r} of type kubernetes.io/tls in namespace "
                    f"{rule.meta.namespace}",
                )
            elif tls.mode == "MUTUAL" and not credential.has_key_pair:
                # An Opaque Secret may hold a CA alone: nothing to present as a client.
                self._finding(
                    doc,
                    field,
                    f"Secret {key} has no certificate and key (tls.crt/tls.key or cert/key) "
                    "to present: MUTUAL needs them",
                )
            elif not credential.ca_pem and not tls.insecure_skip_verify:
                self._finding(
                    doc,
                    field,
                    f"Secret {key} has no ca.crt to verify the upstream with: add one, or set "
                    "insecureSkipVerify: true",
                )

    # --- VirtualService -----------------------------------------------------

    def _virtual_service(
        self, doc: ParsedDoc, vs: VirtualService, claimed: dict[tuple[str, str], ParsedDoc]
    ) -> None:
        if not vs.is_delegate:
            for i, gateway in enumerate(vs.gateways):
                if gateway != MESH_GATEWAY and gateway not in self.gateways:
                    self._finding(doc, f"spec.gateways[{i}]", f"no Gateway {gateway}")
        for i, host in enumerate(vs.hosts):
            field = f"spec.hosts[{i}]"
            # Gateways merge the routes of every VirtualService for a host, as Istio
            # does; sidecars would take only one (Istio: the oldest): refused here.
            if MESH_GATEWAY in vs.gateways:
                earlier = claimed.setdefault((MESH_GATEWAY, host), doc)
                if earlier is not doc:
                    assert earlier.meta is not None
                    self._finding(
                        doc,
                        field,
                        f"host {host!r} on the sidecars (mesh) is already routed by "
                        f"VirtualService {earlier.meta.key} ({self._where(earlier, 'spec.hosts')})"
                        "; Istio would use the older one and ignore the other, pocketmesh "
                        "does not merge them for sidecars: put the rules in one",
                    )
            if vs.gateways == (MESH_GATEWAY,) and not self._known(host):
                self._finding(
                    doc,
                    field,
                    f"no ServiceEntry declares {host!r}: the rule never applies",
                    WARNING,
                )
        for i, route in enumerate(vs.http):
            base = f"spec.http[{i}]"
            for j, dest in enumerate(route.route):
                self._destination(doc, dest.destination, f"{base}.route[{j}].destination")
            if route.mirror is not None:
                self._destination(doc, route.mirror, f"{base}.mirror")
            for j, (mirror, _) in enumerate(route.mirrors):
                self._destination(doc, mirror, f"{base}.mirrors[{j}].destination")
            if route.delegate is not None:
                self._delegate(doc, vs, i)
            if vs.is_delegate:
                continue  # a delegate's gateways are the root's
            for j, match in enumerate(route.match):
                self._match_gateways(doc, vs, match.gateways, f"{base}.match[{j}]")
        for i, tcp in enumerate(vs.tcp):
            self._destinations(doc, tcp.route, f"spec.tcp[{i}]")
            for j, l4 in enumerate(tcp.match):
                self._match_gateways(doc, vs, l4.gateways, f"spec.tcp[{i}].match[{j}]")
        for i, tls in enumerate(vs.tls):
            self._destinations(doc, tls.route, f"spec.tls[{i}]")
            for j, sni in enumerate(tls.match):
                self._match_gateways(doc, vs, sni.gateways, f"spec.tls[{i}].match[{j}]")

    def _destinations(
        self, doc: ParsedDoc, routes: tuple[RouteDestination, ...], base: str
    ) -> None:
        for j, dest in enumerate(routes):
            self._destination(doc, dest.destination, f"{base}.route[{j}].destination")

    def _match_gateways(
        self, doc: ParsedDoc, vs: VirtualService, gateways: tuple[str, ...], base: str
    ) -> None:
        for k, gateway in enumerate(gateways):
            if gateway_key(gateway, vs.meta.namespace) not in vs.gateways:
                self._finding(doc, f"{base}.gateways[{k}]", f"{gateway!r} is not in spec.gateways")

    def _delegate(self, doc: ParsedDoc, root: VirtualService, index: int) -> None:
        """A root route's delegate must exist, have no hosts, and be exported to the root."""
        route = root.http[index]
        assert route.delegate is not None
        field = f"spec.http[{index}].delegate"
        key = route.delegate.key
        found = self.virtual_services.get(key)
        if root.is_delegate:
            return  # refused by the parser (one level only)
        if found is None:
            self._finding(doc, f"{field}.name", f"no VirtualService {key} to delegate to")
            return
        self.delegated.add(key)
        if not found.is_delegate:
            self._finding(
                doc,
                f"{field}.name",
                f"VirtualService {key} has hosts, so it is a root, not a delegate "
                f"({self._where(self.vs_docs[key], 'spec.hosts')}): a delegate has no hosts",
            )
            return
        if delegate_of(root, route, self.virtual_services) is None:
            self._finding(
                doc,
                f"{field}.name",
                f"VirtualService {key} is not exported to namespace {root.meta.namespace} "
                "(its exportTo)",
            )
            return
        delegate_doc = self.vs_docs[key]
        for j, sub in enumerate(found.http):
            merged = merge_route(route, root.meta.namespace, sub, found.meta.namespace)
            if merged is None:
                self._finding(
                    delegate_doc,
                    f"spec.http[{j}].match",
                    f"fits within no match of {root.meta.key} spec.http[{index}] "
                    f"({self._where(doc, f'spec.http[{index}]')}), which delegates here: "
                    "Istio drops this route there, and so does pocketmesh",
                    WARNING,
                )

    def _carries_tcp(self, service: ServiceEntry) -> bool:
        """Some TCP or TLS route can reach the service: a port that is not HTTP, or a
        VirtualService tcp/tls route to one of its hosts."""
        if any(not p.is_http for p in service.ports):  # TCP, TLS, or sniffed
            return True
        hosts = {h.lower() for h in service.hosts}
        routes = [d for vs in self.virtual_services.values() for r in vs.tcp for d in r.route] + [
            d for vs in self.virtual_services.values() for r in vs.tls for d in r.route
        ]
        return any(d.destination.host in hosts for d in routes)

    def _egress_proxy(self, doc: ParsedDoc, dest: Destination) -> None:
        field = "spec.outboundTrafficPolicy.egressProxy"
        self._destination(doc, dest, field)
        service = self.services.get(dest.host)
        if service is not None and dest.port is None and len(service.ports) > 1:
            ports = ", ".join(str(p.number) for p in service.ports)
            self._finding(
                doc, f"{field}.port", f"{dest.host} has several ports ({ports}): name one"
            )

    def _known(self, host: str) -> bool:
        if not host.startswith("*"):
            return host in self.services
        suffix = host[1:]
        return any(h.endswith(suffix) or host == "*" for h in self.services)

    def _destination(self, doc: ParsedDoc, dest: Destination, field: str) -> None:
        service = self.services.get(dest.host)
        if service is None:
            self._finding(doc, f"{field}.host", f"no ServiceEntry declares host {dest.host!r}")
            return
        ports = sorted(p.number for p in service.ports)
        if dest.port is not None and dest.port not in ports:
            self._finding(
                doc,
                f"{field}.port.number",
                f"{dest.host} has no port {dest.port} (ports: {', '.join(map(str, ports))})",
            )
        if dest.subset:
            rules = self.rules.get(dest.host)
            if not rules:
                self._finding(
                    doc,
                    f"{field}.subset",
                    f"subset {dest.subset!r}: no DestinationRule defines subsets for {dest.host}",
                )
            elif all(rule.subset(dest.subset) is None for rule, _ in rules):
                names = ", ".join(s.name for r, _ in rules for s in r.subsets) or "none"
                keys = ", ".join(r.meta.key for r, _ in rules)
                self._finding(
                    doc,
                    f"{field}.subset",
                    f"DestinationRule {keys} defines no subset {dest.subset!r} (subsets: {names})",
                )
