"""The security plan of one proxy, decided before its clusters and listeners are built.

For every outbound cluster it sees: what TLS the cluster speaks (`UpstreamTLS`),
from the DestinationRule's `tls` (port level, subset, top level) or else auto-mTLS.
For every inbound listener: the PeerAuthentication mode of its port, the
AuthorizationPolicies and RequestAuthentications of the workload, and the outbound
cluster of each ext_authz provider its CUSTOM policies name (`InboundSecurity`). The
cluster, listener and secret generators build from this plan; nothing is patched in
afterwards.

Fail closed: a rule that asks for TLS gets a TLS socket or the config is refused
(`UnbuildableConfig`, which the snapshot turns into a rejected config). It is never
quietly built as plaintext.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from xds_server.galley.model_traffic import ClientTLS, TLSCredential
from xds_server.generators import authn, authz
from xds_server.generators.ext_authz import ExtAuthzTarget
from xds_server.generators.mtls import auto_mtls, outbound_sni, peer_mode, spiffe_uri
from xds_server.generators.push_context import InboundPlan, OutboundService, Proxy, PushContext
from xds_server.generators.tls_plan import (
    DISABLE,
    ISTIO_MUTUAL,
    MUTUAL,
    PLAINTEXT,
    InboundSecurity,
    SdsSecret,
    UpstreamTLS,
)

__all__ = ["SecurityPlan", "UnbuildableConfig", "security_plan", "upstream_tls"]


class UnbuildableConfig(Exception):
    """The config asks for something this control plane cannot build safely."""


@dataclass(frozen=True, slots=True, eq=False)
class SecurityPlan:
    """One proxy's security: upstream TLS per outbound cluster, checks per inbound port."""

    upstream: Mapping[OutboundService, UpstreamTLS]  # shared by the proxies of a scope
    inbound: Mapping[InboundPlan, InboundSecurity]
    # A gateway proxy's servers: its policies, checked before its routes (Istio applies
    # AuthorizationPolicy and RequestAuthentication to gateways as to sidecars).
    gateway: InboundSecurity | None = None


def security_plan(ctx: PushContext, proxy: Proxy) -> SecurityPlan:
    return ctx.memoize(("security", proxy), lambda: _plan(ctx, proxy))


def _plan(ctx: PushContext, proxy: Proxy) -> SecurityPlan:
    ctx.memoize(("trust-domain",), lambda: _check_trust_domain(ctx))  # once per mesh
    scope = proxy.scope
    upstream = ctx.memoize(
        ("upstream-scope", scope),
        lambda: MappingProxyType({svc: upstream_tls(ctx, svc) for svc in scope.services}),
    )
    mesh = ctx.mesh
    if not (mesh.workload_identity or mesh.authorization_policies or mesh.request_authentications):
        # A plaintext mesh without policies: every port alike (most of a large build).
        inbound = dict.fromkeys(proxy.inbound, _OPEN)
    else:
        policies = authz.policy_key(mesh, proxy.workload)
        requests = authn.authn_key(mesh, proxy.workload)
        targets = _ext_authz_targets(ctx, proxy, policies)
        inbound = {
            plan: InboundSecurity(
                peer_mode(mesh, proxy.workload, plan.port) if mesh.workload_identity else DISABLE,
                policies,
                requests,
                targets,
            )
            for plan in proxy.inbound
        }
        for plan, security in inbound.items():
            if plan.tls is not None and security.mtls_mode != DISABLE:
                raise UnbuildableConfig(_user_tls_under_mtls(proxy, plan, security.mtls_mode))
        if proxy.gateways:  # its servers terminate their own TLS (Gateway tls)
            gateway = InboundSecurity(DISABLE, policies, requests, targets)
            return SecurityPlan(upstream, MappingProxyType(inbound), gateway)
    return SecurityPlan(upstream, MappingProxyType(inbound))


_OPEN = InboundSecurity(DISABLE, authz.NO_POLICIES)


