"""The values a security plan is made of (see `generators.security`).

Plain frozen values, so that clusters and listeners are keyed and built from them:
`UpstreamTLS` for an outbound cluster, `InboundSecurity` for an inbound listener.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from xds_server.generators.authn import NO_AUTHN, AuthnKey
from xds_server.generators.authz import PolicyKey
from xds_server.generators.ext_authz import ExtAuthzTarget

ISTIO_MUTUAL: Final = "ISTIO_MUTUAL"
DISABLE: Final = "DISABLE"
SIMPLE: Final = "SIMPLE"
MUTUAL: Final = "MUTUAL"
STRICT: Final = "STRICT"
PERMISSIVE: Final = "PERMISSIVE"

# The proxy's own certificate and the mesh roots, served by SDS (identity overlay).
WORKLOAD_SECRET: Final = "default"
ROOT_SECRET: Final = "ROOTCA"


@dataclass(frozen=True, slots=True, eq=False)
class SdsSecret:
    """A secret the generators serve by SDS (a DestinationRule's certificates).

    Named as Istio names them: `file-cert:<cert>~<key>` and `file-root:<ca>` for
    files, `kubernetes://<ns>/<name>` and `...-cacert` for a Secret document.
    """

    name: str
    certificate_chain: str = field(default="", repr=False)
    private_key: str = field(default="", repr=False)
    trusted_ca: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class UpstreamTLS:
    """What one outbound cluster speaks to its endpoints.

    DISABLE: plaintext. ISTIO_MUTUAL: the mesh's mTLS (`default` / `ROOTCA`), the peer
    checked against `subject_alt_names` (SPIFFE IDs). SIMPLE / MUTUAL: TLS the user
    configured: `certificate` (MUTUAL) and `roots` served by SDS; no `roots` means
    the upstream is not verified (insecureSkipVerify).
    """

    mode: str
    sni: str = ""
    subject_alt_names: tuple[str, ...] = ()
    certificate: SdsSecret | None = None
    roots: SdsSecret | None = None
    crl: str = field(default="", repr=False)  # PEM: upstream certificates refused
    auto_sni: bool = False  # SNI from the request's host (HTTP; Istio's default)
    auto_san_validation: bool = False  # and the certificate checked against it

    @property
    def encrypted(self) -> bool:
        return self.mode != DISABLE

    def secrets(self) -> tuple[SdsSecret, ...]:
        return tuple(s for s in (self.certificate, self.roots) if s is not None)


PLAINTEXT = UpstreamTLS(DISABLE)


@dataclass(frozen=True, slots=True)
class InboundSecurity:
    """What one inbound listener requires of its callers: the PeerAuthentication mode
    of its port, the AuthorizationPolicies and RequestAuthentications of its workload,
    and the ext_authz providers its CUSTOM policies name, as this proxy reaches them."""

    mtls_mode: str  # STRICT, PERMISSIVE or DISABLE
    policies: PolicyKey
    authn: AuthnKey = NO_AUTHN
    ext_authz: tuple[ExtAuthzTarget, ...] = ()
