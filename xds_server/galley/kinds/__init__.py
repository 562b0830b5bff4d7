"""The Istio kinds Galley reads, one module each, and the table that finds them.

`SUPPORTED` maps a kind to its API group, the versions accepted, and its spec
parser. `NOT_YET` lists Istio kinds a later issue adds: reading them is a
warning, not an error, so configs pasted from Istio's docs still load.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..model import ObjectMeta, ServiceEntry, Sidecar, WorkloadEntry
from ..schema import DocChecker, Located
from .service_entry import parse_service_entry
from .sidecar import parse_sidecar
from .workload_entry import parse_workload_entry

__all__ = ["NETWORKING", "NOT_YET", "SECURITY", "SUPPORTED", "KindInfo", "Resource"]

NETWORKING = "networking.istio.io"
SECURITY = "security.istio.io"
NETWORKING_VERSIONS = frozenset({"v1", "v1beta1", "v1alpha3"})
SECURITY_VERSIONS = frozenset({"v1", "v1beta1"})

Resource = ServiceEntry | WorkloadEntry | Sidecar
SpecParser = Callable[[DocChecker, ObjectMeta, Located | None], Resource | None]


@dataclass(frozen=True, slots=True)
class KindInfo:
    group: str
    versions: frozenset[str]
    parser: SpecParser | None = None  # None: not supported yet
    spec_required: bool = True

    def api_versions(self) -> str:
        return ", ".join(f"{self.group}/{v}" for v in sorted(self.versions))


SUPPORTED: dict[str, KindInfo] = {
    "ServiceEntry": KindInfo(NETWORKING, NETWORKING_VERSIONS, parse_service_entry),
    "WorkloadEntry": KindInfo(NETWORKING, NETWORKING_VERSIONS, parse_workload_entry),
    "Sidecar": KindInfo(NETWORKING, NETWORKING_VERSIONS, parse_sidecar, spec_required=False),
}

NOT_YET: dict[str, KindInfo] = {
    "VirtualService": KindInfo(NETWORKING, NETWORKING_VERSIONS),
    "DestinationRule": KindInfo(NETWORKING, NETWORKING_VERSIONS),
    "Gateway": KindInfo(NETWORKING, NETWORKING_VERSIONS),
    "PeerAuthentication": KindInfo(SECURITY, SECURITY_VERSIONS),
    "AuthorizationPolicy": KindInfo(SECURITY, SECURITY_VERSIONS),
}
