"""The Istio kinds Galley reads, one module each, and the table that finds them.

`SUPPORTED` maps a kind to its API group, the versions accepted, and its spec
parser. `NOT_YET` lists Istio kinds a later issue adds: reading them is a
warning, not an error, so configs pasted from Istio's docs still load.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..model import ObjectMeta, ServiceEntry, Sidecar, WorkloadEntry
from ..model_security import AuthorizationPolicy, PeerAuthentication
from ..model_traffic import DestinationRule, Gateway, TLSCredential, VirtualService
from ..schema import DocChecker, Located
from .authorization_policy import parse_authorization_policy
from .destination_rule import parse_destination_rule
from .gateway import parse_gateway
from .peer_authentication import parse_peer_authentication
from .secret import SECRET_FIELDS, parse_secret
from .service_entry import parse_service_entry
from .sidecar import parse_sidecar
from .virtual_service import parse_virtual_service
from .workload_entry import parse_workload_entry

__all__ = ["NETWORKING", "NOT_YET", "SECURITY", "SUPPORTED", "KindInfo", "Resource"]

NETWORKING = "networking.istio.io"
SECURITY = "security.istio.io"
NETWORKING_VERSIONS = frozenset({"v1", "v1beta1", "v1alpha3"})
SECURITY_VERSIONS = frozenset({"v1", "v1beta1"})

Resource = (
    ServiceEntry | WorkloadEntry | Sidecar | VirtualService | DestinationRule | Gateway
    | PeerAuthentication | AuthorizationPolicy | TLSCredential
)  # fmt: skip
SpecParser = Callable[[DocChecker, ObjectMeta, Located | None], Resource | None]


@dataclass(frozen=True, slots=True)
class KindInfo:
    group: str
    versions: frozenset[str]
    parser: SpecParser | None = None  # None: not supported yet
    spec_required: bool = True
    # Top-level fields besides apiVersion/kind/metadata/spec; a kind that has them (a
    # Kubernetes Secret) gets the whole document instead of its spec.
    document_fields: frozenset[str] = frozenset()

    def api_versions(self) -> str:
        return ", ".join(f"{self.group}/{v}" if self.group else v for v in sorted(self.versions))


SUPPORTED: dict[str, KindInfo] = {
    "ServiceEntry": KindInfo(NETWORKING, NETWORKING_VERSIONS, parse_service_entry),
    "WorkloadEntry": KindInfo(NETWORKING, NETWORKING_VERSIONS, parse_workload_entry),
    "Sidecar": KindInfo(NETWORKING, NETWORKING_VERSIONS, parse_sidecar, spec_required=False),
    "VirtualService": KindInfo(NETWORKING, NETWORKING_VERSIONS, parse_virtual_service),
    "DestinationRule": KindInfo(NETWORKING, NETWORKING_VERSIONS, parse_destination_rule),
    "Gateway": KindInfo(NETWORKING, NETWORKING_VERSIONS, parse_gateway),
    # Kubernetes core v1: the certificates Gateway servers name in credentialName.
    "Secret": KindInfo(
        "", frozenset({"v1"}), parse_secret, spec_required=False, document_fields=SECRET_FIELDS
    ),
    "PeerAuthentication": KindInfo(
        SECURITY, SECURITY_VERSIONS, parse_peer_authentication, spec_required=False
    ),
    "AuthorizationPolicy": KindInfo(
        SECURITY, SECURITY_VERSIONS, parse_authorization_policy, spec_required=False
    ),
}

NOT_YET: dict[str, KindInfo] = {}
