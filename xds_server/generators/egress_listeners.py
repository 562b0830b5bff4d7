"""Sidecar egress listeners with a port: a listener of their own (Istio's egress ports).

Istio's `egress[].port` makes the sidecar listen on `bind:port` for the hosts that
listener imports; with captureMode NONE it is how an app without iptables reaches them
(Istio's "no-ip-tables" Sidecar example). pocketmesh never captures, so this is what
it does for every such listener: on `bind` (default: the workload's own address, where
pocketmesh's other listeners are; Istio's 127.0.0.1 would be shared by every workload of
the machine) and the port,

- HTTP (or no protocol): plain requests (not the proxy form 15001 takes), routed by
  Host to the imported services' port `port`, with their VirtualService routes; the
  port is the default, so `Host: reviews` means reviews on this port;
- any other protocol: a TCP proxy to the imported service on that port (the first,
  if several: a connection names no host).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TypeAlias

from envoy.config.core.v3 import base_pb2, protocol_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from google.protobuf import wrappers_pb2

from xds_server.galley.model import EgressListener
from xds_server.generators import naming
from xds_server.generators.access_log import mesh_access_logs
from xds_server.generators.endpoints import socket_address
from xds_server.generators.filters import (
    connection_manager,
    outbound_http_filters,
    tcp_proxy_filter,
)
from xds_server.generators.frozen import Frozen
from xds_server.generators.push_context import OutboundService, Proxy, PushContext
from xds_server.generators.routes import service_virtual_host
from xds_server.generators.sidecar_scope import hosts_allow
from xds_server.generators.traffic_policy import tunnel

Listener: TypeAlias = listener_pb2.Listener


def egress_port_listeners(ctx: PushContext, proxy: Proxy) -> dict[str, Frozen[Listener]]:
    sidecar = proxy.sidecar
    if sidecar is None:
        return {}
    key = ctx.traffic.source_key(proxy.workload.labels)
    found: dict[str, Frozen[Listener]] = {}
    for listener in sidecar.egress:
        if listener.port is None:
            continue
        bind = listener.bind or proxy.address
        name = naming.listener_name(bind, listener.port.number)
        found[name] = ctx.shared(
            ("lds-egress", proxy.scope, name, listener, key),
            functools.partial(_listener, ctx, proxy, listener, bind, proxy.workload.labels),
        )
    return found


def _imported(proxy: Proxy, listener: EgressListener) -> list[OutboundService]:
    assert listener.port is not None
    return [
        svc
        for svc in proxy.scope.services
        if not svc.subset
        and svc.port.number == listener.port.number
        and hosts_allow(listener.hosts, proxy.namespace, svc.service, svc.host)
    ]


def _listener(
    ctx: PushContext,
    proxy: Proxy,
    listener: EgressListener,
    bind: str,
    labels: Mapping[str, str],
) -> Listener:
    assert listener.port is not None
    port = listener.port.number
    services = _imported(proxy, listener)
    name = naming.listener_name(bind, port)
    if listener.port.protocol == "" or naming.is_http(listener.port.protocol):
        chain = _http_chain(ctx, proxy, services, name, port, labels)
    else:
        chain = _tcp_chain(ctx, proxy, services, port)
    return Listener(
        name=name,
        address=socket_address(bind, port),
        traffic_direction=base_pb2.OUTBOUND,
        filter_chains=[chain],
    )


def _http_chain(
    ctx: PushContext,
    proxy: Proxy,
    services: list[OutboundService],
    name: str,
    port: int,
    labels: Mapping[str, str],
) -> listener_components_pb2.FilterChain:
    vhosts = []
    claimed: set[str] = set()
    for svc in services:
        if not svc.port.carries_http:
            continue
        names = naming.host_aliases(svc.host, proxy.namespace)
        vhost = service_virtual_host(ctx, proxy.scope, svc.cluster_name, labels, names)
        if vhost is None:
            continue
        domains = [d for d in vhost.domains if d not in claimed]
        claimed.update(domains)
        del vhost.domains[:]
        vhost.domains.extend(domains)
        if domains:
            vhosts.append(vhost)
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix=f"outbound_{name}",
        route_config=route_pb2.RouteConfiguration(
            name=name,
            virtual_hosts=vhosts,
            validate_clusters=wrappers_pb2.BoolValue(value=False),
        ),
        http_protocol_options=protocol_pb2.Http1ProtocolOptions(
            allow_absolute_url=wrappers_pb2.BoolValue(value=True)
        ),
        http_filters=outbound_http_filters(),
    )
    return listener_components_pb2.FilterChain(
        filters=[connection_manager(hcm, mesh_access_logs(ctx))]
    )


def _tcp_chain(
    ctx: PushContext, proxy: Proxy, services: list[OutboundService], port: int
) -> listener_components_pb2.FilterChain:
    tcp = [svc for svc in services if not svc.port.is_http]
    if len(tcp) > 1:
        message = (
            f"workload {proxy.workload.meta.key}: egress port {port} imports "
            f"{', '.join(s.host for s in tcp)}; a TCP connection names no host: using {tcp[0].host}"
        )
        if message not in ctx.conflicts:
            ctx.conflicts.append(message)
    cluster = tcp[0].cluster_name if tcp else "BlackHoleCluster"
    proxy_config = tcp_proxy_pb2.TcpProxy(stat_prefix=cluster, cluster=cluster)
    if tcp:
        tunnel(proxy_config, tcp[0].policy)
    return listener_components_pb2.FilterChain(
        filters=[tcp_proxy_filter(proxy_config, mesh_access_logs(ctx))]
    )
