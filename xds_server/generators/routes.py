"""RDS: the outbound route configuration `15001`, plus the inline inbound one.

One virtual host per visible (host, HTTP port); the domains were allocated in the
push context (short-name rule, port-80 rule, first-claim-wins on duplicates).
No catch-all `*` vhost: an unknown host gets Envoy's 404.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeAlias

from envoy.config.route.v3 import route_components_pb2, route_pb2
from google.protobuf import duration_pb2, wrappers_pb2

from xds_server.galley.model import EMPTY_LABELS
from xds_server.generators import naming
from xds_server.generators.frozen import Frozen
from xds_server.generators.http_routes import (
    mesh_default_retries,
    retry_policy,
    virtual_service_routes,
)
from xds_server.generators.passthrough import (
    PASSTHROUGH_CLUSTER,
    allow_any_virtual_host,
    allows_any,
    egress_proxy_cluster,
)
from xds_server.generators.push_context import Proxy, PushContext, SidecarScope, VirtualHostPlan
from xds_server.generators.traffic_policy import hash_policies

RouteConfiguration: TypeAlias = route_pb2.RouteConfiguration

# Istio disables Envoy's default 15 s route timeout; 0s means none.
NO_TIMEOUT = duration_pb2.Duration(seconds=0)


def outbound_route_config(
    ctx: PushContext, scope: SidecarScope, labels: Mapping[str, str] = EMPTY_LABELS
) -> Frozen[RouteConfiguration]:
    """Shared by every proxy of the scope (same namespace, same Sidecar) whose labels
    match the same VirtualService `sourceLabels`."""
    key = ("rds", scope, ctx.traffic.source_key(labels))
    return ctx.shared(key, lambda: _outbound(ctx, scope, labels))


def build_routes(ctx: PushContext, proxy: Proxy) -> dict[str, Frozen[RouteConfiguration]]:
    """A sidecar's route configs (a gateway's: `gateway.gateway_route_configs`)."""
    labels = proxy.workload.labels
    return {naming.OUTBOUND_ROUTE_NAME: outbound_route_config(ctx, proxy.scope, labels)}


def inbound_route_config(port: int, cluster: str) -> RouteConfiguration:
    """Everything arriving on an inbound port goes to the app behind it."""
    return RouteConfiguration(
        name=naming.inbound_cluster(port),
        virtual_hosts=[
            route_components_pb2.VirtualHost(
                name=naming.inbound_vhost(port), domains=["*"], routes=[_route_to(cluster)]
            )
        ],
        validate_clusters=wrappers_pb2.BoolValue(value=False),
    )


def _outbound(
    ctx: PushContext, scope: SidecarScope, labels: Mapping[str, str]
) -> RouteConfiguration:
    virtual_hosts = [_virtual_host(ctx, scope, plan, labels) for plan in scope.virtual_hosts]
    if allows_any(scope.sidecar, ctx.mesh):  # hosts outside the registry: where they say
        proxy = (
            egress_proxy_cluster(scope.sidecar, ctx.traffic.service_ports)
            if scope.sidecar is not None
            else ""
        )
        virtual_hosts.append(allow_any_virtual_host(proxy or PASSTHROUGH_CLUSTER))
    return RouteConfiguration(
        name=naming.OUTBOUND_ROUTE_NAME,
        virtual_hosts=virtual_hosts,
        # Clusters and routes arrive on separate streams; do not reject a route for a
        # cluster Envoy has not seen yet.
        validate_clusters=wrappers_pb2.BoolValue(value=False),
    )


def _virtual_host(
    ctx: PushContext, scope: SidecarScope, plan: VirtualHostPlan, labels: Mapping[str, str]
) -> route_components_pb2.VirtualHost:
    vs = ctx.traffic.virtual_service(plan.host, scope.namespace) if plan.host else None
    if vs is None:
        routes = [_route_to(plan.cluster)]
        # DestinationRule consistentHash: the route says what to hash on.
        action = routes[0].route
        action.hash_policy.extend(hash_policies(plan.policy))
        if (retries := mesh_default_retries(ctx.mesh)) is not None and retries.attempts > 0:
            action.retry_policy.CopyFrom(retry_policy(retries, hashing=bool(action.hash_policy)))
    else:  # Istio: the VirtualService's rules only; no match means 404
        # The same for every scope that sees the host (unscoped: 100 namespaces), except
        # through what sourceLabels and sourceNamespace match; the vhost copies them.
        by_namespace = any(m.source_namespace for http in vs.http for m in http.match)
        key = (
            "vs-routes",
            id(vs),  # the context holds the mesh, so the id stays this object's
            plan.port,
            ctx.traffic.source_key(labels),
            scope.namespace if by_namespace else "",
        )
        routes = ctx.memoize(
            key,
            lambda: virtual_service_routes(
                ctx.traffic, vs, port=plan.port, labels=labels, namespace=scope.namespace
            ),
        )
    return route_components_pb2.VirtualHost(
        name=plan.name, domains=list(plan.domains), routes=routes
    )


def _route_to(cluster: str) -> route_components_pb2.Route:
    return route_components_pb2.Route(
        match=route_components_pb2.RouteMatch(prefix="/"),
        route=route_components_pb2.RouteAction(cluster=cluster, timeout=NO_TIMEOUT),
    )


def any_host_virtual_host(
    ctx: PushContext, scope: SidecarScope, cluster: str, labels: Mapping[str, str]
) -> route_components_pb2.VirtualHost | None:
    """The virtual host of `cluster`'s service as the 15001 proxy has it, for any Host:
    a listener of the service's own port (protocol sniffing) routes only to it."""
    vhost = service_virtual_host(ctx, scope, cluster, labels)
    if vhost is not None:
        del vhost.domains[:]
        vhost.domains.append("*")
    return vhost


def service_virtual_host(
    ctx: PushContext,
    scope: SidecarScope,
    cluster: str,
    labels: Mapping[str, str],
    extra_domains: tuple[str, ...] = (),
) -> route_components_pb2.VirtualHost | None:
    """The 15001 proxy's virtual host of `cluster`'s service, with more domains (a
    Sidecar egress listener on the service's port also takes its port-less names)."""
    plan = next((p for p in scope.virtual_hosts if p.cluster == cluster), None)
    if plan is None:
        return None
    vhost = route_components_pb2.VirtualHost()
    vhost.CopyFrom(_virtual_host(ctx, scope, plan, labels))
    vhost.domains.extend(d for d in extra_domains if d not in vhost.domains)
    return vhost
