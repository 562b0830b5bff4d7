"""Ports without a protocol: HTTP or TCP, told apart per connection (Istio's sniffing).

Istio leaves a port whose protocol is unset to be detected per connection: an HTTP
request is routed as HTTP (VirtualService `http` rules, retries, ...), anything else
is proxied as TCP. pocketmesh does the same wherever a listener sees the bytes:

- outbound, the sidecar's listener on `<its address>:<port>` for such a service puts
  Envoy's HTTP inspector first: HTTP/1.1 and h2c connections get the service's
  routes (the 15001 proxy's virtual host, for any Host), others the TCP proxy. The
  15001 HTTP proxy routes such services too: whoever uses it speaks HTTP.
- inbound, in plaintext the HTTP inspector picks the chain; over mutual TLS it cannot
  read the bytes, so the client's ALPN does, as in Istio: a sidecar's HTTP connection
  pool offers `http/1.1` or `h2`, its TCP proxy offers nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final, TypeAlias

from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.listener.http_inspector.v3 import http_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.sni_dynamic_forward_proxy.v3 import (
    sni_dynamic_forward_proxy_pb2 as sni_dfp_pb2,
)
from google.protobuf import wrappers_pb2

from xds_server.generators.access_log import mesh_access_logs
from xds_server.generators.filters import connection_manager, outbound_http_filters
from xds_server.generators.mtls import tls_inspector
from xds_server.generators.passthrough import dns_cache_config
from xds_server.generators.push_context import OutboundService, Proxy, PushContext
from xds_server.generators.routes import any_host_virtual_host
from xds_server.generators.typed_config import pack

FilterChain: TypeAlias = listener_components_pb2.FilterChain

HTTP_INSPECTOR: Final = "envoy.filters.listener.http_inspector"
SNI_FORWARD_PROXY: Final = "envoy.filters.network.sni_dynamic_forward_proxy"
# What the HTTP inspector reports for plaintext HTTP, and what sidecars offer by ALPN.
PLAIN_HTTP: Final = ("http/1.1", "http/1.0", "h2c")
TLS_HTTP: Final = ("http/1.1", "h2")


def http_inspector() -> listener_components_pb2.ListenerFilter:
    return listener_components_pb2.ListenerFilter(
        name=HTTP_INSPECTOR, typed_config=pack(http_inspector_pb2.HttpInspector())
    )


def sniffed_http_chain(
    ctx: PushContext, proxy: Proxy, svc: OutboundService, labels: Mapping[str, str]
) -> FilterChain | None:
    """The HTTP side of a sniffed outbound port: the service's routes, any Host."""
    vhost = any_host_virtual_host(ctx, proxy.scope, svc.cluster_name, labels)
    if vhost is None:
        return None
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix=svc.cluster_name,
        route_config=route_pb2.RouteConfiguration(
            name=svc.cluster_name,
            virtual_hosts=[vhost],
            validate_clusters=wrappers_pb2.BoolValue(value=False),
        ),
        http_filters=outbound_http_filters(),
    )
    return FilterChain(filters=[connection_manager(hcm, mesh_access_logs(ctx))])


def sniff_outbound(listener: listener_pb2.Listener, http_chain: FilterChain) -> None:
    """Make a TCP proxy listener route HTTP connections by `http_chain` (in place)."""
    listener.listener_filters.insert(0, http_inspector())
    http_chain.filter_chain_match.application_protocols.extend(PLAIN_HTTP)
    listener.filter_chains.insert(0, http_chain)


def sni_forwarding(listener: listener_pb2.Listener, port: int) -> None:
    """A TLS port forwarded to its original destination: the SNI host, on `port`
    (generators.passthrough); the TLS inspector reads the SNI first (in place)."""
    listener.listener_filters.insert(0, tls_inspector())
    config = sni_dfp_pb2.FilterConfig(dns_cache_config=dns_cache_config(), port_value=port)
    forward = listener_components_pb2.Filter(name=SNI_FORWARD_PROXY, typed_config=pack(config))
    for chain in listener.filter_chains:
        chain.filters.insert(0, forward)


# (http, tls) -> the inbound chain for that protocol, with the workload's policies.
ChainBuilder = Callable[[bool, bool], FilterChain]


def sniffed_inbound_chains(
    mode: str, chain: ChainBuilder
) -> tuple[list[listener_components_pb2.ListenerFilter], list[FilterChain]]:
    """(listener filters, chains) of an inbound listener for a port without protocol,
    for its mTLS `mode` (STRICT, PERMISSIVE or DISABLE)."""
    chains: list[FilterChain] = []
    filters: list[listener_components_pb2.ListenerFilter] = []
    if mode != "DISABLE":
        filters.append(tls_inspector())
        secure_http, secure_tcp = chain(True, True), chain(False, True)
        for item in (secure_http, secure_tcp):
            item.filter_chain_match.transport_protocol = "tls"
        secure_http.filter_chain_match.application_protocols.extend(TLS_HTTP)
        chains += [secure_http, secure_tcp]
    if mode != "STRICT":
        filters.append(http_inspector())
        plain_http, plain_tcp = chain(True, False), chain(False, False)
        plain_http.filter_chain_match.application_protocols.extend(PLAIN_HTTP)
        if mode != "DISABLE":
            for item in (plain_http, plain_tcp):
                item.filter_chain_match.transport_protocol = "raw_buffer"
        chains += [plain_http, plain_tcp]
    return filters, chains
