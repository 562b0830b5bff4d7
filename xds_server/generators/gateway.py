"""Gateway proxies: one listener per server port, on the gateway workload's own address.

A workload whose labels match a Gateway's `selector` is a gateway proxy (Istio's
router): instead of sidecar listeners it gets the servers of every Gateway selecting
it, merged per port as Istio's `mergeGateways` does; the first server on a port (in
mesh order) decides what the port carries:

- plain HTTP servers: one connection manager, routes `http.<port>` (`gateway_routes`);
- TLS servers (HTTPS, TLS), told apart by SNI (a TLS inspector reads it): a server
  that ends TLS gets a filter chain with its certificate for its hosts, then HTTP
  routes of its own (HTTPS) or the first matching `tcp[]` route (TLS); a PASSTHROUGH
  server gets one chain per matching `tls[]` route, for that route's SNI names, that
  forwards the still-encrypted bytes;
- a TCP server: the first matching `tcp[]` route of the VirtualServices bound to it.

A server that cannot be built (a clash on its port or its SNI names, a missing
certificate, no route) is skipped and the reason is reported as a conflict; the
others are built. A port left with no filter chain gets no listener (Envoy would
refuse one).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from xds_server.galley.model_traffic import (
    Gateway,
    GatewayServer,
    TCPMatch,
    VirtualService,
    gateway_key,
)
from xds_server.generators import inbound_auth, naming
from xds_server.generators.access_log import mesh_access_logs
from xds_server.generators.config_sources import ads_config_source
from xds_server.generators.endpoints import socket_address
from xds_server.generators.filters import connection_manager, router_filter, tcp_proxy_filter
from xds_server.generators.frozen import Frozen
from xds_server.generators.gateway_routes import (
    common_hosts,
    http_route_name,
    https_route_name,
    route_config,
)
from xds_server.generators.gateway_tls import ServerUnbuilt, server_tls_socket
from xds_server.generators.http_routes import traffic_http_filters
from xds_server.generators.mtls import tls_inspector
from xds_server.generators.push_context import Proxy, PushContext
from xds_server.generators.security import security_plan
from xds_server.generators.sidecar_scope import host_matches
from xds_server.generators.tcp_routes import sni_chains, tcp_proxy

GatewayServers = tuple[tuple[Gateway, GatewayServer], ...]


@dataclass(frozen=True, slots=True)
class PortPlan:
    """What one gateway port carries, after Istio's merging rules."""

    port: int
    http: GatewayServers = ()  # plain HTTP servers, sharing `http.<port>`
    tls: GatewayServers = ()  # servers told apart by SNI
    tcp: tuple[Gateway, GatewayServer] | None = None  # one plain TCP server


def gateway_ports(ctx: PushContext, proxy: Proxy) -> tuple[PortPlan, ...]:
    return ctx.memoize(("gateway-ports", proxy), lambda: _plan_ports(ctx, proxy))


def _plan_ports(ctx: PushContext, proxy: Proxy) -> tuple[PortPlan, ...]:
    by_port: dict[int, list[tuple[Gateway, GatewayServer]]] = {}
    for gateway in proxy.gateways:
        for server in gateway.servers:
            by_port.setdefault(server.port, []).append((gateway, server))
    plans = []
    for port, servers in sorted(by_port.items()):
        first = servers[0][1]
        kept: list[tuple[Gateway, GatewayServer]] = []
        taken: set[str] = set()  # SNI names of the TLS servers kept ("" for "*")
        for gateway, server in servers:
            clash = _clash(first, server)
            if clash:
                _conflict(ctx, f"gateway {gateway.meta.key}: port {port}: {clash}; skipped")
                continue
            if server.uses_tls and not server.passthrough:
                names = set(server.sni_hosts) if "*" not in server.sni_hosts else {""}
                if names & taken:
                    _conflict(
                        ctx,
                        f"gateway {gateway.meta.key}: port {port}: hosts "
                        f"{sorted(names & taken)} are already served by an earlier server; "
                        "skipped",
                    )
                    continue
                taken |= names
            kept.append((gateway, server))
        if first.is_http:
            plans.append(PortPlan(port, http=tuple(kept)))
        elif first.uses_tls:
            plans.append(PortPlan(port, tls=tuple(kept)))
        else:
            plans.append(PortPlan(port, tcp=kept[0]))
    return tuple(plans)


def _clash(first: GatewayServer, server: GatewayServer) -> str:
    """Why `server` cannot share the port `first` opened (Istio's mergeGateways)."""
    if first.is_http and server.is_http:
        return ""
    if first.uses_tls and server.uses_tls:
        return ""
    if first is server:
        return ""
    if first.is_http or server.is_http or first.uses_tls or server.uses_tls:
        return (
            f"a {server.protocol} server cannot share it with the {first.protocol} server "
            "already there"
        )
    return "only one TCP server per port"


