"""The registry of kinds: each Istio kind pocketmesh reads, declared once.

A `Kind` says everything the rest of the server needs to know about it: its API
group and versions, its model class and parser, its field table (`galley.fields`),
the `MeshConfig` field its resources fill, and how far a change to one reaches
(`Reach`). The document reader (`documents`), the loader (`MeshConfig` assembly),
the change analysis (`generators.dependencies`) and the field reference
(`docs/fields.md`) are all driven from `KINDS`; nothing else lists kinds.

`MeshConfig` fields no kind fills are settings of the control plane, classified in
`SETTINGS`. A field in neither means "push everything" to the change analysis, and a
test fails while any field is unclassified.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from .fields import Shape
from .kinds import (
    authorization_policy,
    destination_rule,
    gateway,
    mesh_config,
    peer_authentication,
    request_authentication,
    secret,
    service_entry,
    sidecar,
    virtual_service,
    workload_entry,
)
from .model import ObjectMeta, ServiceEntry, Sidecar, WorkloadEntry
from .model_mesh import MeshSettings
from .model_security import AuthorizationPolicy, PeerAuthentication, RequestAuthentication
from .model_traffic import DestinationRule, Gateway, TLSCredential, VirtualService
from .schema import DocChecker, Located

__all__ = [
    "BY_FIELD",
    "BY_KIND",
    "KINDS",
    "NOT_YET_KINDS",
    "SETTINGS",
    "Kind",
    "Reach",
    "Resource",
    "mesh_fields",
    "reach_of",
]

NETWORKING = "networking.istio.io"
SECURITY = "security.istio.io"
NETWORKING_VERSIONS = frozenset({"v1", "v1beta1", "v1alpha3"})
SECURITY_VERSIONS = frozenset({"v1", "v1beta1"})

Resource = (
    ServiceEntry | WorkloadEntry | Sidecar | VirtualService | DestinationRule | Gateway
    | PeerAuthentication | AuthorizationPolicy | TLSCredential | RequestAuthentication
    | MeshSettings
)  # fmt: skip
SpecParser = Callable[[DocChecker, ObjectMeta, Located | None], Resource | None]


class Reach(enum.Enum):
    """Which proxies a change to a resource can reach (Istio's proxy_dependencies)."""

    EVERY_PROXY = "every proxy"
    HOSTS = "the proxies that see its hosts"
    WORKLOAD = "the workload itself, and the proxies that see the services selecting it"


@dataclass(frozen=True, slots=True)
class Kind:
    kind: str
    group: str  # "" for Kubernetes' core group
    versions: frozenset[str]
    model: type
    parser: SpecParser
    spec: Shape  # the field table of its spec (a Secret's: its top-level fields)
    mesh_field: str  # the MeshConfig field its resources fill
    reach: Reach
    # For Reach.HOSTS: the hosts a resource is about.
    hosts: Callable[[Any], Iterable[str]] | None = None
    spec_required: bool = True
    # A kind without `spec` (a Kubernetes Secret) has its fields at the top level.
    document_level: bool = False

    def api_versions(self) -> str:
        return ", ".join(f"{self.group}/{v}" if self.group else v for v in sorted(self.versions))

    def accepts(self, api_version: str) -> bool:
        if not self.group:  # Kubernetes' core group: just the version, like "v1"
            return api_version in self.versions
        group, sep, version = api_version.partition("/")
        return bool(sep) and group == self.group and version in self.versions


KINDS: tuple[Kind, ...] = (
    Kind(
        "ServiceEntry", NETWORKING, NETWORKING_VERSIONS, ServiceEntry,
        service_entry.parse_service_entry, service_entry.SPEC, "service_entries", Reach.HOSTS,
        hosts=lambda se: se.hosts,
    ),
    Kind(
        "WorkloadEntry", NETWORKING, NETWORKING_VERSIONS, WorkloadEntry,
        workload_entry.parse_workload_entry, workload_entry.SPEC, "workload_entries",
        Reach.WORKLOAD,
    ),
    Kind(
        "Sidecar", NETWORKING, NETWORKING_VERSIONS, Sidecar, sidecar.parse_sidecar,
        sidecar.SPEC, "sidecars", Reach.EVERY_PROXY, spec_required=False,
    ),
    Kind(
        "VirtualService", NETWORKING, NETWORKING_VERSIONS, VirtualService,
        virtual_service.parse_virtual_service, virtual_service.SPEC, "virtual_services",
        Reach.HOSTS, hosts=lambda vs: vs.hosts,
    ),
    Kind(
        "DestinationRule", NETWORKING, NETWORKING_VERSIONS, DestinationRule,
        destination_rule.parse_destination_rule, destination_rule.SPEC, "destination_rules",
        Reach.HOSTS, hosts=lambda rule: (rule.host,),
    ),
    Kind(
        "Gateway", NETWORKING, NETWORKING_VERSIONS, Gateway, gateway.parse_gateway,
        gateway.SPEC, "gateways", Reach.EVERY_PROXY,
    ),
    # Kubernetes core v1: the certificates Gateways and DestinationRules name.
    Kind(
        "Secret", "", frozenset({"v1"}), TLSCredential, secret.parse_secret, secret.SPEC,
        "tls_credentials", Reach.EVERY_PROXY, spec_required=False, document_level=True,
    ),
    Kind(
        "PeerAuthentication", SECURITY, SECURITY_VERSIONS, PeerAuthentication,
        peer_authentication.parse_peer_authentication, peer_authentication.SPEC,
        "peer_authentications", Reach.EVERY_PROXY, spec_required=False,
    ),
    Kind(
        "AuthorizationPolicy", SECURITY, SECURITY_VERSIONS, AuthorizationPolicy,
        authorization_policy.parse_authorization_policy, authorization_policy.SPEC,
        "authorization_policies", Reach.EVERY_PROXY, spec_required=False,
    ),
    Kind(
        "RequestAuthentication", SECURITY, SECURITY_VERSIONS, RequestAuthentication,
        request_authentication.parse_request_authentication, request_authentication.SPEC,
        "request_authentications", Reach.EVERY_PROXY, spec_required=False,
    ),
    # Kubernetes core v1: the `istio` ConfigMap of istio-system, Istio's MeshConfig.
    Kind(
        "ConfigMap", "", frozenset({"v1"}), MeshSettings, mesh_config.parse_mesh_config,
        mesh_config.SPEC, "mesh_settings", Reach.EVERY_PROXY, spec_required=False,
        document_level=True,
    ),
)  # fmt: skip

BY_KIND: Mapping[str, Kind] = MappingProxyType({k.kind: k for k in KINDS})
BY_FIELD: Mapping[str, Kind] = MappingProxyType({k.mesh_field: k for k in KINDS})

# Istio kinds pocketmesh does not build yet: refused by name, with a located error.
NOT_YET_KINDS: Mapping[str, str] = MappingProxyType(
    {
        "EnvoyFilter": NETWORKING,
        "WorkloadGroup": NETWORKING,
        "ProxyConfig": NETWORKING,
        "Telemetry": "telemetry.istio.io",
        "WasmPlugin": "extensions.istio.io",
    }
)

# MeshConfig fields set by the control plane, not by documents: all reach everyone.
SETTINGS: Mapping[str, Reach] = MappingProxyType(
    {
        "workload_identity": Reach.EVERY_PROXY,
        "root_namespace": Reach.EVERY_PROXY,
        "trust_domain": Reach.EVERY_PROXY,
    }
)


def reach_of(mesh_field: str) -> Reach | None:
    """How far a change to a MeshConfig field reaches; None if nobody classified it."""
    kind = BY_FIELD.get(mesh_field)
    return kind.reach if kind is not None else SETTINGS.get(mesh_field)


def mesh_fields(resources: Iterable[object]) -> dict[str, Any]:
    """The MeshConfig fields of the kinds, each sorted by namespace and name."""
    found: dict[type, list[Any]] = {k.model: [] for k in KINDS}
    for resource in resources:
        bucket = found.get(type(resource))
        if bucket is not None:
            bucket.append(resource)
    return {
        k.mesh_field: tuple(sorted(found[k.model], key=lambda r: (r.meta.namespace, r.meta.name)))
        for k in KINDS
    }
