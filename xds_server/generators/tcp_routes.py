"""Outbound TCP listeners and VirtualService `tcp[]` routes (Istio's TCP proxy chains).

There are no iptables, so an app reaches a TCP service at `<its own address>:<service
port>`, where its sidecar listens with a tcp_proxy to the service's cluster (or to the
weighted subsets of the first matching `tcp[]` rule). One service per port: the port
is the only thing that tells services apart without a virtual IP, so a second TCP
service on the same port, or a port the proxy already uses inbound, is skipped and
reported as a conflict.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from xds_server.galley.model import labels_match
from xds_server.galley.model_traffic import MESH_GATEWAY, TCPRoute, VirtualService
from xds_server.generators import naming
from xds_server.generators.egress_listeners import egress_ports
from xds_server.generators.endpoints import socket_address
from xds_server.generators.frozen import Frozen
from xds_server.generators.http_routes import cluster_for, pack
from xds_server.generators.push_context import OutboundService, Proxy, PushContext, SidecarScope
from xds_server.generators.sniffing import sni_forwarding, sniff_outbound, sniffed_http_chain
from xds_server.generators.traffic_policy import tcp_proxy_timeouts

TCP_PROXY_FILTER = "envoy.filters.network.tcp_proxy"
# Ports Istio keeps for the proxy itself (admin 15000, outbound 15001, ...).
ISTIO_RESERVED = range(15000, 15091)


def outbound_tcp_listeners(
    ctx: PushContext, proxy: Proxy
) -> dict[str, Frozen[listener_pb2.Listener]]:
    used = {plan.port for plan in proxy.inbound if plan.bind == proxy.address}
    used.add(naming.OUTBOUND_HTTP_PORT)
    used |= egress_ports(proxy)  # Sidecar egress listeners with their own port
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


def _listener(
    ctx: PushContext, proxy: Proxy, svc: OutboundService, labels: Mapping[str, str]
) -> listener_pb2.Listener:
    traffic = ctx.traffic
    port = svc.port.number
    proxy_config = tcp_proxy_pb2.TcpProxy(stat_prefix=svc.cluster_name, cluster=svc.cluster_name)
    tcp_proxy_timeouts(proxy_config, svc.policy)  # DestinationRule tcp idle/max duration
    vs = traffic.virtual_service(svc.host, proxy.namespace)
    route = _first_match(vs, port, labels, proxy.namespace) if vs is not None else None
    if route is not None:
        weighted = [d for d in route.route if d.weight > 0]
        if len(weighted) == 1:
            proxy_config.cluster = cluster_for(traffic, weighted[0].destination, port)
        else:
            proxy_config.ClearField("cluster")
            proxy_config.stat_prefix = naming.outbound_cluster(port, svc.host)
            proxy_config.weighted_clusters.CopyFrom(
                tcp_proxy_pb2.TcpProxy.WeightedCluster(
                    clusters=[
                        tcp_proxy_pb2.TcpProxy.WeightedCluster.ClusterWeight(
                            name=cluster_for(traffic, d.destination, port), weight=d.weight
                        )
                        for d in weighted
                    ]
                )
            )
    listener = listener_pb2.Listener(
        name=naming.listener_name(proxy.address, port),
        address=socket_address(proxy.address, port),
        traffic_direction=base_pb2.OUTBOUND,
        filter_chains=[
            listener_components_pb2.FilterChain(
                filters=[
                    listener_components_pb2.Filter(
                        name=TCP_PROXY_FILTER, typed_config=pack(proxy_config)
                    )
                ]
            )
        ],
    )
    if svc.forwards:  # a TLS port to its original destination: the SNI names it
        sni_forwarding(listener, svc.port.target_port or port)
    elif svc.port.sniffed:  # HTTP connections get the service's HTTP routes
        chain = sniffed_http_chain(ctx, proxy, svc, labels)
        if chain is not None:
            sniff_outbound(listener, chain)
    return listener


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