def gateway_listeners(ctx: PushContext, proxy: Proxy) -> dict[str, Frozen[listener_pb2.Listener]]:
    listeners = {}
    for plan in gateway_ports(ctx, proxy):
        name = naming.listener_name(proxy.address, plan.port)
        listener = ctx.shared(
            ("lds-gw", proxy.address, plan.port), functools.partial(_listener, ctx, proxy, plan)
        )
        if listener.filter_chains:  # Envoy rejects a listener with none
            listeners[name] = listener
        else:
            _conflict(
                ctx,
                f"{proxy.node_id}: port {plan.port}: no server could be built there; no listener",
            )
    return listeners


def gateway_route_configs(
    ctx: PushContext, proxy: Proxy
) -> dict[str, Frozen[route_pb2.RouteConfiguration]]:
    configs: dict[str, Frozen[route_pb2.RouteConfiguration]] = {}
    for plan in gateway_ports(ctx, proxy):
        if plan.http:
            name = http_route_name(plan.port)
            configs[name] = Frozen(route_config(ctx, proxy, name, plan.http))
        for gateway, server in plan.tls:
            if server.terminates_http:
                name = https_route_name(gateway, server)
                configs[name] = Frozen(route_config(ctx, proxy, name, ((gateway, server),)))
    return configs


# --- listeners ----------------------------------------------------------------------


def _listener(ctx: PushContext, proxy: Proxy, plan: PortPlan) -> listener_pb2.Listener:
    chains: list[listener_components_pb2.FilterChain] = []
    if plan.http:
        auth = _auth_filters(ctx, proxy, plan.port)
        chains.append(_hcm_chain(http_route_name(plan.port), f"gateway_{plan.port}", auth, ctx))
    if plan.tcp is not None:
        gateway, server = plan.tcp
        chain = _tcp_chain(ctx, proxy, gateway, server)
        if chain is not None:
            chains.append(chain)
    taken: set[str] = set()
    for gateway, server in plan.tls:
        if server.passthrough:
            chains += _passthrough_chains(ctx, proxy, gateway, server, taken)
        else:
            chain = _terminating_chain(ctx, proxy, gateway, server)
            if chain is not None:
                taken.update(chain.filter_chain_match.server_names or [""])
                chains.append(chain)
    listener = listener_pb2.Listener(
        name=naming.listener_name(proxy.address, plan.port),
        address=socket_address(proxy.address, plan.port),
        traffic_direction=base_pb2.INBOUND,
        filter_chains=chains,
    )
    if any(c.filter_chain_match.server_names or c.HasField("transport_socket") for c in chains):
        # Servers are told apart by SNI, which this filter reads from the ClientHello.
        listener.listener_filters.append(tls_inspector())
    return listener


def _auth_filters(ctx: PushContext, proxy: Proxy, port: int) -> list[hcm_pb2.HttpFilter]:
    """The gateway's CUSTOM, jwt_authn and RBAC filters (`inbound_auth`), first."""
    security = security_plan(ctx, proxy).gateway
    return inbound_auth.http_filters(security, port, gateway=True) if security is not None else []


def _auth_network_filters(
    ctx: PushContext, proxy: Proxy, port: int
) -> list[listener_components_pb2.Filter]:
    """TCP servers: the gateway's CUSTOM and RBAC network filters, before tcp_proxy."""
    security = security_plan(ctx, proxy).gateway
    return inbound_auth.network_filters(security, port) if security is not None else []


def _hcm_chain(
    route_name: str, stat_prefix: str, auth: list[hcm_pb2.HttpFilter], ctx: PushContext
) -> listener_components_pb2.FilterChain:
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix=stat_prefix,
        rds=hcm_pb2.Rds(config_source=ads_config_source(), route_config_name=route_name),
        http_filters=[
            *auth,
            *traffic_http_filters(),
            router_filter(),
        ],
    )
    return listener_components_pb2.FilterChain(
        filters=[connection_manager(hcm, mesh_access_logs(ctx))]
    )


def _server_names(server: GatewayServer) -> list[str]:
    """The SNI names a server's chain matches; none (any name) for a `*` host."""
    names = server.sni_hosts
    return [] if "*" in names else list(names)