def _check_trust_domain(ctx: PushContext) -> None:
    """The mesh settings' trustDomain names the CA's, or the config is refused: SPIFFE
    IDs, policies and peer checks all say the CA's."""
    settings = ctx.mesh.settings
    wanted = settings.trust_domain if settings is not None else ""
    mismatch = wanted and wanted != ctx.mesh.trust_domain
    if settings is not None and mismatch and ctx.mesh.workload_identity:
        raise UnbuildableConfig(
            f"{settings.meta.source}: ConfigMap {settings.meta.key}: data.mesh.trustDomain: "
            f"{wanted!r}, but this control plane's CA is for {ctx.mesh.trust_domain!r}: make "
            f"a CA for it (`pocketmesh ca init --trust-domain {wanted}`) or set trustDomain: "
            f"{ctx.mesh.trust_domain}"
        )


def _user_tls_under_mtls(proxy: Proxy, plan: InboundPlan, mode: str) -> str:
    """Istio ends a Sidecar's ingress TLS only where the port's mTLS mode is DISABLE,
    and silently ignores it elsewhere: refused here instead."""
    sidecar = proxy.sidecar
    where = f"{sidecar.meta.source}: Sidecar {sidecar.meta.key}: " if sidecar else ""
    tls_path = plan.tls.path if plan.tls is not None else "tls"
    return (
        f"{where}{tls_path}: the TLS this ends on port {plan.port} of {proxy.node_id} would "
        f"never apply: PeerAuthentication makes that port's mTLS mode {mode}, and mesh mTLS "
        f"comes first (as in Istio). Set the port to DISABLE (portLevelMtls: {{{plan.port}: "
        "{mode: DISABLE}} in a PeerAuthentication that selects the workload), or drop tls"
    )


def _ext_authz_targets(
    ctx: PushContext, proxy: Proxy, policies: authz.PolicyKey
) -> tuple[ExtAuthzTarget, ...]:
    """The outbound cluster this proxy calls each CUSTOM policy's provider through.

    Galley checked that the provider is declared for a service port of the registry;
    a proxy whose Sidecar hides that service cannot call it: refused, never left open.
    """
    names = sorted({p.provider for p in policies if p.action == "CUSTOM"})
    if not names:
        return ()
    settings = ctx.mesh.settings
    targets = []
    for name in names:
        provider = settings.provider(name) if settings is not None else None
        policy = next(p for p in policies if p.action == "CUSTOM" and p.provider == name)
        where = f"{policy.meta.source}: AuthorizationPolicy {policy.meta.key}: spec.provider.name"
        if provider is None:
            raise UnbuildableConfig(f"{where}: no extension provider {name!r}")
        service = next(
            (
                svc
                for svc in proxy.scope.services
                if not svc.subset
                and svc.host == provider.service
                and svc.port.number == provider.port
                and provider.namespace in ("", svc.service.meta.namespace)
            ),
            None,
        )
        if service is None:
            raise UnbuildableConfig(
                f"{where}: {proxy.node_id} cannot reach the provider's service "
                f"{provider.service}:{provider.port} (not visible to it: its Sidecar's egress)"
            )
        targets.append(ExtAuthzTarget(provider, service.cluster_name))
    return tuple(targets)


# --- outbound ---------------------------------------------------------------------


def upstream_tls(ctx: PushContext, svc: OutboundService) -> UpstreamTLS:
    """What the cluster of `svc` speaks; decided once per service port and subset."""
    return ctx.memoize(("upstream-tls", svc), lambda: _upstream(ctx, svc))


def _upstream(ctx: PushContext, svc: OutboundService) -> UpstreamTLS:
    tls = svc.policy.tls if svc.policy is not None else None
    if tls is None:  # no rule says: auto-mTLS, when the mesh issues identities
        settings = ctx.mesh.settings
        enabled = settings is None or settings.auto_mtls  # enableAutoMtls
        if ctx.mesh.workload_identity and enabled and auto_mtls(ctx, svc):
            return _istio_mutual(ctx, svc, None)
        return PLAINTEXT
    if tls.mode == DISABLE:
        return PLAINTEXT
    if tls.mode == ISTIO_MUTUAL:
        if not ctx.mesh.workload_identity:
            raise UnbuildableConfig(
                f"{_where(ctx, tls, svc)}: mode: ISTIO_MUTUAL needs workload certificates, and "
                "this control plane issues none (--no-identity); the cluster "
                f"{svc.cluster_name} would have no certificate"
            )
        return _istio_mutual(ctx, svc, tls)
    return _originate(ctx, svc, tls)


