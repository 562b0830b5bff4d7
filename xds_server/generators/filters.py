"""The Envoy filters several listener generators build (sidecar inbound and outbound
listeners, Sidecar egress ports, sniffed ports, gateways): Envoy's names for them, and
each built one way."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.listener.v3 import listener_components_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from xds_server.generators.http_routes import traffic_http_filters
from xds_server.generators.passthrough import forward_proxy_filter
from xds_server.generators.typed_config import pack

HCM_FILTER: Final = "envoy.filters.network.http_connection_manager"
TCP_PROXY_FILTER: Final = "envoy.filters.network.tcp_proxy"
ROUTER_FILTER: Final = "envoy.filters.http.router"


def connection_manager(
    hcm: hcm_pb2.HttpConnectionManager, logs: Sequence[accesslog_pb2.AccessLog]
) -> listener_components_pb2.Filter:
    """The HTTP connection manager as a listener's network filter, logging to `logs`
    (the mesh's access log, `access_log.mesh_access_logs`)."""
    if logs:  # on a copy: the caller's message may be shared
        logged = hcm_pb2.HttpConnectionManager()
        logged.CopyFrom(hcm)
        logged.access_log.extend(logs)
        hcm = logged
    return listener_components_pb2.Filter(name=HCM_FILTER, typed_config=pack(hcm))


def tcp_proxy_filter(
    config: tcp_proxy_pb2.TcpProxy, logs: Sequence[accesslog_pb2.AccessLog]
) -> listener_components_pb2.Filter:
    if logs:  # on a copy: the caller's message may be shared
        logged = tcp_proxy_pb2.TcpProxy()
        logged.CopyFrom(config)
        logged.access_log.extend(logs)
        config = logged
    return listener_components_pb2.Filter(name=TCP_PROXY_FILTER, typed_config=pack(config))


def router_filter() -> hcm_pb2.HttpFilter:
    """Envoy's router: the last HTTP filter of every connection manager."""
    return hcm_pb2.HttpFilter(name=ROUTER_FILTER, typed_config=pack(router_pb2.Router()))


def outbound_http_filters() -> list[hcm_pb2.HttpFilter]:
    """A sidecar's outbound HTTP filters: fault and CORS first (VirtualService routes
    configure them per route), then the forward proxy filter, which resolves the
    authority for clusters that forward to it (resolution NONE, PASSTHROUGH, ALLOW_ANY)
    and lets every other request by, then the router."""
    return [*traffic_http_filters(), forward_proxy_filter(), router_filter()]
