"""Plain objects to drive the stream state machines without gRPC."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3.discovery_pb2 import (
    DeltaDiscoveryRequest,
    DeltaDiscoveryResponse,
    DiscoveryRequest,
    DiscoveryResponse,
)
from google.rpc import status_pb2

from xds_server import xds_types as T
from xds_server.cache.resource import Resource
from xds_server.protocol.events import DeltaResponse, Event, SotwResponse
from xds_server.protocol.view import StaticView

NODE = base_pb2.Node(id="app.default")


def cluster(name: str, timeout: int = 1, eds: bool = True) -> Resource:
    msg = cluster_pb2.Cluster(name=name)
    msg.connect_timeout.seconds = timeout
    if eds:
        msg.type = cluster_pb2.Cluster.EDS
    return Resource(T.CLUSTER, name, msg)


def endpoints(name: str, *ports: int) -> Resource:
    msg = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    group = msg.endpoints.add()
    for port in ports:
        sa = group.lb_endpoints.add().endpoint.address.socket_address
        sa.address = "127.0.0.9"
        sa.port_value = port
    return Resource(T.ENDPOINT, name, msg)


def listener(name: str, port: int = 15001) -> Resource:
    msg = listener_pb2.Listener(name=name)
    msg.address.socket_address.port_value = port
    return Resource(T.LISTENER, name, msg)


def route(name: str, vhosts: int = 1) -> Resource:
    msg = route_pb2.RouteConfiguration(name=name)
    for i in range(vhosts):
        msg.virtual_hosts.add(name=f"vh{i}", domains=[f"h{i}"])
    return Resource(T.ROUTE, name, msg)


def view(*resources: Resource, generation: int = 1) -> StaticView:
    by_type: dict[str, dict[str, Resource]] = {}
    for r in resources:
        by_type.setdefault(r.type_url, {})[r.name] = r
    return StaticView(by_type, generation)


def req(
    type_url: str,
    names: tuple[str, ...] = (),
    *,
    version: str = "",
    nonce: str = "",
    error: str = "",
    node: bool = False,
) -> DiscoveryRequest:
    r = DiscoveryRequest(
        type_url=type_url, resource_names=list(names), version_info=version, response_nonce=nonce
    )
    if error:
        r.error_detail.CopyFrom(status_pb2.Status(code=13, message=error))
    if node:
        r.node.CopyFrom(NODE)
    return r


def dreq(
    type_url: str,
    subscribe: tuple[str, ...] = (),
    unsubscribe: tuple[str, ...] = (),
    *,
    nonce: str = "",
    error: str = "",
    initial: dict[str, str] | None = None,
) -> DeltaDiscoveryRequest:
    r = DeltaDiscoveryRequest(
        type_url=type_url,
        resource_names_subscribe=list(subscribe),
        resource_names_unsubscribe=list(unsubscribe),
        response_nonce=nonce,
    )
    for k, v in (initial or {}).items():
        r.initial_resource_versions[k] = v
    if error:
        r.error_detail.CopyFrom(status_pb2.Status(code=13, message=error))
    return r


def responses(events: list[Event]) -> list[SotwResponse]:
    return [e for e in events if isinstance(e, SotwResponse)]


def delta_responses(events: list[Event]) -> list[DeltaResponse]:
    return [e for e in events if isinstance(e, DeltaResponse)]


def names(resp: SotwResponse | DeltaResponse) -> list[str]:
    return [r.name for r in resp.resources]


def ack(resp: SotwResponse, names: tuple[str, ...] = ()) -> DiscoveryRequest:
    return req(resp.type_url, names, version=resp.version_info, nonce=resp.nonce)


def decode(resp: SotwResponse) -> DiscoveryResponse:
    return DiscoveryResponse.FromString(resp.encode())


def decode_delta(resp: DeltaResponse) -> DeltaDiscoveryResponse:
    return DeltaDiscoveryResponse.FromString(resp.encode())
