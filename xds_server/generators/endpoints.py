"""EDS: one ClusterLoadAssignment per outbound EDS cluster (Istio's endpoint builder)."""

from __future__ import annotations

from itertools import groupby
from typing import TypeAlias

from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from google.protobuf import struct_pb2, wrappers_pb2

from xds_server.generators.frozen import Frozen, FrozenResources
from xds_server.generators.push_context import Endpoint, OutboundService, Proxy, PushContext

ClusterLoadAssignment: TypeAlias = endpoint_pb2.ClusterLoadAssignment


def load_assignment(ctx: PushContext, svc: OutboundService) -> Frozen[ClusterLoadAssignment]:
    """The endpoints of `svc`, shared by every proxy that sees it.

    Also inlined by DNS clusters, so it is built for those too; an EDS cluster with
    no endpoints still gets an (empty) assignment, as Envoy waits for one.
    """
    return ctx.shared(("cla", svc), lambda: _build(svc))


def build_endpoints(ctx: PushContext, proxy: Proxy) -> FrozenResources:
    """Sorted by name, one mapping per scope: every proxy of the scope gets the very
    same read-only mapping, so the cache converts it once (MeshSnapshot)."""
    scope = proxy.scope

    def build() -> FrozenResources:
        found = {
            svc.cluster_name: load_assignment(ctx, svc) for svc in scope.services if svc.uses_eds
        }
        return FrozenResources(dict(sorted(found.items())))

    return ctx.memoize(("eds-scope", scope), build)


def socket_address(host: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=host, port_value=port)
    )


def lb_endpoint(host: str, port: int) -> endpoint_components_pb2.LbEndpoint:
    return endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(address=socket_address(host, port))
    )


def _build(svc: OutboundService) -> ClusterLoadAssignment:
    cla = ClusterLoadAssignment(cluster_name=svc.cluster_name)
    # Endpoints come sorted by address; regroup by locality without losing determinism.
    by_locality = sorted(svc.endpoints, key=lambda e: e.workload.locality)
    for locality, group in groupby(by_locality, key=lambda e: e.workload.locality):
        cla.endpoints.append(
            endpoint_components_pb2.LocalityLbEndpoints(
                locality=_locality(locality),
                lb_endpoints=[_lb_endpoint(e) for e in group],
            )
        )
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
