"""Which proxies a config change can reach (Istio's `proxy_dependencies.go`).

A rebuild generates the views of the proxies whose inputs changed and carries every
other view over from the previous snapshot (cache.snapshot). A sidecar's output is a
function of its own WorkloadEntry; the services its SidecarScope sees, with their
endpoints, DestinationRules and VirtualServices (and the services those route to); the
services that select it (its inbound listeners); and mesh-wide policy.

How far a change to each `MeshConfig` field reaches is declared in the registry of
kinds (`galley.registry`: every proxy / the proxies that see its hosts / the
workload itself); this module only follows those reaches. A field nobody classified
rebuilds every proxy (Istio's rule: "empty changes means all"), as do broad kinds
(Sidecar, Gateway, PeerAuthentication, AuthorizationPolicy, Secrets), control-plane
settings and wildcard hosts; gateway proxies are rebuilt on every change: their
routes reach hosts outside any scope. `affected_proxies` errs towards too many;
tests/cache/test_incremental.py holds it to the rule that matters: an incremental
build equals a full one.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Hashable, Iterable, Iterator
from typing import Any

from xds_server.galley.model import MeshConfig, ServiceEntry, WorkloadEntry, labels_match
from xds_server.galley.model_traffic import VirtualService
from xds_server.galley.registry import BY_FIELD, Reach, reach_of
from xds_server.generators.push_context import PushContext

_FIELDS: dict[type, tuple[str, ...]] = {}


def _mesh_fields(config_type: type) -> tuple[str, ...]:
    """Every field of the MeshConfig (type) in hand: a field added later is seen too."""
    names = _FIELDS.get(config_type)
    if names is None:
        names = _FIELDS[config_type] = tuple(f.name for f in dataclasses.fields(config_type))
    return names


class _Everything(Exception):
    """The change reaches every proxy."""


def affected_proxies(old: PushContext, new: PushContext) -> frozenset[str] | None:
    """Node ids whose view may differ between `old` and `new`; None means all of them."""
    try:
        return _Change(old, new).proxies()
    except _Everything:
        return None


class _Change:
    def __init__(self, old: PushContext, new: PushContext) -> None:
        self.old, self.new = old, new
        self.hosts: set[str] = set()  # hosts whose clusters, endpoints or routes changed
        self.nodes: set[str] = set()  # proxies changed themselves
        self.namespaces: set[str] = set()  # whose workloads' inbound may have changed
        self.addresses: set[str] = set()  # inline endpoints: inbound of the workload there
        self._by_namespace: dict[int, dict[str, list[ServiceEntry]]] = {}

    def proxies(self) -> frozenset[str]:
        a, b = self.old.mesh, self.new.mesh
        if a is b:
            return frozenset()
        if type(a) is not type(b):
            raise _Everything
        for name in _mesh_fields(type(a)):
            before, after = getattr(a, name), getattr(b, name)
            if before is after:
                continue
            reach = reach_of(name)
            if reach is None or reach is Reach.EVERY_PROXY:
                if before != after:
                    raise _Everything  # unclassified, or classified as reaching everyone
                continue
            for pair in _pairs(before, after):
                self._follow(name, reach, a, b, pair)
        self._through_routes((*a.virtual_services, *b.virtual_services))
        return frozenset(self._reached())

    def _follow(
        self, name: str, reach: Reach, a: MeshConfig, b: MeshConfig, pair: tuple[Any, Any]
    ) -> None:
        """One changed resource of MeshConfig field `name`, whose kind reaches `reach`."""
        if reach is Reach.WORKLOAD:
            for mesh, resource in zip((a, b), pair, strict=True):
                if resource is not None:
                    self._workload(mesh, resource)
            return
        hosts = BY_FIELD[name].hosts
        if hosts is None:
            raise _Everything  # a host-reaching kind that does not say its hosts
        for resource in _present(pair):
            self._hosts(hosts(resource))
            if isinstance(resource, ServiceEntry):
                self._service(resource)

    def _service(self, se: ServiceEntry) -> None:
        """Beyond its hosts: the workloads it selects serve its ports (their inbound)."""
        self.namespaces.add(se.meta.namespace)
        self.addresses.update(ep.address for ep in se.endpoints)

    def _workload(self, mesh: MeshConfig, we: WorkloadEntry) -> None:
        self.nodes.add(we.proxy_id)
        # It backs the services that select it (same namespace, as in Istio): their
        # endpoints, and their clusters' auto-mTLS, follow its address and labels.
        for se in self._services_in(mesh, we.meta.namespace):
            if labels_match(se.workload_selector, we.labels):
                self._hosts(se.hosts)

    def _services_in(self, mesh: MeshConfig, namespace: str) -> list[ServiceEntry]:
        index = self._by_namespace.get(id(mesh))
        if index is None:
            index = self._by_namespace[id(mesh)] = defaultdict(list)
            for se in mesh.service_entries:
                index[se.meta.namespace].append(se)
        return index.get(namespace, [])

    def _hosts(self, hosts: Iterable[str]) -> None:
        for host in hosts:
            if "*" in host:
                raise _Everything
            self.hosts.add(host.lower())

    def _through_routes(self, virtual_services: tuple[VirtualService, ...]) -> None:
        """A route to a changed host changes too (its cluster, port and hash policy)."""
        changed = True
        while changed:
            changed = False
            for vs in virtual_services:
                if vs.is_delegate:
                    continue  # no hosts to add: its routes are in the roots' (merged)
                if self.hosts.isdisjoint(h.lower() for h in vs.hosts) and not self.hosts.isdisjoint(
                    _destinations(vs)
                ):
                    self._hosts(vs.hosts)
                    changed = True

    def _reached(self) -> Iterator[str]:
        seen: dict[int, bool] = {}  # id(SidecarScope) -> sees a changed host
        for ctx in (self.old, self.new):
            for proxy in ctx.proxies:
                if (
                    proxy.node_id in self.nodes
                    or proxy.gateways
                    or proxy.namespace in self.namespaces
                    or proxy.address in self.addresses
                ):
                    yield proxy.node_id
                    continue
                scope = proxy.scope
                hit = seen.get(id(scope))
                if hit is None:
                    hit = seen[id(scope)] = any(
                        s.host.lower() in self.hosts for s in scope.services
                    )
                if hit:
                    yield proxy.node_id


def _destinations(vs: VirtualService) -> set[str]:
    hosts: set[str] = set()
    for route in vs.http:
        for dest in route.route:
            hosts.add(dest.destination.host.lower())
        if route.mirror is not None:
            hosts.add(route.mirror.host.lower())
        hosts.update(m.host.lower() for m, _ in route.mirrors)
    for tcp in vs.tcp:
        hosts.update(d.destination.host.lower() for d in tcp.route)
    for tls in vs.tls:
        hosts.update(d.destination.host.lower() for d in tls.route)
    return hosts


def _key(resource: Any) -> Hashable:
    return (type(resource).__name__, resource.meta.namespace, resource.meta.name)


def _pairs(before: tuple[Any, ...], after: tuple[Any, ...]) -> list[tuple[Any, Any]]:
    """(old, new) for every resource added, removed or changed; None for the side
    it is missing on. Equality ignores where a resource was written (Source)."""
    if before is after:
        return []
    old = {_key(r): r for r in before}
    new = {_key(r): r for r in after}
    if len(old) != len(before) or len(new) != len(after):
        raise _Everything  # duplicate names: validation reports them; don't guess
    out = []
    for key in old.keys() | new.keys():
        a, b = old.get(key), new.get(key)
        if a is not b and a != b:
            out.append((a, b))
    return out


def _present(pair: tuple[Any, Any]) -> Iterator[Any]:
    return (r for r in pair if r is not None)
