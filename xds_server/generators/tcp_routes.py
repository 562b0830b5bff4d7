"""Outbound TCP listeners and VirtualService `tcp[]` / `tls[]` routes (Istio's TCP
proxy chains).

There are no iptables, so an app reaches a TCP service at `<its own address>:<service
port>`, where its sidecar listens with a tcp_proxy to the service's cluster (or to the
weighted subsets of the first matching `tcp[]` rule). One service per port: the port
is the only thing that tells services apart without a virtual IP, so a second TCP
service on the same port, or a port the proxy already uses inbound, is skipped and
reported as a conflict.

On a TLS or HTTPS port, the `tls[]` rules that match the proxy route by SNI, as
Istio's `buildSidecarOutboundTLSFilterChainOpts` does: one filter chain per SNI
match (a TLS inspector reads the name from the ClientHello), and no other chain, so
a name no rule lists is refused. Without a matching `tls[]` rule the port behaves as
a TCP port (Istio would ignore `tcp[]` there; pocketmesh applies it).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from xds_server.galley.model import labels_match
from xds_server.galley.model_traffic import (
    MESH_GATEWAY,
    RouteDestination,
    TCPRoute,
    VirtualService,
    gateway_key,
)
from xds_server.generators import naming
from xds_server.generators.access_log import AccessLogs, mesh_access_logs
from xds_server.generators.endpoints import socket_address
from xds_server.generators.filters import tcp_proxy_filter
from xds_server.generators.frozen import Frozen
from xds_server.generators.http_routes import cluster_for, destination_port
from xds_server.generators.mtls import tls_inspector
from xds_server.generators.push_context import OutboundService, Proxy, PushContext, SidecarScope
from xds_server.generators.sniffing import sni_forwarding, sniff_outbound, sniffed_http_chain
from xds_server.generators.traffic_index import TrafficIndex
from xds_server.generators.traffic_policy import tcp_proxy_timeouts, tunnel

# Service port protocols whose connections carry TLS (Istio's Protocol.IsTLS()).
TLS_PROTOCOLS = frozenset({"TLS", "HTTPS"})
# Ports Istio keeps for the proxy itself (admin 15000, outbound 15001, ...).
ISTIO_RESERVED = range(15000, 15091)


def outbound_tcp_listeners(
    ctx: PushContext, proxy: Proxy
) -> dict[str, Frozen[listener_pb2.Listener]]:
    used = {plan.port for plan in proxy.inbound if plan.bind == proxy.address}
    used.add(naming.OUTBOUND_HTTP_PORT)
    used |= proxy.egress_ports  # Sidecar egress listeners with their own port
    chosen: dict[int, OutboundService] = {}
    for svc in _tcp_services(ctx, proxy.scope):
        number = svc.port.number
        if number in used or number in ISTIO_RESERVED:
            continue
        first = chosen.setdefault(number, svc)
        if first is not svc and first.host != svc.host:
            _conflict(
                ctx,
                f"workload {proxy.workload.meta.key}: outbound TCP port {number} is "
                f"{first.host}'s; {svc.host} is not reachable on it",
            )
    listeners = {}
    labels = proxy.workload.labels
    key = ctx.traffic.source_key(labels)
    for number, svc in sorted(chosen.items()):
        name = naming.listener_name(proxy.address, number)
        listeners[name] = ctx.shared(
            ("lds-tcp", proxy.address, svc, key),
            functools.partial(_listener, ctx, proxy, svc, labels),
        )
    return listeners


def _tcp_services(ctx: PushContext, scope: SidecarScope) -> tuple[OutboundService, ...]:
    """The scope's TCP service ports, found once per scope (not per proxy)."""
    return ctx.memoize(
        ("tcp-services", scope),
        lambda: tuple(
            s
            for s in scope.services
            if not s.subset and not s.port.is_http and not (s.port.sniffed and s.forwards)
        ),
    )


def _conflict(ctx: PushContext, message: str) -> None:
    if message not in ctx.conflicts:
        ctx.conflicts.append(message)


