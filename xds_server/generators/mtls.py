"""Mutual TLS and TLS origination: the rules, and the Envoy TLS contexts they become.

Inbound, each workload port gets the mode Istio would give it (`peer_mode`: workload
policy's `portLevelMtls`, else the workload policy, else the namespace's, else the
mesh-wide one in the root namespace, else PERMISSIVE):

- STRICT: one filter chain that requires a client certificate from the mesh CA;
- PERMISSIVE: a TLS inspector picks the chain: `transport_protocol: tls` gets
  the mTLS chain, `raw_buffer` the plaintext one;
- DISABLE: plaintext only.

Outbound, a cluster speaks ISTIO_MUTUAL when every endpoint is a mesh workload whose
sidecar listens on that port in a mode other than DISABLE (`auto_mtls`), unless a
DestinationRule says otherwise (`generators.security` decides). Both sides take their
certificate (`default`) and the roots (`ROOTCA`) by SDS and check the peer's SPIFFE
ID: inbound any ID of the trust domain, outbound exactly the destination's IDs.
SIMPLE and MUTUAL originate TLS with the user's certificates, also by SDS.

The builders here make transport sockets from a plan (`tls_plan`); the cluster and
listener generators call them while they build, nothing edits a resource afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from envoy.config.core.v3 import base_pb2, config_source_pb2
from envoy.config.listener.v3 import listener_components_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import wrappers_pb2

from xds_server.galley.model import MeshConfig, WorkloadEntry, labels_match
from xds_server.galley.model_security import DEFAULT_MTLS_MODE, PeerAuthentication
from xds_server.galley.names import is_ip
from xds_server.generators.config_sources import ads_config_source
from xds_server.generators.proxy_protocol import change_inner
from xds_server.generators.push_context import OutboundService, PushContext
from xds_server.generators.tls_plan import (
    DISABLE,
    ISTIO_MUTUAL,
    MUTUAL,
    ROOT_SECRET,
    SIMPLE,
    WORKLOAD_SECRET,
    UpstreamTLS,
)
from xds_server.generators.typed_config import pack

__all__ = [
    "DISABLE",
    "ISTIO_MUTUAL",
    "MUTUAL",
    "ROOT_SECRET",
    "SIMPLE",
    "TLS_INSPECTOR",
    "TLS_SOCKET",
    "WORKLOAD_SECRET",
    "auto_mtls",
    "downstream_tls",
    "outbound_sni",
    "outbound_tls_mode",
    "peer_mode",
    "point_sds_at",
    "spiffe_uri",
    "tls_inspector",
    "upstream_socket",
]

TLS_SOCKET: Final = "envoy.transport_sockets.tls"
TLS_INSPECTOR: Final = "envoy.filters.listener.tls_inspector"


def tls_inspector() -> listener_components_pb2.ListenerFilter:
    """Reads the ClientHello: TLS or not, its SNI and ALPN, for filter chain matching."""
    return listener_components_pb2.ListenerFilter(
        name=TLS_INSPECTOR, typed_config=pack(tls_inspector_pb2.TlsInspector())
    )


# --- PeerAuthentication --------------------------------------------------------


def peer_mode(mesh: MeshConfig, workload: WorkloadEntry, port: int) -> str:
    """The inbound mTLS mode of `workload` on `port`: STRICT, PERMISSIVE or DISABLE."""
    ns = workload.meta.namespace
    levels: list[PeerAuthentication | None] = [
        _first(mesh, lambda pa: pa.meta.namespace == mesh.root_namespace and not pa.selector),
        _first(mesh, lambda pa: pa.meta.namespace == ns and not pa.selector)
        if ns != mesh.root_namespace
        else None,
        # Istio ignores selector policies of the root namespace (Galley warns).
        _first(
            mesh,
            lambda pa: (
                pa.meta.namespace == ns != mesh.root_namespace
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


# --- auto-mTLS -----------------------------------------------------------------


def auto_mtls(ctx: PushContext, svc: OutboundService) -> bool:
    """Whether the mesh's mTLS reaches every endpoint of the service port: each is a
    workload whose sidecar listens there in a mode other than DISABLE (Istio's
    auto-mTLS). Subsets decide by their service's endpoints, as Istio does."""
    base = svc.parent or svc
    if svc.service.location != "MESH_INTERNAL" or not base.uses_eds or not base.endpoints:
        return False
    for endpoint in base.endpoints:
        proxy = ctx.proxy(endpoint.workload.proxy_id)
        if proxy is None or proxy.workload is not endpoint.workload:
            return False  # an inline endpoint or a workload without a sidecar
        if not any(p.port == endpoint.port and p.bind == proxy.address for p in proxy.inbound):
            return False  # its sidecar does not listen there
        if peer_mode(ctx.mesh, endpoint.workload, endpoint.port) == DISABLE:
            return False
    return True


def outbound_tls_mode(ctx: PushContext, svc: OutboundService, subset: str = "") -> str:
    """DISABLE, ISTIO_MUTUAL, SIMPLE or MUTUAL: what the cluster of `svc` speaks."""
    from xds_server.generators.security import upstream_tls  # security builds on this module

    del subset  # `svc` is the subset's own plan
    return upstream_tls(ctx, svc).mode


def outbound_sni(svc: OutboundService) -> str:
    """Istio's SNI for a service port: `outbound_.<port>_.<subset>_.<host>`."""
    return f"outbound_.{svc.port.number}_.{svc.subset}_.{svc.host}"


