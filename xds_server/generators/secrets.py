"""SDS: the secrets a proxy's clusters name besides its own identity.

A DestinationRule that originates TLS (SIMPLE / MUTUAL) names certificates: files
the loader read, or a Secret document. They reach the proxies that see the rule's
host, and only them, by SDS (Istio's agent does the same for files), named as
Istio names them. The proxy's SVID (`default`) and the mesh roots (`ROOTCA`) are not
built here: the identity layer lays them over the snapshot (cache.overlay).
"""

from __future__ import annotations

from typing import TypeAlias

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2

from xds_server.generators.frozen import Frozen, FrozenResources
from xds_server.generators.push_context import Proxy, PushContext
from xds_server.generators.security import security_plan
from xds_server.generators.tls_plan import SdsSecret

Secret: TypeAlias = secret_pb2.Secret


def build_secrets(ctx: PushContext, proxy: Proxy) -> FrozenResources:
    """The secrets the proxy's outbound clusters name, one mapping per scope."""

    def build() -> FrozenResources:
        upstream = security_plan(ctx, proxy).upstream  # the same for the whole scope
        wanted = {s.name: s for tls in upstream.values() for s in tls.secrets()}
        return FrozenResources({name: _secret(ctx, wanted[name]) for name in sorted(wanted)})

    return ctx.memoize(("sds-scope", proxy.scope), build)


def _secret(ctx: PushContext, secret: SdsSecret) -> Frozen[Secret]:
    return ctx.shared(("sds", secret.name), lambda: _build(secret))


def _build(secret: SdsSecret) -> Secret:
    if secret.trusted_ca:
        return Secret(
            name=secret.name,
            validation_context=common_pb2.CertificateValidationContext(
                trusted_ca=base_pb2.DataSource(inline_string=secret.trusted_ca)
            ),
        )
    return Secret(
        name=secret.name,
        tls_certificate=common_pb2.TlsCertificate(
            certificate_chain=base_pb2.DataSource(inline_string=secret.certificate_chain),
            private_key=base_pb2.DataSource(inline_string=secret.private_key),
        ),
    )
