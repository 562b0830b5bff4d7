"""Mutual TLS: PeerAuthentication on the inbound side, auto-mTLS on the outbound side.

Inbound, each workload port gets the mode Istio would give it (workload policy's
`portLevelMtls`, else the workload policy, else the namespace's, else the
mesh-wide one in the root namespace, else PERMISSIVE):

- STRICT: one filter chain that requires a client certificate from the mesh CA;
- PERMISSIVE: a TLS inspector picks the chain: `transport_protocol: tls` gets
  the mTLS chain, `raw_buffer` the plaintext one;
- DISABLE: plaintext only.

Outbound, a cluster speaks ISTIO_MUTUAL when every endpoint is a mesh workload
whose sidecar listens on that port in a mode other than DISABLE (auto-mTLS), or
when a DestinationRule says `tls.mode: ISTIO_MUTUAL`; `DISABLE` forces plaintext.
Both sides take their certificate (`default`) and the roots (`ROOTCA`) by SDS over
ADS and check the peer's SPIFFE ID: inbound any ID of the trust domain, outbound
exactly the destination workloads' IDs.

`secure(ctx, proxy, resources)` rewrites what the other generators built; every
result is memoized in the push context, so equal inputs share one message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, TypeAlias

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2, config_source_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import any_pb2, message, wrappers_pb2

from xds_server import xds_types
from xds_server.galley.model import MeshConfig, WorkloadEntry, labels_match
from xds_server.galley.model_security import DEFAULT_MTLS_MODE, PeerAuthentication
from xds_server.generators import authz, naming
from xds_server.generators.clusters import ads_config_source
from xds_server.generators.push_context import InboundPlan, OutboundService, Proxy, PushContext
from xds_server.listener_filters import HCM_TYPE

WORKLOAD_SECRET: Final = "default"
ROOT_SECRET: Final = "ROOTCA"
TLS_SOCKET: Final = "envoy.transport_sockets.tls"
TLS_INSPECTOR: Final = "envoy.filters.listener.tls_inspector"

ISTIO_MUTUAL: Final = "ISTIO_MUTUAL"
DISABLE: Final = "DISABLE"

HCM: TypeAlias = hcm_pb2.HttpConnectionManager
Listener: TypeAlias = listener_pb2.Listener
Cluster: TypeAlias = cluster_pb2.Cluster


# --- PeerAuthentication --------------------------------------------------------


def peer_mode(mesh: MeshConfig, workload: WorkloadEntry, port: int) -> str:
    """The inbound mTLS mode of `workload` on `port`: STRICT, PERMISSIVE or DISABLE."""
    ns = workload.meta.namespace
    levels: list[PeerAuthentication | None] = [
        _first(mesh, lambda pa: pa.meta.namespace == mesh.root_namespace and not pa.selector),
        _first(mesh, lambda pa: pa.meta.namespace == ns and not pa.selector)
        if ns != mesh.root_namespace
        else None,
        _first(
            mesh,
            lambda pa: (
                pa.meta.namespace == ns
                and bool(pa.selector)
                and labels_match(pa.selector, workload.labels)
            ),
        ),
    ]
    mode = DEFAULT_MTLS_MODE
    for policy in levels:
        if policy is not None and policy.mode != "UNSET":
            mode = policy.mode
    workload_policy = levels[2]
    if workload_policy is not None:
        port_mode = workload_policy.port_level.get(port, "UNSET")
        if port_mode != "UNSET":
            mode = port_mode
    return mode


def _first(
    mesh: MeshConfig, select: Callable[[PeerAuthentication], bool]
) -> PeerAuthentication | None:
    # Several policies at one level: Istio takes the oldest; we take the first by name.
    return next((pa for pa in mesh.peer_authentications if select(pa)), None)


# --- TLS contexts --------------------------------------------------------------


def _sds(name: str) -> secret_pb2.SdsSecretConfig:
    return secret_pb2.SdsSecretConfig(name=name, sds_config=ads_config_source())


def common_tls_context(
    *, uri_exact: tuple[str, ...] = (), uri_prefix: str = ""
) -> tls_pb2.CommonTlsContext:
    """Our SVID by SDS, the peer checked against ROOTCA and its SPIFFE ID (URI SAN)."""
    matchers = [
        common_pb2.SubjectAltNameMatcher(
            san_type=common_pb2.SubjectAltNameMatcher.URI,
            matcher=string_pb2.StringMatcher(exact=uri),
        )
        for uri in uri_exact
    ]
    if uri_prefix:
        matchers.append(
            common_pb2.SubjectAltNameMatcher(
                san_type=common_pb2.SubjectAltNameMatcher.URI,
                matcher=string_pb2.StringMatcher(prefix=uri_prefix),
            )
        )
    return tls_pb2.CommonTlsContext(
        tls_params=common_pb2.TlsParameters(
            tls_minimum_protocol_version=common_pb2.TlsParameters.TLSv1_3,
            tls_maximum_protocol_version=common_pb2.TlsParameters.TLSv1_3,
        ),
        tls_certificate_sds_secret_configs=[_sds(WORKLOAD_SECRET)],
        combined_validation_context=tls_pb2.CommonTlsContext.CombinedCertificateValidationContext(
            default_validation_context=common_pb2.CertificateValidationContext(
                match_typed_subject_alt_names=matchers
            ),
            validation_context_sds_secret_config=_sds(ROOT_SECRET),
        ),
    )


def downstream_tls(trust_domain: str) -> base_pb2.TransportSocket:
    context = tls_pb2.DownstreamTlsContext(
        common_tls_context=common_tls_context(uri_prefix=f"spiffe://{trust_domain}/"),
        require_client_certificate=wrappers_pb2.BoolValue(value=True),
    )
    return base_pb2.TransportSocket(name=TLS_SOCKET, typed_config=_pack(context))


def upstream_tls(sni: str, peer_ids: tuple[str, ...]) -> base_pb2.TransportSocket:
    context = tls_pb2.UpstreamTlsContext(
        common_tls_context=common_tls_context(uri_exact=peer_ids), sni=sni
    )
    return base_pb2.TransportSocket(name=TLS_SOCKET, typed_config=_pack(context))


def outbound_sni(svc: OutboundService) -> str:
    """Istio's SNI for a service port: `outbound_.<port>_._.<host>`."""
    return f"outbound_.{svc.port.number}_._.{svc.host}"


