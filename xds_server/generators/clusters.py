"""CDS: outbound clusters per visible service port, inbound clusters per app port.

Mirrors Istio's cluster builder: `outbound|<port>||<host>` over EDS (or DNS for
DNS-resolved services), `inbound|<port>||` pointing at the local app. An outbound
cluster is built with the TLS its proxy's security plan gives it (auto-mTLS, or the
DestinationRule's `tls`): secure from the start, never patched afterwards. Clusters
are shared by every proxy that sees them, as read-only `Frozen` messages.
"""

from __future__ import annotations

from typing import TypeAlias

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import protocol_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import duration_pb2

from xds_server.galley.names import is_unix
from xds_server.generators import locality, naming
from xds_server.generators.config_sources import ads_config_source
from xds_server.generators.endpoints import (
    lb_endpoint,
    load_assignment,
    locality_view,
    scope_locality_key,
)
from xds_server.generators.frozen import Frozen
from xds_server.generators.mtls import upstream_socket
from xds_server.generators.passthrough import (
    PASSTHROUGH_CLUSTER,
    allows_any,
    egress_proxy_cluster,
    forwarding_cluster,
)
from xds_server.generators.proxy_protocol import with_proxy_protocol
from xds_server.generators.push_context import (
    InboundPlan,
    OutboundService,
    Proxy,
    PushContext,
    is_ip,
)
from xds_server.generators.security import UnbuildableConfig, security_plan
from xds_server.generators.tls_plan import UpstreamTLS
from xds_server.generators.traffic_policy import (
    apply_connection_pool,
    apply_traffic_policy,
    duration,
    http_protocol_options,
    mesh_cluster_defaults,
    set_http_protocol_options,
)

Cluster: TypeAlias = cluster_pb2.Cluster

CONNECT_TIMEOUT = duration_pb2.Duration(seconds=10)

# Istio: DNS -> STRICT_DNS (all addresses), DNS_ROUND_ROBIN -> LOGICAL_DNS (first address).
_DNS_TYPES = {"DNS": Cluster.STRICT_DNS, "DNS_ROUND_ROBIN": Cluster.LOGICAL_DNS}


def outbound_cluster(
    ctx: PushContext, svc: OutboundService, tls: UpstreamTLS, proxy: Proxy | None = None
) -> Frozen[Cluster]:
    """The cluster of `svc` for `proxy` (None: a sidecar that sees it like any other).

    Most clusters are the same for every proxy. A sidecar forwards HTTP ports of
    resolution NONE and PASSTHROUGH to the request's authority, where a gateway
    load-balances (Istio); a DNS cluster's inline endpoints follow the proxy's
    locality when locality load balancing applies.
    """
    sidecar = proxy is None or not proxy.gateways
    view: object = ()
    if proxy is not None and not svc.uses_eds and locality.per_proxy(svc.policy):
        view = locality_view(proxy, locality.priority_labels(svc.policy))
    key = ("cds", svc, tls, sidecar and svc.forwards, view)
    return ctx.shared(key, lambda: _outbound(ctx, svc, tls, proxy, sidecar=sidecar))


def inbound_cluster(ctx: PushContext, plan: InboundPlan) -> Frozen[Cluster]:
    # Keyed by content, not by proxy: equal app upstreams share one message.
    http2 = naming.is_http2(plan.protocol)
    key = (
        "cds-in",
        plan.cluster_name,
        plan.upstream_host,
        plan.upstream_port,
        http2,
        plan.connection_pool,
    )
    settings = ctx.mesh.settings
    timeout = settings.connect_timeout_ms if settings is not None else None
    return ctx.shared((*key, timeout), lambda: _inbound(plan, timeout))