def spiffe_uri(trust_domain: str, workload: WorkloadEntry) -> str:
    return f"spiffe://{trust_domain}/ns/{workload.meta.namespace}/sa/{workload.service_account}"


# --- TLS contexts --------------------------------------------------------------


def _sds(name: str) -> secret_pb2.SdsSecretConfig:
    return secret_pb2.SdsSecretConfig(name=name, sds_config=ads_config_source())


def san_matchers(
    names: tuple[str, ...], *, prefix: str = ""
) -> list[common_pb2.SubjectAltNameMatcher]:
    """Exact matchers, typed by what each name is: a URI (SPIFFE ID), an IP, a DNS name."""
    Matcher = common_pb2.SubjectAltNameMatcher
    matchers = []
    for name in names:
        if "://" in name:
            san_type = Matcher.URI
        elif is_ip(name):
            san_type = Matcher.IP_ADDRESS
        else:
            san_type = Matcher.DNS
        matchers.append(Matcher(san_type=san_type, matcher=string_pb2.StringMatcher(exact=name)))
    if prefix:
        matchers.append(
            Matcher(san_type=Matcher.URI, matcher=string_pb2.StringMatcher(prefix=prefix))
        )
    return matchers


def common_tls_context(
    *, uri_exact: tuple[str, ...] = (), uri_prefix: str = ""
) -> tls_pb2.CommonTlsContext:
    """Our SVID by SDS, the peer checked against ROOTCA and its SPIFFE ID (URI SAN)."""
    return tls_pb2.CommonTlsContext(
        tls_params=common_pb2.TlsParameters(
            tls_minimum_protocol_version=common_pb2.TlsParameters.TLSv1_3,
            tls_maximum_protocol_version=common_pb2.TlsParameters.TLSv1_3,
        ),
        tls_certificate_sds_secret_configs=[_sds(WORKLOAD_SECRET)],
        combined_validation_context=tls_pb2.CommonTlsContext.CombinedCertificateValidationContext(
            default_validation_context=common_pb2.CertificateValidationContext(
                match_typed_subject_alt_names=san_matchers(uri_exact, prefix=uri_prefix)
            ),
            validation_context_sds_secret_config=_sds(ROOT_SECRET),
        ),
    )


def downstream_tls(trust_domain: str) -> base_pb2.TransportSocket:
    context = tls_pb2.DownstreamTlsContext(
        common_tls_context=common_tls_context(uri_prefix=f"spiffe://{trust_domain}/"),
        require_client_certificate=wrappers_pb2.BoolValue(value=True),
    )
    return base_pb2.TransportSocket(name=TLS_SOCKET, typed_config=pack(context))


def upstream_socket(plan: UpstreamTLS, *, http2: bool) -> base_pb2.TransportSocket | None:
    """The transport socket of an outbound cluster; None only for DISABLE (plaintext).

    Every other mode gets a TLS socket, whatever else is set: the only way to an
    unencrypted cluster is a plan that says DISABLE (Istio's cluster_tls.go warns of
    paths that fail open; this function has none).
    """
    if plan.mode == DISABLE:
        return None
    if plan.mode == ISTIO_MUTUAL:
        context = tls_pb2.UpstreamTlsContext(
            common_tls_context=common_tls_context(uri_exact=plan.subject_alt_names), sni=plan.sni
        )
    elif plan.mode in (SIMPLE, MUTUAL):
        context = _origination_context(plan, http2=http2)
    else:
        raise ValueError(f"unknown upstream TLS mode {plan.mode!r}")
    return base_pb2.TransportSocket(name=TLS_SOCKET, typed_config=pack(context))


def _origination_context(plan: UpstreamTLS, *, http2: bool) -> tls_pb2.UpstreamTlsContext:
    """SIMPLE / MUTUAL, as Istio builds them: TLS 1.2 to 1.3, certificates by SDS."""
    common = tls_pb2.CommonTlsContext(
        tls_params=common_pb2.TlsParameters(
            tls_minimum_protocol_version=common_pb2.TlsParameters.TLSv1_2,
            tls_maximum_protocol_version=common_pb2.TlsParameters.TLSv1_3,
        )
    )
    if plan.mode == MUTUAL:
        if plan.certificate is None:
            raise ValueError("MUTUAL without a client certificate")
        common.tls_certificate_sds_secret_configs.append(_sds(plan.certificate.name))
    if plan.roots is not None:  # None: insecureSkipVerify, nothing verified
        default = common_pb2.CertificateValidationContext(
            match_typed_subject_alt_names=san_matchers(plan.subject_alt_names)
        )
        if plan.crl:  # with the roots from SDS, Envoy merges the two contexts
            default.crl.CopyFrom(base_pb2.DataSource(inline_string=plan.crl))
        common.combined_validation_context.CopyFrom(
            tls_pb2.CommonTlsContext.CombinedCertificateValidationContext(
                default_validation_context=default,
                validation_context_sds_secret_config=_sds(plan.roots.name),
            )
        )
    if http2:
        common.alpn_protocols.append("h2")
    return tls_pb2.UpstreamTlsContext(common_tls_context=common, sni=plan.sni)


def point_sds_at(socket: base_pb2.TransportSocket, source: config_source_pb2.ConfigSource) -> bool:
    """Make a TLS transport socket fetch its SDS secrets from `source` instead of ADS.

    For proxies whose bootstrap has no ADS (cache.config_source); True if it changed.
    """
    wrapped = change_inner(socket, lambda inner: point_sds_at(inner, source))
    if wrapped is not None:  # TLS under a PROXY header (DestinationRule proxyProtocol)
        return wrapped
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
