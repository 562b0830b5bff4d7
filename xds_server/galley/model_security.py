"""The security kinds of the mesh model: PeerAuthentication and AuthorizationPolicy.

Frozen values as Galley reads them from `security.istio.io` documents; the
generators (`generators/mtls.py`, `generators/authz.py`) turn them into Envoy
transport sockets and RBAC filters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .model import ObjectMeta, _empty_labels

# PeerAuthentication.MutualTLS.Mode; UNSET inherits from the parent policy.
MTLS_MODES = frozenset({"UNSET", "DISABLE", "PERMISSIVE", "STRICT"})
# Istio's default when no PeerAuthentication applies.
DEFAULT_MTLS_MODE = "PERMISSIVE"

AUTHZ_ACTIONS = frozenset({"ALLOW", "DENY", "AUDIT"})


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