def spiffe_uri(trust_domain: str, workload: WorkloadEntry) -> str:
    return f"spiffe://{trust_domain}/ns/{workload.meta.namespace}/sa/{workload.service_account}"


# --- outbound: auto-mTLS -------------------------------------------------------


def outbound_tls_mode(ctx: PushContext, svc: OutboundService, subset: str = "") -> str:
    """ISTIO_MUTUAL or DISABLE for one outbound cluster (DestinationRule wins)."""
    override = destination_rule_tls_mode(ctx, svc, subset)
    if override in (ISTIO_MUTUAL, DISABLE):
        return override
    if override is not None:
        return DISABLE  # SIMPLE / MUTUAL with user certificates: not built by pocketmesh
    if svc.service.location != "MESH_INTERNAL" or not svc.uses_eds or not svc.endpoints:
        return DISABLE
    for endpoint in svc.endpoints:
        proxy = ctx.proxy(endpoint.workload.proxy_id)
        if proxy is None or proxy.workload is not endpoint.workload:
            return DISABLE  # an inline endpoint or a workload without a sidecar
        if not any(p.port == endpoint.port and p.bind == proxy.address for p in proxy.inbound):
            return DISABLE  # its sidecar does not listen there
        if peer_mode(ctx.mesh, endpoint.workload, endpoint.port) == DISABLE:
            return DISABLE
    return ISTIO_MUTUAL


def destination_rule_tls_mode(
    ctx: PushContext, svc: OutboundService, subset: str = ""
) -> str | None:
    """`trafficPolicy.tls.mode` of the DestinationRule for this host, port and subset."""
    policy = ctx.traffic.policy(svc.host, svc.port.number, subset)
    return None if policy is None else policy.tls_mode


def _outbound_plan(
    ctx: PushContext, svc: OutboundService, subset: str
) -> tuple[str, tuple[str, ...]]:
    """The TLS mode of a cluster and the SPIFFE IDs its endpoints may present."""
    td = ctx.mesh.trust_domain
    ids = tuple(sorted({spiffe_uri(td, e.workload) for e in svc.endpoints}))
    return outbound_tls_mode(ctx, svc, subset), ids


def secure_cluster(
    ctx: PushContext, svc: OutboundService, base: Cluster, subset: str = ""
) -> Cluster:
    # Decided once per service port and subset, not once per proxy that sees it.
    mode, ids = ctx.memoize(("mtls-mode", svc, subset), lambda: _outbound_plan(ctx, svc, subset))
    if mode != ISTIO_MUTUAL:
        return base

    def build() -> Cluster:
        cluster = Cluster()
        cluster.CopyFrom(base)
        cluster.transport_socket.CopyFrom(upstream_tls(outbound_sni(svc), ids))
        return cluster

    # Keyed by the base object too (kept alive in the memo, so its id stays unique).
    return ctx.memoize(("mtls-cds", svc, id(base), ids), lambda: (base, build()))[1]


# --- inbound ---------------------------------------------------------------------


def secure_listener(ctx: PushContext, proxy: Proxy, plan: InboundPlan, base: Listener) -> Listener:
    mesh = ctx.mesh
    mode = peer_mode(mesh, proxy.workload, plan.port) if mesh.workload_identity else DISABLE
    policies = authz.policy_key(mesh, proxy.workload)
    if mode == DISABLE and not policies:
        return base
    key = ("mtls-lds", plan, id(base), mode, policies)
    return ctx.memoize(key, lambda: (base, _inbound(mesh, plan, base, mode, policies)))[1]


