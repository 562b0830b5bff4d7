"""Forwarding to where a request says it goes: Istio's ORIGINAL_DST, on an HTTP proxy.

Istio forwards some traffic to its *original destination*, the address iptables
caught the connection on: ServiceEntries with `resolution: NONE`, DestinationRules
with `loadBalancer.simple: PASSTHROUGH`, and (Sidecar `outboundTrafficPolicy:
ALLOW_ANY`) any host outside the registry. pocketmesh has no iptables: apps send
their requests to the sidecar's HTTP proxy on :15001, so the original destination of
a request is its authority (`GET http://api.example.com:8080/`). These clusters are
Envoy's dynamic forward proxy: the authority is resolved by DNS (as the app would
have resolved it) and the request goes there. An IP authority needs no lookup.

A TCP connection to the sidecar names no destination (it is addressed to the
sidecar), so none of this applies to TCP ports; Galley says so where it matters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, TypeAlias

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.clusters.dynamic_forward_proxy.v3 import cluster_pb2 as dfp_cluster_pb2
from envoy.extensions.common.dynamic_forward_proxy.v3 import dns_cache_pb2
from envoy.extensions.filters.http.dynamic_forward_proxy.v3 import (
    dynamic_forward_proxy_pb2 as dfp_filter_pb2,
)
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import duration_pb2

from xds_server.galley.model import MeshConfig, Sidecar
from xds_server.generators import naming
from xds_server.generators.typed_config import pack

Cluster: TypeAlias = cluster_pb2.Cluster

DFP_CLUSTER_TYPE: Final = "envoy.clusters.dynamic_forward_proxy"
DFP_FILTER: Final = "envoy.filters.http.dynamic_forward_proxy"
# One DNS cache per Envoy, shared by the filter and every forwarding cluster: Envoy
# requires that every config naming the cache be identical.
DNS_CACHE: Final = "pocketmesh_original_dst"
# Istio's names for where ALLOW_ANY traffic goes.
PASSTHROUGH_CLUSTER: Final = "PassthroughCluster"
ALLOW_ANY_VHOST: Final = "allow_any"
CONNECT_TIMEOUT = duration_pb2.Duration(seconds=10)


def dns_cache_config() -> dns_cache_pb2.DnsCacheConfig:
    # V4_PREFERRED: `localhost` is 127.0.0.1 first (apps here listen on 127/8), and
    # IPv6-only names still resolve.
    return dns_cache_pb2.DnsCacheConfig(
        name=DNS_CACHE, dns_lookup_family=cluster_pb2.Cluster.V4_PREFERRED
    )


def forward_proxy_filter() -> hcm_pb2.HttpFilter:
    """The HTTP filter that resolves the authority for forwarding clusters (a no-op
    for requests routed to any other cluster); before the router."""
    config = dfp_filter_pb2.FilterConfig(dns_cache_config=dns_cache_config())
    return hcm_pb2.HttpFilter(name=DFP_FILTER, typed_config=pack(config))


def forwarding_cluster(name: str) -> Cluster:
    """A cluster that sends each request to the address its authority names.

    Envoy insists on `auto_sni` and `auto_san_validation` for such a cluster as soon as
    it has HTTP protocol options (a DestinationRule's connection pool or outlier
    settings add them), unless told otherwise: here the SANs to check come from the
    DestinationRule or the mesh (`generators.security`), not from the authority, and a
    plaintext upstream checks none, so that is what is meant.
    """
    config = dfp_cluster_pb2.ClusterConfig(
        dns_cache_config=dns_cache_config(), allow_insecure_cluster_options=True
    )
    return Cluster(
        name=name,
        connect_timeout=CONNECT_TIMEOUT,
        lb_policy=Cluster.CLUSTER_PROVIDED,
        cluster_type=cluster_pb2.Cluster.CustomClusterType(
            name=DFP_CLUSTER_TYPE, typed_config=pack(config)
        ),
    )


def is_forwarding(cluster: Cluster) -> bool:
    return cluster.HasField("cluster_type") and cluster.cluster_type.name == DFP_CLUSTER_TYPE


def allows_any(sidecar: Sidecar | None, mesh: MeshConfig) -> bool:
    """`outboundTrafficPolicy: ALLOW_ANY`, from the workload's Sidecar or else the mesh
    settings (pocketmesh's default: REGISTRY_ONLY)."""
    mode = sidecar.outbound_traffic_policy if sidecar is not None else ""
    if not mode and mesh.settings is not None:
        mode = mesh.settings.outbound_mode
    return mode == "ALLOW_ANY"


def allow_any_virtual_host(cluster: str = PASSTHROUGH_CLUSTER) -> route_components_pb2.VirtualHost:
    """Every Host no other virtual host claims: to the host the request names, or to
    the Sidecar's egress proxy (`cluster`), Host unchanged."""
    return route_components_pb2.VirtualHost(
        name=ALLOW_ANY_VHOST,
        domains=["*"],
        routes=[
            route_components_pb2.Route(
                match=route_components_pb2.RouteMatch(prefix="/"),
                route=route_components_pb2.RouteAction(
                    cluster=cluster, timeout=duration_pb2.Duration(seconds=0)
                ),
            )
        ],
    )


def egress_proxy_cluster(sidecar: Sidecar, ports_of: Callable[[str], tuple[int, ...]]) -> str:
    """The outbound cluster of the Sidecar's egress proxy ('' if it names none); a
    port-less destination takes its service's one port (Galley checks there is one)."""
    dest = sidecar.egress_proxy
    if dest is None:
        return ""
    port = dest.port or next(iter(ports_of(dest.host)), 0)
    return naming.outbound_cluster(port, dest.host, dest.subset)
