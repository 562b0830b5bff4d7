"""EDS: one ClusterLoadAssignment per outbound EDS cluster (Istio's endpoint builder)."""

from __future__ import annotations

from itertools import groupby
from typing import TypeAlias

from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from google.protobuf import struct_pb2, wrappers_pb2

from xds_server.galley.names import UNIX_PREFIX
from xds_server.generators import locality
from xds_server.generators.frozen import Frozen, FrozenResources
from xds_server.generators.push_context import Endpoint, OutboundService, Proxy, PushContext

ClusterLoadAssignment: TypeAlias = endpoint_pb2.ClusterLoadAssignment


def load_assignment(
    ctx: PushContext, svc: OutboundService, proxy: Proxy | None = None
) -> Frozen[ClusterLoadAssignment]:
    """The endpoints of `svc`, shared by every proxy that sees it the same way.

    Also inlined by DNS clusters, so it is built for those too; an EDS cluster with
    no endpoints still gets an (empty) assignment, as Envoy waits for one. With
    locality load balancing in force (`generators.locality`), the priorities and
    weights depend on the calling `proxy`: one assignment per locality view.
    """
    base = ctx.shared(("cla", svc), lambda: _build(svc))
    if proxy is None or not locality.per_proxy(svc.policy):
        return base
    view = locality_view(proxy, locality.priority_labels(svc.policy))
    return ctx.shared(("cla-view", svc, view), lambda: _for_view(svc, base, view))


def locality_view(proxy: Proxy, labels: tuple[str, ...]) -> tuple[str, tuple[str | None, ...]]:
    """What of a proxy locality load balancing looks at: its locality and some labels."""
    own = locality.topology_labels(proxy.workload.labels, proxy.workload.locality)
    return proxy.workload.locality, tuple(own.get(name) for name in labels)


def scope_locality_key(ctx: PushContext, proxy: Proxy) -> tuple[object, ...]:
    """() when no endpoints of the proxy's scope depend on the proxy, else its view."""
    scope = proxy.scope
    labels = ctx.memoize(("loc-labels", scope), lambda: _scope_priority_labels(scope.services))
    if labels is None:
        return ()
    return locality_view(proxy, labels)


def _scope_priority_labels(services: tuple[OutboundService, ...]) -> tuple[str, ...] | None:
    """None if no service of the scope balances by locality; else every label any
    failoverPriority of the scope compares."""
    found: list[str] = []
    any_local = False
    for svc in services:
        if locality.per_proxy(svc.policy):
            any_local = True
            found += [n for n in locality.priority_labels(svc.policy) if n not in found]
    return tuple(found) if any_local else None


def build_endpoints(ctx: PushContext, proxy: Proxy) -> FrozenResources:
    """Sorted by name, one mapping per scope (and locality view, when locality load
    balancing applies): every proxy that sees the same gets the very same read-only
    mapping, so the cache converts it once (MeshSnapshot)."""
    scope = proxy.scope
    sidecar = not proxy.gateways

    def build() -> FrozenResources:
        found = {
            svc.cluster_name: load_assignment(ctx, svc, proxy)
            for svc in scope.services
            if svc.uses_eds_for(sidecar=sidecar)
        }
        return FrozenResources(dict(sorted(found.items())))

    key = ("eds-scope", scope, sidecar, scope_locality_key(ctx, proxy))
    return ctx.memoize(key, build)


def socket_address(host: str, port: int) -> address_pb2.Address:
    if host.startswith(UNIX_PREFIX):  # a ServiceEntry's unix:///path endpoint
        return address_pb2.Address(pipe=address_pb2.Pipe(path=host.removeprefix(UNIX_PREFIX)))
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=host, port_value=port)
    )


def lb_endpoint(host: str, port: int) -> endpoint_components_pb2.LbEndpoint:
    return endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(address=socket_address(host, port))
    )


def _groups(svc: OutboundService) -> list[tuple[str, list[Endpoint]]]:
    # Endpoints come sorted by address; regroup by locality without losing determinism.
    by_locality = sorted(svc.endpoints, key=lambda e: e.workload.locality)
    return [(name, list(g)) for name, g in groupby(by_locality, key=lambda e: e.workload.locality)]


def _build(svc: OutboundService) -> ClusterLoadAssignment:
    cla = ClusterLoadAssignment(cluster_name=svc.cluster_name)
    weighted = locality.weighted(svc.policy)
    for name, group in _groups(svc):
        entry = endpoint_components_pb2.LocalityLbEndpoints(
            locality=_locality(name), lb_endpoints=[_lb_endpoint(e) for e in group]
        )
        if weighted:  # Envoy gives a locality without a weight no traffic
            entry.load_balancing_weight.value = sum(e.workload.weight or 1 for e in group)
        cla.endpoints.append(entry)
    return cla


def _for_view(
    svc: OutboundService,
    base: Frozen[ClusterLoadAssignment],
    view: tuple[str, tuple[str | None, ...]],
) -> ClusterLoadAssignment:
    cla = base.copy()
    where, values = view
    names = locality.priority_labels(svc.policy)
    proxy_labels = {n: v for n, v in zip(names, values, strict=True) if v is not None}
    groups = [
        (
            cla.endpoints[i],
            tuple(locality.topology_labels(e.workload.labels, e.workload.locality) for e in g),
        )
        for i, (_, g) in enumerate(_groups(svc))
    ]
    locality.apply(cla, groups, svc.policy, where, proxy_labels)
    return cla


def _lb_endpoint(e: Endpoint) -> endpoint_components_pb2.LbEndpoint:
    lb = lb_endpoint(e.address, e.port)
    we = e.workload
    if we.weight > 0:
        lb.load_balancing_weight.CopyFrom(wrappers_pb2.UInt32Value(value=we.weight))
    # Who is behind the address, for dumps and later RBAC/telemetry; cheap per push.
    istio = struct_pb2.Struct()
    istio.update(
        {
            "workload": we.meta.name,
            "namespace": we.meta.namespace,
            "service_account": we.service_account,
        }
    )
    if we.labels:
        istio.get_or_create_struct("labels").update(dict(we.labels))
    lb.metadata.CopyFrom(base_pb2.Metadata(filter_metadata={"istio": istio}))
    return lb


def _locality(value: str) -> base_pb2.Locality | None:
    """Istio's "region/zone/subzone" string."""
    if not value:
        return None
    region, _, rest = value.partition("/")
    zone, _, sub_zone = rest.partition("/")
    return base_pb2.Locality(region=region, zone=zone, sub_zone=sub_zone)
