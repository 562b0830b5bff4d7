"""Gateway proxies: listeners on the Gateway servers' ports and their route configs.

A workload whose labels match a Gateway's `selector` is a gateway proxy (Istio's
router): instead of sidecar listeners it gets one listener per server port on its
own address, each with the RDS route config `http.<port>` holding one virtual host
per host of every VirtualService bound to the Gateway (`gateways: [name]`).
"""

from __future__ import annotations

import functools

from envoy.config.core.v3 import base_pb2, config_source_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from google.protobuf import wrappers_pb2

from xds_server.galley.model_traffic import Gateway, GatewayServer, TLSCredential
from xds_server.generators import inbound_auth, naming
from xds_server.generators.endpoints import socket_address
from xds_server.generators.frozen import Frozen
from xds_server.generators.http_routes import pack, traffic_http_filters, virtual_service_routes
from xds_server.generators.push_context import Proxy, PushContext
from xds_server.generators.security import security_plan
from xds_server.generators.sidecar_scope import host_matches

HCM_FILTER = "envoy.filters.network.http_connection_manager"
TLS_SOCKET = "envoy.transport_sockets.tls"
TLS_INSPECTOR = "envoy.filters.listener.tls_inspector"
ROUTER_FILTER = "envoy.filters.http.router"


def route_config_name(port: int) -> str:
    return f"http.{port}"


def _servers(proxy: Proxy) -> dict[int, list[tuple[Gateway, GatewayServer]]]:
    by_port: dict[int, list[tuple[Gateway, GatewayServer]]] = {}
    for gateway in proxy.gateways:
        for server in gateway.servers:
            by_port.setdefault(server.port, []).append((gateway, server))
    return dict(sorted(by_port.items()))


def gateway_listeners(ctx: PushContext, proxy: Proxy) -> dict[str, Frozen[listener_pb2.Listener]]:
    listeners = {}
    for port, servers in _servers(proxy).items():
        name = naming.listener_name(proxy.address, port)
        listener = ctx.shared(
            ("lds-gw", proxy.address, port), functools.partial(_listener, ctx, proxy, port, servers)
        )
        if listener.filter_chains:  # Envoy rejects a listener with none
            listeners[name] = listener
    return listeners


def _listener(
    ctx: PushContext, proxy: Proxy, port: int, servers: list[tuple[Gateway, GatewayServer]]
) -> listener_pb2.Listener:
    """Plain HTTP: one filter chain. HTTPS: one per server, chosen by SNI, each ending TLS
    with its server's certificate; all of them use the port's route config."""
    hcm = _hcm(port, _auth_filters(ctx, proxy, port))
    chains: list[listener_components_pb2.FilterChain] = []
    taken: set[str] = set()  # SNI names already matched ("" for the catch-all chain)
    for gateway, server in servers:
        if server.protocol != "HTTPS" or server.tls is None:
            continue
        credential = _credential(ctx, proxy, gateway, server.tls.credential_name)
        if credential is None:
            continue
        wanted = {h.rpartition("/")[2] for h in server.hosts}
        # Envoy rejects two chains matching the same name: the first server keeps it.
        if "*" in wanted:
            names: tuple[str, ...] = ()
            clash = "" in taken
            taken.add("")
        else:
            names = tuple(sorted(wanted - taken))
            clash = len(names) < len(wanted)
            taken.update(names)
        if clash:
            _conflict(
                ctx,
                f"gateway {gateway.meta.key}: port {port}: hosts {sorted(wanted)} are "
                "already served by an earlier server",
            )
            if not names:
                continue
        chains.append(
            listener_components_pb2.FilterChain(
                filter_chain_match=listener_components_pb2.FilterChainMatch(server_names=names),
                filters=[listener_components_pb2.Filter(name=HCM_FILTER, typed_config=pack(hcm))],
                transport_socket=_tls_socket(credential, server.tls.min_protocol_version),
            )
        )
    plain = [s for _, s in servers if s.protocol != "HTTPS"]
    if plain and len(plain) < len(servers):
        _conflict(ctx, f"{proxy.node_id}: port {port} has HTTP and HTTPS servers; serving HTTPS")
    if not any(server.protocol == "HTTPS" for _, server in servers):
        chains.append(
            listener_components_pb2.FilterChain(
                filters=[listener_components_pb2.Filter(name=HCM_FILTER, typed_config=pack(hcm))]
            )
        )
    return listener_pb2.Listener(
        name=naming.listener_name(proxy.address, port),
        address=socket_address(proxy.address, port),
        traffic_direction=base_pb2.INBOUND,
        filter_chains=chains,
        # TLS servers are told apart by SNI, which this filter reads from the ClientHello.
        listener_filters=[_tls_inspector()] if any(c.transport_socket.name for c in chains) else [],
    )


def _auth_filters(ctx: PushContext, proxy: Proxy, port: int) -> list[hcm_pb2.HttpFilter]:
    """The gateway's CUSTOM, jwt_authn and RBAC filters (`inbound_auth`), first."""
    security = security_plan(ctx, proxy).gateway
    return inbound_auth.http_filters(security, port, gateway=True) if security is not None else []