def tcp_proxy(
    traffic: TrafficIndex, routes: tuple[RouteDestination, ...], port: int, stat_prefix: str = ""
) -> tcp_proxy_pb2.TcpProxy:
    """A tcp_proxy to a route's destinations: one cluster, or weighted ones. `port` is the
    listener's: a destination without a port takes it, or its service's only port."""
    weighted = [d for d in routes if d.weight > 0]
    if len(weighted) == 1:
        dest = weighted[0].destination
        cluster = cluster_for(traffic, dest, port)
        proxy = tcp_proxy_pb2.TcpProxy(stat_prefix=stat_prefix or cluster, cluster=cluster)
        # One destination: its DestinationRule's tunnel (Istio: single destinations only).
        tunnel(proxy, traffic.policy(dest.host, destination_port(traffic, dest, port), dest.subset))
        return proxy
    clusters = [
        tcp_proxy_pb2.TcpProxy.WeightedCluster.ClusterWeight(
            name=cluster_for(traffic, d.destination, port), weight=d.weight
        )
        for d in weighted
    ]
    return tcp_proxy_pb2.TcpProxy(
        stat_prefix=stat_prefix or clusters[0].name,
        weighted_clusters=tcp_proxy_pb2.TcpProxy.WeightedCluster(clusters=clusters),
    )


def _listener(
    ctx: PushContext, proxy: Proxy, svc: OutboundService, labels: Mapping[str, str]
) -> listener_pb2.Listener:
    traffic = ctx.traffic
    port = svc.port.number
    proxy_config = tcp_proxy_pb2.TcpProxy(stat_prefix=svc.cluster_name, cluster=svc.cluster_name)
    vs = traffic.virtual_service(svc.host, proxy.namespace)
    listener = listener_pb2.Listener(
        name=naming.listener_name(proxy.address, port),
        address=socket_address(proxy.address, port),
        traffic_direction=base_pb2.OUTBOUND,
    )
    if vs is not None and svc.port.protocol in TLS_PROTOCOLS:
        chains = sni_chains(
            traffic, vs, port, labels, proxy.namespace, MESH_GATEWAY, mesh_access_logs(ctx)
        )
        if chains:
            listener.filter_chains.extend(chains)
            listener.listener_filters.append(tls_inspector())
            return listener
    route = _first_match(vs, port, labels, proxy.namespace) if vs is not None else None
    if route is not None:
        proxy_config = tcp_proxy(
            traffic, route.route, port, stat_prefix=naming.outbound_cluster(port, svc.host)
        )
    tcp_proxy_timeouts(proxy_config, svc.policy)  # DestinationRule tcp idle/max duration
    if route is None:
        tunnel(proxy_config, svc.policy)
    listener.filter_chains.append(
        listener_components_pb2.FilterChain(
            filters=[tcp_proxy_filter(proxy_config, mesh_access_logs(ctx))]
        )
    )
    if svc.forwards:  # a TLS port to its original destination: the SNI names it
        sni_forwarding(listener, svc.port.target_port or port)
    elif svc.port.sniffed:  # HTTP connections get the service's HTTP routes
        chain = sniffed_http_chain(ctx, proxy, svc, labels)
        if chain is not None:
            sniff_outbound(listener, chain)
    return listener


def sni_chains(
    traffic: TrafficIndex,
    vs: VirtualService,
    port: int,
    labels: Mapping[str, str] | None,
    namespace: str,
    gateway: str,
    logs: AccessLogs,
    taken: set[str] | None = None,
) -> list[listener_components_pb2.FilterChain]:
    """One filter chain per `tls[]` match that applies (first rule wins a name): the SNI
    names it lists, to its destinations. `labels` None: a gateway, which ignores
    sourceLabels and sourceNamespace (Istio's l4SingleMatch)."""
    taken = set() if taken is None else taken
    chains = []
    for route in vs.tls:
        if not route.route:
            continue
        for match in route.match:
            if match.port is not None and match.port != port:
                continue
            if match.gateways and gateway not in {
                gateway_key(g, vs.meta.namespace) for g in match.gateways
            }:
                continue
            if labels is not None:
                if match.source_labels is not None and not labels_match(
                    match.source_labels, labels
                ):
                    continue
                if match.source_namespace and match.source_namespace != namespace:
                    continue
            names = [n for n in match.sni_hosts if n not in taken]
            if not names:
                continue
            taken.update(names)
            chains.append(
                listener_components_pb2.FilterChain(
                    filter_chain_match=listener_components_pb2.FilterChainMatch(
                        server_names=sorted(names)
                    ),
                    filters=[tcp_proxy_filter(tcp_proxy(traffic, route.route, port), logs)],
                )
            )
    return chains


def _first_match(
    vs: VirtualService, port: int, labels: Mapping[str, str], namespace: str
) -> TCPRoute | None:
    for route in vs.tcp:
        if not route.match:
            return route
        for match in route.match:
            if match.port is not None and match.port != port:
                continue
            if match.gateways and MESH_GATEWAY not in match.gateways:
                continue
            if match.source_labels is not None and not labels_match(match.source_labels, labels):
                continue
            if match.source_namespace and match.source_namespace != namespace:
                continue
            return route
    return None
