"""LDS: inbound listeners on the workload's ports, and the outbound HTTP proxy on 15001.

There are no iptables: each listener binds the workload's own 127/8 address, and
apps reach other services by using `<address>:15001` as their HTTP proxy.

An inbound listener is built with what its proxy's security plan requires of the
callers on that port: the mTLS chain(s) of its PeerAuthentication mode (STRICT: mTLS
only; PERMISSIVE: a TLS inspector picks mTLS or plaintext; DISABLE: plaintext), with
the AuthorizationPolicies' RBAC filters in every chain, first.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TypeAlias

from envoy.config.core.v3 import base_pb2, protocol_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from google.protobuf import wrappers_pb2

from xds_server.generators import inbound_auth, naming
from xds_server.generators.access_log import AccessLogs, mesh_access_logs
from xds_server.generators.config_sources import ads_config_source
from xds_server.generators.egress_listeners import egress_port_listeners
from xds_server.generators.endpoints import socket_address
from xds_server.generators.filters import (
    connection_manager,
    outbound_http_filters,
    router_filter,
    tcp_proxy_filter,
)
from xds_server.generators.frozen import Frozen
from xds_server.generators.gateway import gateway_listeners
from xds_server.generators.gateway_tls import HTTP_ALPN, ServerUnbuilt, user_tls_socket
from xds_server.generators.mtls import downstream_tls, tls_inspector
from xds_server.generators.push_context import InboundPlan, Proxy, PushContext
from xds_server.generators.routes import inbound_route_config
from xds_server.generators.security import security_plan
from xds_server.generators.sniffing import sniffed_inbound_chains
from xds_server.generators.tcp_routes import outbound_tcp_listeners
from xds_server.generators.tls_plan import DISABLE, STRICT, InboundSecurity

Listener: TypeAlias = listener_pb2.Listener
HCM: TypeAlias = hcm_pb2.HttpConnectionManager


def outbound_listener(ctx: PushContext, address: str) -> Frozen[Listener]:
    logs = mesh_access_logs(ctx)
    return ctx.shared(("lds-out", address), lambda: _outbound(address, logs))


def inbound_listener(
    ctx: PushContext, plan: InboundPlan, security: InboundSecurity
) -> Frozen[Listener]:
    # Plans are values: two proxies with the same bind, port, app and security share one.
    trust_domain, logs = ctx.mesh.trust_domain, mesh_access_logs(ctx)
    return ctx.shared(
        ("lds-in", plan, security), lambda: _inbound(plan, security, trust_domain, logs)
    )


def build_listeners(ctx: PushContext, proxy: Proxy) -> dict[str, Frozen[Listener]]:
    if proxy.gateways:
        return dict(sorted(gateway_listeners(ctx, proxy).items()))
    inbound = security_plan(ctx, proxy).inbound
    listeners = {
        plan.listener_name: inbound_listener(ctx, plan, inbound[plan]) for plan in proxy.inbound
    }
    listeners.update(outbound_tcp_listeners(ctx, proxy))  # TCP services: <address>:<port>
    for name, listener in egress_port_listeners(ctx, proxy).items():  # Sidecar egress ports
        if name in listeners and listeners[name] is not listener:
            continue  # an inbound listener holds the address (the push context says so)
        listeners[name] = listener
    outbound = outbound_listener(ctx, proxy.address)
    listeners[outbound.name] = outbound
    return dict(sorted(listeners.items()))


def _outbound(address: str, logs: AccessLogs) -> Listener:
    hcm = HCM(
        stat_prefix=naming.OUTBOUND_STAT_PREFIX,
        rds=hcm_pb2.Rds(
            config_source=ads_config_source(), route_config_name=naming.OUTBOUND_ROUTE_NAME
        ),
        # Apps send absolute-form requests (`GET http://reviews:9080/`) to a proxy; the
        # authority then becomes the Host that the route configuration matches on.
        http_protocol_options=protocol_pb2.Http1ProtocolOptions(
            allow_absolute_url=wrappers_pb2.BoolValue(value=True)
        ),
        http_filters=outbound_http_filters(),
    )
    return _listener(
        naming.listener_name(address, naming.OUTBOUND_HTTP_PORT),
        address,
        naming.OUTBOUND_HTTP_PORT,
        base_pb2.OUTBOUND,
        listener_components_pb2.FilterChain(filters=[connection_manager(hcm, logs)]),
    )


def _inbound(
    plan: InboundPlan, security: InboundSecurity, trust_domain: str, logs: AccessLogs
) -> Listener:
    mode = security.mtls_mode
    if plan.tls is not None:  # the user's TLS (mode DISABLE: the security plan made sure)
        chain = _inbound_chain(plan, security, logs, tls=False)
        alpn = HTTP_ALPN if naming.is_http(plan.protocol) else ()
        try:
            chain.transport_socket.CopyFrom(user_tls_socket(plan.tls, alpn))
        except ServerUnbuilt as err:  # Galley read the files: only a bug gets here
            raise ValueError(f"{plan.listener_name}: {err}") from err
        return _listener(plan.listener_name, plan.bind, plan.port, base_pb2.INBOUND, chain)
    if plan.protocol == "":  # no protocol: HTTP or TCP per connection (generators.sniffing)

        def chain(http: bool, tls: bool) -> listener_components_pb2.FilterChain:
            protocol = "HTTP" if http else "TCP"
            built = _inbound_chain(replace(plan, protocol=protocol), security, logs, tls=tls)
            if tls:
                built.transport_socket.CopyFrom(downstream_tls(trust_domain))
            return built

        filters, chains = sniffed_inbound_chains(mode, chain)
        listener = _listener(
            plan.listener_name, plan.bind, plan.port, base_pb2.INBOUND, chain(False, False)
        )
        del listener.filter_chains[:]
        listener.filter_chains.extend(chains)
        listener.listener_filters.extend(filters)
        return listener
    plain = _inbound_chain(plan, security, logs, tls=False)
    listener = _listener(plan.listener_name, plan.bind, plan.port, base_pb2.INBOUND, plain)
    if mode == DISABLE:
        return listener
    secure = _inbound_chain(plan, security, logs, tls=True)
    secure.transport_socket.CopyFrom(downstream_tls(trust_domain))
    del listener.filter_chains[:]
    if mode == STRICT:
        listener.filter_chains.append(secure)
        return listener
    # PERMISSIVE: the TLS inspector tells mTLS clients from plaintext ones.
    listener.listener_filters.append(tls_inspector())
    secure.filter_chain_match.transport_protocol = "tls"
    plain.filter_chain_match.transport_protocol = "raw_buffer"
    listener.filter_chains.extend([secure, plain])
    return listener


def _inbound_chain(
    plan: InboundPlan, security: InboundSecurity, logs: AccessLogs, *, tls: bool
) -> listener_components_pb2.FilterChain:
    """The app's filters with the workload's authn/authz first (`inbound_auth`); XFCC
    set on the mTLS chain."""
    if not naming.is_http(plan.protocol):
        # TCP: the network RBAC filters go first, before the proxying filter.
        return listener_components_pb2.FilterChain(
            filters=[
                *inbound_auth.network_filters(security, plan.port),
                tcp_proxy_filter(
                    tcp_proxy_pb2.TcpProxy(
                        stat_prefix=plan.cluster_name, cluster=plan.cluster_name
                    ),
                    logs,
                ),
            ]
        )
    hcm = HCM(
        stat_prefix=naming.inbound_stat_prefix(plan.port),
        route_config=inbound_route_config(plan.port, plan.cluster_name),
        http_filters=[*inbound_auth.http_filters(security, plan.port), router_filter()],
    )
    if tls:
        # The app sees who called: XFCC with By= (us) and URI= (the peer). The
        # plaintext chain keeps the default SANITIZE: nobody can forge the header.
        hcm.forward_client_cert_details = HCM.SANITIZE_SET
        hcm.set_current_client_cert_details.CopyFrom(
            HCM.SetCurrentClientCertDetails(subject=wrappers_pb2.BoolValue(value=True), uri=True)
        )
    return listener_components_pb2.FilterChain(filters=[connection_manager(hcm, logs)])


def _listener(
    name: str,
    address: str,
    port: int,
    direction: int,
    chain: listener_components_pb2.FilterChain,
) -> Listener:
    return Listener(
        name=name,
        address=socket_address(address, port),
        traffic_direction=direction,
        filter_chains=[chain],
    )