def _terminating_chain(
    ctx: PushContext, proxy: Proxy, gateway: Gateway, server: GatewayServer
) -> listener_components_pb2.FilterChain | None:
    """An HTTPS or TLS server ending TLS: its certificate, then HTTP or TCP routes."""
    try:
        socket = server_tls_socket(
            server,
            ctx.mesh.tls_credentials,
            (proxy.namespace, gateway.meta.namespace),
            ctx.mesh.trust_domain,
            ctx.mesh.workload_identity,
        )
    except ServerUnbuilt as err:
        _conflict(ctx, f"{_where(gateway, server)}: {err}; the server is skipped")
        return None
    if server.protocol == "HTTPS":
        name = server.name or server.port_name or f"server{server.index}"
        chain = _hcm_chain(
            https_route_name(gateway, server),
            f"gateway_{server.port}_{name}",
            _auth_filters(ctx, proxy, server.port),
            ctx,
        )
    else:
        found = _tcp_route(ctx, proxy, gateway, server)
        if found is None:
            _conflict(ctx, f"{_where(gateway, server)}: no VirtualService has a tcp route for it")
            return None
        auth = _auth_network_filters(ctx, proxy, server.port)
        chain = listener_components_pb2.FilterChain(
            filters=[*auth, tcp_proxy_filter(found, mesh_access_logs(ctx))]
        )
    chain.filter_chain_match.server_names.extend(_server_names(server))
    chain.transport_socket.CopyFrom(socket)
    return chain


def _tcp_chain(
    ctx: PushContext, proxy: Proxy, gateway: Gateway, server: GatewayServer
) -> listener_components_pb2.FilterChain | None:
    found = _tcp_route(ctx, proxy, gateway, server)
    if found is None:
        _conflict(ctx, f"{_where(gateway, server)}: no VirtualService has a tcp route for it")
        return None
    auth = _auth_network_filters(ctx, proxy, server.port)
    return listener_components_pb2.FilterChain(
        filters=[*auth, tcp_proxy_filter(found, mesh_access_logs(ctx))]
    )


def _tcp_route(
    ctx: PushContext, proxy: Proxy, gateway: Gateway, server: GatewayServer
) -> tcp_proxy_pb2.TcpProxy | None:
    """The tcp_proxy of the first `tcp[]` route of the VirtualServices bound to the
    gateway (and sharing a host with the server) that matches its port (Istio's
    buildGatewayNetworkFiltersFromTCPRoutes: sourceLabels do not apply at gateways)."""
    key = gateway.meta.key
    for vs in _bound(ctx, proxy, gateway, server):
        for route in vs.tcp:
            if route.route and _l4_applies(route.match, vs, server, key):
                return tcp_proxy(ctx.traffic, route.route, server.port)
    return None


def _l4_applies(
    matches: tuple[TCPMatch, ...], vs: VirtualService, server: GatewayServer, key: str
) -> bool:
    """Istio's l4MultiMatch: no match, or one whose port and gateways fit."""
    if not matches:
        return True
    for match in matches:
        if match.port is not None and match.port != server.port:
            continue
        if match.gateways and key not in {
            gateway_key(g, vs.meta.namespace) for g in match.gateways
        }:
            continue
        return True
    return False


def _passthrough_chains(
    ctx: PushContext, proxy: Proxy, gateway: Gateway, server: GatewayServer, taken: set[str]
) -> list[listener_components_pb2.FilterChain]:
    """One chain per `tls[]` match of the VirtualServices bound to the gateway: its SNI
    names (within the server's hosts) to its destinations, TLS left to the upstream."""
    chains = []
    key = gateway.meta.key
    auth = _auth_network_filters(ctx, proxy, server.port)  # RBAC sees the SNI, not the bytes
    for vs in _bound(ctx, proxy, gateway, server):
        found = sni_chains(
            ctx.traffic, vs, server.port, None, proxy.namespace, key, mesh_access_logs(ctx), set()
        )
        for chain in found:
            names = [n for n in chain.filter_chain_match.server_names if _within_server(server, n)]
            clash = [n for n in names if n in taken]
            if clash:
                _conflict(
                    ctx,
                    f"{_where(gateway, server)}: SNI {clash} of {vs.meta.key} already has a "
                    "filter chain on this port; skipped",
                )
            names = [n for n in names if n not in taken]
            if not names:
                continue
            taken.update(names)
            del chain.filter_chain_match.server_names[:]
            chain.filter_chain_match.server_names.extend(names)
            if auth:
                filters = [*auth, *chain.filters]
                del chain.filters[:]
                chain.filters.extend(filters)
            chains.append(chain)
    return chains


def _within_server(server: GatewayServer, name: str) -> bool:
    return any(host_matches(pattern, name) for pattern in server.sni_hosts)


def _bound(
    ctx: PushContext, proxy: Proxy, gateway: Gateway, server: GatewayServer
) -> list[VirtualService]:
    return [
        vs
        for vs in ctx.traffic.bound_to(gateway.meta.key, proxy.namespace)
        if common_hosts(server, gateway, vs)
    ]


def _where(gateway: Gateway, server: GatewayServer) -> str:
    return f"gateway {gateway.meta.key}: spec.servers[{server.index}] (port {server.port})"


def _conflict(ctx: PushContext, message: str) -> None:
    if message not in ctx.conflicts:
        ctx.conflicts.append(message)