def _hcm(port: int, auth: list[hcm_pb2.HttpFilter]) -> hcm_pb2.HttpConnectionManager:
    return hcm_pb2.HttpConnectionManager(
        stat_prefix=f"gateway_{port}",
        rds=hcm_pb2.Rds(
            config_source=config_source_pb2.ConfigSource(
                ads=config_source_pb2.AggregatedConfigSource(),
                resource_api_version=config_source_pb2.V3,
            ),
            route_config_name=route_config_name(port),
        ),
        http_filters=[
            *auth,
            *traffic_http_filters(),
            hcm_pb2.HttpFilter(name=ROUTER_FILTER, typed_config=pack(router_pb2.Router())),
        ],
    )


def _credential(
    ctx: PushContext, proxy: Proxy, gateway: Gateway, name: str
) -> TLSCredential | None:
    """Istio looks in the gateway workload's namespace; then the Gateway's."""
    for namespace in (proxy.namespace, gateway.meta.namespace):
        for credential in ctx.mesh.tls_credentials:
            if credential.meta.name == name and credential.meta.namespace == namespace:
                return credential
    _conflict(ctx, f"gateway {gateway.meta.key}: no Secret {name!r}; its server is skipped")
    return None


# Istio's minProtocolVersion -> Envoy's TLS parameters.
_TLS_VERSIONS = {
    "TLS_AUTO": common_pb2.TlsParameters.TLS_AUTO,
    "TLSV1_0": common_pb2.TlsParameters.TLSv1_0,
    "TLSV1_1": common_pb2.TlsParameters.TLSv1_1,
    "TLSV1_2": common_pb2.TlsParameters.TLSv1_2,
    "TLSV1_3": common_pb2.TlsParameters.TLSv1_3,
}


def _tls_socket(credential: TLSCredential, min_version: str = "") -> base_pb2.TransportSocket:
    # Inline over ADS, to this gateway only; SDS would keep keys out of config dumps.
    context = tls_pb2.DownstreamTlsContext(
        common_tls_context=tls_pb2.CommonTlsContext(
            tls_certificates=[
                common_pb2.TlsCertificate(
                    certificate_chain=base_pb2.DataSource(inline_string=credential.cert_pem),
                    private_key=base_pb2.DataSource(inline_string=credential.key_pem),
                )
            ],
            alpn_protocols=["h2", "http/1.1"],
        )
    )
    if min_version:
        context.common_tls_context.tls_params.tls_minimum_protocol_version = _TLS_VERSIONS[
            min_version
        ]
    return base_pb2.TransportSocket(name=TLS_SOCKET, typed_config=pack(context))


def _tls_inspector() -> listener_components_pb2.ListenerFilter:
    return listener_components_pb2.ListenerFilter(
        name=TLS_INSPECTOR, typed_config=pack(tls_inspector_pb2.TlsInspector())
    )


def _conflict(ctx: PushContext, message: str) -> None:
    if message not in ctx.conflicts:
        ctx.conflicts.append(message)


def gateway_route_configs(
    ctx: PushContext, proxy: Proxy
) -> dict[str, Frozen[route_pb2.RouteConfiguration]]:
    return {
        route_config_name(port): Frozen(_route_config(ctx, proxy, port, servers))
        for port, servers in _servers(proxy).items()
    }


def _route_config(
    ctx: PushContext, proxy: Proxy, port: int, servers: list[tuple[Gateway, GatewayServer]]
) -> route_pb2.RouteConfiguration:
    traffic = ctx.traffic
    vhosts: list[rc.VirtualHost] = []
    taken: set[str] = set()
    for gateway, server in servers:
        key = gateway.meta.key
        for vs in traffic.bound_to(key):
            for host in vs.hosts:
                if not _server_admits(server, gateway, vs.meta.namespace, host):
                    continue
                domains = [d for d in _domains(host, port) if d not in taken]
                if not domains:
                    ctx.conflicts.append(
                        f"gateway {key}: host {host} of {vs.meta.key} on port {port} "
                        "is already routed; skipped"
                    )
                    continue
                taken.update(domains)
                routes = virtual_service_routes(
                    traffic,
                    vs,
                    port=port,
                    labels=proxy.workload.labels,
                    namespace=proxy.namespace,
                    gateway=key,
                )
                vhost = rc.VirtualHost(name=f"{host}:{port}", domains=domains, routes=routes)
                if server.tls is not None and server.tls.https_redirect:
                    vhost.require_tls = rc.VirtualHost.ALL  # Istio's httpsRedirect: a 301
                vhosts.append(vhost)
    return route_pb2.RouteConfiguration(
        name=route_config_name(port),
        virtual_hosts=vhosts,
        validate_clusters=wrappers_pb2.BoolValue(value=False),
    )


def _domains(host: str, port: int) -> list[str]:
    return ["*"] if host == "*" else [host, f"{host}:{port}"]


def _server_admits(server: GatewayServer, gateway: Gateway, namespace: str, host: str) -> bool:
    """A server host `ns/pattern` admits VirtualServices of `ns` (`.`: the Gateway's, `*`:
    any) whose host it matches, or that are wildcards covering it."""
    for entry in server.hosts:
        ns, slash, pattern = entry.rpartition("/")
        if slash:
            ns = gateway.meta.namespace if ns == "." else ns
            if ns not in ("*", namespace):
                continue
        if host_matches(pattern, host) or host_matches(host, pattern):
            return True
    return False