def scope_clusters(ctx: PushContext, proxy: Proxy) -> dict[str, Frozen[Cluster]]:
    """The outbound clusters of the proxy's scope, one dict per scope (callers copy it)."""
    scope = proxy.scope

    def build() -> dict[str, Frozen[Cluster]]:
        upstream = security_plan(ctx, proxy).upstream  # the same for the whole scope
        return {
            svc.cluster_name: outbound_cluster(ctx, svc, upstream[svc], proxy)
            for svc in scope.services
        }

    key = ("cds-scope", scope, not proxy.gateways, scope_locality_key(ctx, proxy))
    return ctx.memoize(key, build)


def build_clusters(ctx: PushContext, proxy: Proxy) -> dict[str, Frozen[Cluster]]:
    clusters = dict(scope_clusters(ctx, proxy))
    sidecar = proxy.sidecar
    if not proxy.gateways and allows_any(sidecar, ctx.mesh):  # the 15001 proxy's catch-all
        egress = egress_proxy_cluster(sidecar, ctx.traffic.service_ports) if sidecar else ""
        if not egress:
            clusters[PASSTHROUGH_CLUSTER] = ctx.shared(
                ("cds-passthrough",), lambda: forwarding_cluster(PASSTHROUGH_CLUSTER)
            )
        elif egress not in clusters and sidecar is not None:
            raise UnbuildableConfig(
                f"{sidecar.meta.source}: Sidecar {sidecar.meta.key}: "
                f"spec.outboundTrafficPolicy.egressProxy: {proxy.node_id} cannot reach "
                f"{sidecar.egress_proxy.host if sidecar.egress_proxy else ''}: its Sidecar's "
                "egress hosts do not import it (add it to spec.egress[].hosts)"
            )
    for plan in proxy.inbound:
        clusters[plan.cluster_name] = inbound_cluster(ctx, plan)
    return dict(sorted(clusters.items()))


def _outbound(
    ctx: PushContext,
    svc: OutboundService,
    tls: UpstreamTLS,
    proxy: Proxy | None,
    *,
    sidecar: bool,
) -> Cluster:
    forwarding = sidecar and svc.forwards
    if forwarding:
        cluster = forwarding_cluster(svc.cluster_name)
    else:
        cluster = Cluster(
            name=svc.cluster_name,
            connect_timeout=CONNECT_TIMEOUT,
            lb_policy=Cluster.ROUND_ROBIN,
        )
    if forwarding:
        pass  # the authority names the endpoint
    elif svc.uses_eds:
        cluster.type = Cluster.EDS
        cluster.eds_cluster_config.CopyFrom(
            Cluster.EdsClusterConfig(eds_config=ads_config_source(), service_name=svc.cluster_name)
        )
    else:
        cluster.type = _DNS_TYPES[svc.service.resolution]
        # Apps here listen on 127/8: `localhost` must be 127.0.0.1, not ::1 (Envoy's
        # AUTO prefers IPv6); IPv6-only names still resolve.
        cluster.dns_lookup_family = Cluster.V4_PREFERRED
        cluster.load_assignment.CopyFrom(_dns_assignment(ctx, svc, cluster.type, proxy))
    _set_protocol(cluster, svc.port.protocol)
    settings = ctx.mesh.settings
    mesh_cluster_defaults(cluster, settings, svc.policy, svc.port.carries_http)
    apply_traffic_policy(cluster, svc.policy, svc.port.carries_http)
    if forwarding:
        cluster.lb_policy = Cluster.CLUSTER_PROVIDED  # the policy's algorithm has no hosts
        cluster.ClearField("round_robin_lb_config")
        cluster.ClearField("least_request_lb_config")
        cluster.ClearField("ring_hash_lb_config")
        cluster.ClearField("maglev_lb_config")
    elif (zone := locality.zone_aware(svc.policy)) is not None:
        # Istio's ZoneAwareLBSettings.ApplyToCluster; Envoy acts on it only with the
        # proxy's own cluster (self-discovery), which pocketmesh does not give.
        config = cluster.common_lb_config.zone_aware_lb_config
        config.SetInParent()
        if zone.min_cluster_size is not None:
            config.min_cluster_size.value = zone.min_cluster_size
        if zone.enabled is False:
            config.routing_enabled.value = 0
    elif locality.weighted(svc.policy):
        cluster.common_lb_config.locality_weighted_lb_config.SetInParent()
    if svc.policy is not None and svc.policy.tunnel and not naming.is_http2(svc.port.protocol):
        # A forward proxy: HTTP/1.1 CONNECT (Envoy's default would be h2), unless its port
        # says HTTP2 or GRPC (those clusters are h2 already).
        set_http_protocol_options(cluster, http_protocol_options(cluster))
    socket = upstream_socket(tls, http2=naming.is_http2(svc.port.protocol))
    if svc.policy is not None and svc.policy.proxy_protocol:  # the header, then the TLS
        socket = with_proxy_protocol(socket, svc.policy.proxy_protocol)
    if socket is not None:
        cluster.transport_socket.CopyFrom(socket)
    if tls.auto_sni or tls.auto_san_validation:
        options = http_protocol_options(cluster)
        upstream = options.upstream_http_protocol_options
        upstream.auto_sni = tls.auto_sni
        upstream.auto_san_validation = tls.auto_san_validation
        set_http_protocol_options(cluster, options)
    return cluster