def _istio_mutual(ctx: PushContext, svc: OutboundService, tls: ClientTLS | None) -> UpstreamTLS:
    """The mesh's mTLS; the peer must present one of the service's identities (its
    workloads' SPIFFE IDs and the ServiceEntry's subjectAltNames), unless the rule
    names others."""
    base = svc.parent or svc
    td = ctx.mesh.trust_domain
    ids = {spiffe_uri(td, e.workload) for e in base.endpoints} | set(svc.service.subject_alt_names)
    sans = (
        tls.subject_alt_names if tls is not None and tls.subject_alt_names else tuple(sorted(ids))
    )
    sni = tls.sni if tls is not None and tls.sni else outbound_sni(svc)
    return UpstreamTLS(ISTIO_MUTUAL, sni=sni, subject_alt_names=sans)


def _originate(ctx: PushContext, svc: OutboundService, tls: ClientTLS) -> UpstreamTLS:
    """SIMPLE / MUTUAL with the user's certificates (Istio's constructUpstreamTLS)."""
    # Istio: a rule without subjectAltNames checks the ServiceEntry's.
    sans = tls.subject_alt_names or svc.service.subject_alt_names
    certificate: SdsSecret | None = None
    roots: SdsSecret | None = None
    crl = ""
    if tls.credential_name:
        credential = _credential(ctx, svc, tls)
        name = f"kubernetes://{credential.meta.key}"
        if tls.mode == MUTUAL:
            certificate = SdsSecret(name, credential.cert_pem, credential.key_pem)
        if not tls.insecure_skip_verify:
            roots = SdsSecret(
                f"{name}-cacert", trusted_ca=_needed(credential.ca_pem, ctx, tls, svc)
            )
            crl = credential.crl_pem
    else:
        cert, key = tls.client_certificate, tls.private_key
        if tls.mode == MUTUAL:
            if cert is None or key is None:
                raise UnbuildableConfig(
                    f"{_where(ctx, tls, svc)}: MUTUAL needs a client certificate"
                )
            certificate = SdsSecret(
                f"file-cert:{cert.path}~{key.path}",
                _needed(cert.pem, ctx, tls, svc),
                _needed(key.pem, ctx, tls, svc),
            )
        ca = tls.ca_certificates
        if not tls.insecure_skip_verify:
            if ca is None:  # galley.tls_files puts the system roots here
                raise UnbuildableConfig(f"{_where(ctx, tls, svc)}: no roots to verify the upstream")
            roots = SdsSecret(f"file-root:{ca.path}", trusted_ca=_needed(ca.pem, ctx, tls, svc))
        if tls.ca_crl is not None:
            crl = _needed(tls.ca_crl.pem, ctx, tls, svc)
    sni = tls.sni
    http = svc.port.is_http
    auto_sni = http and not sni  # Istio: the SNI is the request's host
    if not http and not sni and "*" not in svc.host:
        sni = svc.host  # no request to take it from: the host the rule is for
    return UpstreamTLS(
        tls.mode,
        sni=sni,
        subject_alt_names=tuple(sans),
        certificate=certificate,
        roots=roots,
        crl=crl,
        auto_sni=auto_sni,
        auto_san_validation=auto_sni and not sans and roots is not None,
    )


def _credential(ctx: PushContext, svc: OutboundService, tls: ClientTLS) -> TLSCredential:
    for credential in ctx.mesh.tls_credentials:
        if credential.meta.name == tls.credential_name and (
            credential.meta.namespace == tls.namespace
        ):
            return credential
    raise UnbuildableConfig(
        f"{_where(ctx, tls, svc)}: credentialName: no Secret {tls.namespace}/{tls.credential_name}"
    )


def _needed(pem: str, ctx: PushContext, tls: ClientTLS, svc: OutboundService) -> str:
    """PEM that the loader read; an unread file is never sent as an empty secret."""
    if not pem:
        raise UnbuildableConfig(f"{_where(ctx, tls, svc)}: a certificate file was not loaded")
    return pem


def _where(ctx: PushContext, tls: ClientTLS, svc: OutboundService) -> str:
    """`file:line: DestinationRule ns/name: spec...tls` of the rule that says so."""
    rule = svc.rule
    if rule is None:
        return f"DestinationRule for {svc.host}: {tls.path or 'tls'}"
    return f"{rule.meta.source}: DestinationRule {rule.meta.key}: {tls.path or 'tls'}"
