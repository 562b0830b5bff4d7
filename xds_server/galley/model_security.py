"""The security kinds of the mesh model: PeerAuthentication, RequestAuthentication and
AuthorizationPolicy.

Frozen values as Galley reads them from `security.istio.io` documents; the
generators (`generators/mtls.py`, `generators/authn.py`, `generators/authz.py`,
`generators/ext_authz.py`) turn them into Envoy transport sockets, the jwt_authn
filter, RBAC filters and ext_authz filters.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from .model import ObjectMeta, WorkloadEntry, _empty_labels, labels_match

# PeerAuthentication.MutualTLS.Mode; UNSET inherits from the parent policy.
MTLS_MODES = frozenset({"UNSET", "DISABLE", "PERMISSIVE", "STRICT"})
# Istio's default when no PeerAuthentication applies.
DEFAULT_MTLS_MODE = "PERMISSIVE"

AUTHZ_ACTIONS = frozenset({"ALLOW", "DENY", "AUDIT", "CUSTOM"})

# `when` keys Istio matches on the connection or the request's destination (an RBAC
# permission), and the prefix of its experimental metadata keys.
PERMISSION_KEYS = frozenset({"destination.ip", "destination.port", "connection.sni"})
ENVOY_FILTER_KEY = "experimental.envoy.filters."


@dataclass(frozen=True, slots=True)
class PeerAuthentication:
    meta: ObjectMeta
    # None: every workload of the namespace (mesh-wide in the root namespace).
    selector: Mapping[str, str] | None = None
    mode: str = "UNSET"
    # Workload port number -> mode (only honoured with a selector, as in Istio).
    port_level: Mapping[int, str] = field(default_factory=_empty_labels)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class SourceMatch:
    """`rules[].from[].source`: every non-empty field must match (values are OR-ed)."""

    principals: tuple[str, ...] = ()
    not_principals: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    not_namespaces: tuple[str, ...] = ()
    ip_blocks: tuple[str, ...] = ()
    not_ip_blocks: tuple[str, ...] = ()
    request_principals: tuple[str, ...] = ()  # `<iss>/<sub>` of a verified JWT
    not_request_principals: tuple[str, ...] = ()
    remote_ip_blocks: tuple[str, ...] = ()  # the client address (X-Forwarded-For)
    not_remote_ip_blocks: tuple[str, ...] = ()
    service_accounts: tuple[str, ...] = ()  # `<ns>/<sa>`, or `<sa>` of the policy's namespace
    not_service_accounts: tuple[str, ...] = ()
    trust_domains: tuple[str, ...] = ()
    not_trust_domains: tuple[str, ...] = ()

    @property
    def http_only(self) -> bool:
        """Fields a TCP port cannot evaluate (a JWT comes with an HTTP request)."""
        return bool(self.request_principals or self.not_request_principals)

    @property
    def tcp_fields(self) -> bool:
        """Fields a TCP port can evaluate (Istio's validation warns on DENY without)."""
        return any(
            (self.principals, self.not_principals, self.namespaces, self.not_namespaces,
             self.ip_blocks, self.not_ip_blocks, self.remote_ip_blocks,
             self.not_remote_ip_blocks, self.service_accounts, self.not_service_accounts)
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class OperationMatch:
    """`rules[].to[].operation`."""

    hosts: tuple[str, ...] = ()
    not_hosts: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    not_ports: tuple[int, ...] = ()
    methods: tuple[str, ...] = ()
    not_methods: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    not_paths: tuple[str, ...] = ()

    @property
    def http_only(self) -> bool:
        """Fields a TCP port cannot evaluate."""
        return bool(
            self.hosts or self.not_hosts or self.methods or self.not_methods
            or self.paths or self.not_paths
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Condition:
    """`rules[].when[]`: key is e.g. `request.headers[x-user]` or `source.principal`."""

    key: str
    values: tuple[str, ...] = ()
    not_values: tuple[str, ...] = ()

    @property
    def http_only(self) -> bool:
        return self.key.startswith("request.")

    @property
    def on_permission(self) -> bool:
        """Istio puts destination.* and connection.* on the permission side."""
        return self.key in PERMISSION_KEYS or self.key.startswith(ENVOY_FILTER_KEY)


@dataclass(frozen=True, slots=True)
class AuthzRule:
    """A rule matches when one source, one operation and every condition match.

    An empty list of sources (or operations) matches any.
    """

    sources: tuple[SourceMatch, ...] = ()
    operations: tuple[OperationMatch, ...] = ()
    conditions: tuple[Condition, ...] = ()


@dataclass(frozen=True, slots=True)
class AuthorizationPolicy:
    meta: ObjectMeta
    selector: Mapping[str, str] | None = None
    action: str = "ALLOW"
    # No rules: the policy matches nothing (an empty ALLOW policy allows nothing).
    rules: tuple[AuthzRule, ...] = ()
    provider: str = ""  # CUSTOM: the extension provider of the mesh settings
    # The `istio.io/dry-run: "true"` annotation: evaluated and counted, never enforced.
    dry_run: bool = False


# --- RequestAuthentication ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JwtHeader:
    """`fromHeaders[]`: where a token is read, and the prefix stripped before it."""

    name: str
    prefix: str = ""


@dataclass(frozen=True, slots=True)
class ClaimToHeader:
    header: str
    claim: str


@dataclass(frozen=True, slots=True)
class JwtRule:
    """One `jwtRules[]` entry: one issuer, verified with `jwks`.

    `jwks` is the key set Envoy gets inline: as written, or read from `jwks_uri` (a
    file, or a URL the control plane fetched; `galley.jwks`). When no key set could be
    had, `jwks_missing` says why and every token of this issuer is refused (401), as
    Istio does (fail closed); a request without a token is not affected.
    """

    issuer: str
    audiences: tuple[str, ...] = ()
    jwks: str = ""
    jwks_uri: str = ""  # as written
    jwks_missing: str = ""
    from_headers: tuple[JwtHeader, ...] = ()
    from_params: tuple[str, ...] = ()
    from_cookies: tuple[str, ...] = ()
    output_payload_to_header: str = ""
    output_claim_to_headers: tuple[ClaimToHeader, ...] = ()
    forward_original_token: bool = False
    timeout_ms: int = 5000  # how long fetching `jwks_uri` may take
    space_delimited_claims: tuple[str, ...] = ()
    path: str = ""  # `spec.jwtRules[N]`, for findings about it
    # The document's directory: a relative `file:` jwksUri is read from there.
    base: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class RequestAuthentication:
    meta: ObjectMeta
    # None: every workload of the namespace (mesh-wide in the root namespace).
    selector: Mapping[str, str] | None = None
    jwt_rules: tuple[JwtRule, ...] = ()


class _WorkloadPolicy(Protocol):
    @property
    def meta(self) -> ObjectMeta: ...
    @property
    def selector(self) -> Mapping[str, str] | None: ...


_P = TypeVar("_P", bound=_WorkloadPolicy)


def workload_policies(
    policies: Iterable[_P], workload: WorkloadEntry, root_namespace: str
) -> list[_P]:
    """The AuthorizationPolicies or RequestAuthentications of `policies` that apply to
    `workload`, as Istio selects them: those of its namespace and of the root namespace
    (mesh-wide) with no selector, or one its labels match; in the order given."""
    return [
        p
        for p in policies
        if p.meta.namespace in (workload.meta.namespace, root_namespace)
        and (not p.selector or labels_match(p.selector, workload.labels))
    ]


# A VirtualService header match on a verified JWT's claim (Istio's ToRoutingClaim).
ROUTING_CLAIM = "@request.auth.claims"


def routing_claims(header: str) -> tuple[str, ...] | None:
    """`@request.auth.claims.a.b` or `@request.auth.claims[a][b]` -> (a, b); else None."""
    if not header.lower().startswith(ROUTING_CLAIM):
        return None
    name = header[len(ROUTING_CLAIM) :]
    if name.startswith(".") and len(name) > 1:
        claims = tuple(name[1:].split("."))
    elif name.startswith("[") and name.endswith("]") and len(name) > 2:
        claims = tuple(name[1:-1].split("]["))
    else:
        return None
    return claims if all(claims) else None