def _dns_assignment(
    ctx: PushContext, svc: OutboundService, cluster_type: int, proxy: Proxy | None
) -> endpoint_pb2.ClusterLoadAssignment:
    if svc.endpoints:
        cla = load_assignment(ctx, svc, proxy).copy()
        if cluster_type == Cluster.LOGICAL_DNS:
            # Envoy rejects a LOGICAL_DNS cluster with more than one endpoint.
            first = cla.endpoints[0]
            del cla.endpoints[1:]
            del first.lb_endpoints[1:]
        return cla
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=svc.cluster_name)
    if not svc.host.startswith("*"):  # a wildcard host cannot be resolved
        port = svc.port.target_port or svc.port.number
        cla.endpoints.append(
            endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[lb_endpoint(svc.host, port)])
        )
    return cla


def _inbound(plan: InboundPlan, connect_timeout_ms: int | None) -> Cluster:
    cluster = Cluster(
        name=plan.cluster_name,
        # The mesh settings' connectTimeout (Istio applies it to every cluster).
        connect_timeout=(
            CONNECT_TIMEOUT if connect_timeout_ms is None else duration(connect_timeout_ms)
        ),
        lb_policy=Cluster.ROUND_ROBIN,
        # An app named by host (defaultEndpoint "app:8080") needs resolving; IPs do not.
        type=(
            Cluster.STATIC
            if is_ip(plan.upstream_host) or is_unix(plan.upstream_host)
            else Cluster.STRICT_DNS
        ),
        load_assignment=endpoint_pb2.ClusterLoadAssignment(
            cluster_name=plan.cluster_name,
            endpoints=[
                endpoint_components_pb2.LocalityLbEndpoints(
                    lb_endpoints=[lb_endpoint(plan.upstream_host, plan.upstream_port)]
                )
            ],
        ),
    )
    _set_protocol(cluster, plan.protocol)
    if plan.connection_pool is not None:  # Sidecar (inbound)ConnectionPool, as Istio
        http = naming.is_http(plan.protocol) or plan.protocol == ""  # "": sniffed
        apply_connection_pool(cluster, plan.connection_pool, http)
    return cluster


def _set_protocol(cluster: Cluster, protocol: str) -> None:
    """HTTP2/gRPC upstreams must be told to speak h2; everything else stays default."""
    if not naming.is_http2(protocol):
        return
    options = http_protocol_options_pb2.HttpProtocolOptions(
        explicit_http_config=http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig(
            http2_protocol_options=protocol_pb2.Http2ProtocolOptions()
        )
    )
    set_http_protocol_options(cluster, options)