def _inbound(
    mesh: MeshConfig, plan: InboundPlan, base: Listener, mode: str, policies: authz.PolicyKey
) -> Listener:
    base_filters = list(base.filter_chains[0].filters)
    plain = _chain(base_filters, plan, policies, tls=False)
    listener = Listener()
    listener.CopyFrom(base)
    del listener.filter_chains[:]
    if mode == DISABLE:
        listener.filter_chains.append(plain)
        return listener
    secure = _chain(base_filters, plan, policies, tls=True)
    secure.transport_socket.CopyFrom(downstream_tls(mesh.trust_domain))
    if mode == "STRICT":
        listener.filter_chains.append(secure)
        return listener
    # PERMISSIVE: the TLS inspector tells mTLS clients from plaintext ones.
    listener.listener_filters.append(
        listener_components_pb2.ListenerFilter(
            name=TLS_INSPECTOR, typed_config=_pack(tls_inspector_pb2.TlsInspector())
        )
    )
    secure.filter_chain_match.transport_protocol = "tls"
    plain.filter_chain_match.transport_protocol = "raw_buffer"
    listener.filter_chains.extend([secure, plain])
    return listener


def _chain(
    base_filters: list[listener_components_pb2.Filter],
    plan: InboundPlan,
    policies: authz.PolicyKey,
    *,
    tls: bool,
) -> listener_components_pb2.FilterChain:
    """The inbound filters again, with RBAC added and XFCC set on the mTLS chain."""
    chain = listener_components_pb2.FilterChain()
    if not any(f.typed_config.type_url == HCM_TYPE for f in base_filters):
        # TCP: the network RBAC filters go first, before the proxying filter.
        chain.filters.extend(authz.network_filters(policies, plan.port))
        chain.filters.extend(base_filters)
        return chain
    for base_filter in base_filters:
        if base_filter.typed_config.type_url != HCM_TYPE:
            chain.filters.append(base_filter)
            continue
        hcm = HCM()
        base_filter.typed_config.Unpack(hcm)
        if tls:
            # The app sees who called: XFCC with By= (us) and URI= (the peer). The
            # plaintext chain keeps the default SANITIZE: nobody can forge the header.
            hcm.forward_client_cert_details = HCM.SANITIZE_SET
            hcm.set_current_client_cert_details.CopyFrom(
                HCM.SetCurrentClientCertDetails(
                    subject=wrappers_pb2.BoolValue(value=True), uri=True
                )
            )
        rbac = authz.http_filters(policies, plan.port)
        if rbac:
            rest = list(hcm.http_filters)
            del hcm.http_filters[:]
            hcm.http_filters.extend([*rbac, *rest])
        chain.filters.append(
            listener_components_pb2.Filter(name=base_filter.name, typed_config=_pack(hcm))
        )
    return chain


# --- the hook ----------------------------------------------------------------------


def secure(
    ctx: PushContext, proxy: Proxy, resources: dict[str, dict[str, message.Message]]
) -> None:
    """Add mTLS and authorization to one proxy's generated clusters and listeners."""
    listeners = resources.get(xds_types.LISTENER, {})
    for plan in proxy.inbound:
        base = listeners.get(plan.listener_name)
        if isinstance(base, listener_pb2.Listener):
            listeners[plan.listener_name] = secure_listener(ctx, proxy, plan, base)
    if not ctx.mesh.workload_identity:
        return
    clusters = resources.get(xds_types.CLUSTER, {})
    services = {svc.cluster_name: svc for svc in proxy.scope.services}
    for name, base_cluster in list(clusters.items()):
        if not isinstance(base_cluster, cluster_pb2.Cluster) or not name.startswith("outbound|"):
            continue
        # outbound|<port>|<subset>|<host>: subset clusters take their service's endpoints' IDs.
        _, port, subset, host = name.split("|", 3)
        svc = services.get(naming.outbound_cluster(int(port), host))
        if svc is not None:
            clusters[name] = secure_cluster(ctx, svc, base_cluster, subset)


def _pack(config: message.Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(config)
    return packed


def point_sds_at(socket: base_pb2.TransportSocket, source: config_source_pb2.ConfigSource) -> bool:
    """Make a TLS transport socket fetch its SDS secrets from `source` instead of ADS.

    For proxies whose bootstrap has no ADS (cache.config_source); True if it changed.
    """
    if socket.name != TLS_SOCKET:
        return False
    for kind in (tls_pb2.UpstreamTlsContext, tls_pb2.DownstreamTlsContext):
        if socket.typed_config.Is(kind.DESCRIPTOR):
            context = kind()
            socket.typed_config.Unpack(context)
            break
    else:
        return False
    common = context.common_tls_context
    configs = [
        *common.tls_certificate_sds_secret_configs,
        common.combined_validation_context.validation_context_sds_secret_config,
    ]
    changed = False
    for config in configs:
        if config.sds_config.HasField("ads"):
            config.sds_config.CopyFrom(source)
            changed = True
    if changed:
        socket.typed_config.Pack(context)
    return changed
