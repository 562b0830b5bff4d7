"""The validated mesh model: Istio API documents as frozen, typed values.

Galley's loader turns YAML into these; the generators turn these into Envoy
resources. Nothing here does I/O. Every object remembers where it came from
(`Source`) so that later checks can still point at a file and line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .model_mesh import MeshSettings
    from .model_security import AuthorizationPolicy, PeerAuthentication, RequestAuthentication
    from .model_traffic import (
        ConnectionPool,
        Destination,
        DestinationRule,
        Gateway,
        ServerTLS,
        TLSCredential,
        VirtualService,
    )

DEFAULT_NAMESPACE = "default"
ROOT_NAMESPACE = "istio-system"
DEFAULT_SERVICE_ACCOUNT = "default"
CLUSTER_DOMAIN = "svc.cluster.local"

EMPTY_LABELS: Mapping[str, str] = MappingProxyType({})


def _empty_labels() -> Mapping[str, str]:
    # Python 3.11 dataclasses reject an unhashable default (mappingproxy): share it via a factory.
    return EMPTY_LABELS


@dataclass(frozen=True, slots=True)
class Source:
    """Where a document (or a field of it) was written."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class ObjectMeta:
    kind: str
    name: str
    namespace: str
    # Where it was written is not what it says: moving a document is not a change.
    source: Source = field(compare=False)
    labels: Mapping[str, str] = field(default_factory=_empty_labels)
    # Read by the kinds that act on an annotation (AuthorizationPolicy's
    # `istio.io/dry-run`), which copy what they use into their own fields.
    annotations: Mapping[str, str] = field(default_factory=_empty_labels, compare=False)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


# --- ServiceEntry ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServicePort:
    number: int
    protocol: str  # upper-cased Istio protocol: HTTP, HTTP2, GRPC, TCP, TLS, ...; "": sniffed
    name: str
    target_port: int | None = None

    @property
    def is_http(self) -> bool:
        return self.protocol in HTTP_PROTOCOLS

    @property
    def sniffed(self) -> bool:
        """No protocol: Istio detects HTTP per connection (protocol sniffing)."""
        return self.protocol == ""

    @property
    def carries_http(self) -> bool:
        """Requests may be routed as HTTP: an HTTP port, or a sniffed one."""
        return self.is_http or self.sniffed


HTTP_PROTOCOLS = frozenset({"HTTP", "HTTP2", "GRPC", "GRPC-WEB"})


@dataclass(frozen=True, slots=True)
class ServiceEntry:
    meta: ObjectMeta
    hosts: tuple[str, ...]
    ports: tuple[ServicePort, ...]
    location: str = "MESH_INTERNAL"  # or MESH_EXTERNAL
    resolution: str = "STATIC"  # STATIC, NONE, DNS, DNS_ROUND_ROBIN
    addresses: tuple[str, ...] = ()
    # Labels of the WorkloadEntries (same namespace) that back this service.
    workload_selector: Mapping[str, str] | None = None
    # Inline endpoints (Istio's ServiceEntry.endpoints): WorkloadEntry specs.
    endpoints: tuple[WorkloadEntry, ...] = ()
    export_to: tuple[str, ...] = ()
    # Istio's subjectAltNames: the identities its endpoints may present (mTLS / TLS).
    subject_alt_names: tuple[str, ...] = ()


# --- WorkloadEntry --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkloadEntry:
    meta: ObjectMeta
    address: str
    labels: Mapping[str, str] = field(default_factory=_empty_labels)
    service_account: str = DEFAULT_SERVICE_ACCOUNT
    # Port name -> port number on the workload (Istio's WorkloadEntry.ports).
    ports: Mapping[str, int] = field(default_factory=_empty_labels)  # type: ignore[arg-type]
    locality: str = ""
    weight: int = 0
    # Runtime state, never parsed: False holds its endpoint back from every proxy while
    # its own sidecar still gets its config (Istio's WorkloadEntry health). `pocketmesh up`
    # holds a workload until its sidecar is ready, so no request meets a closed port.
    healthy: bool = True

    @property
    def proxy_id(self) -> str:
        """The Envoy node id of this workload's sidecar: NAME.NAMESPACE."""
        return f"{self.meta.name}.{self.meta.namespace}"


# --- Sidecar --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SidecarPort:
    number: int
    protocol: str
    name: str


@dataclass(frozen=True, slots=True)
class IngressListener:
    port: SidecarPort
    bind: str = ""
    # "127.0.0.1:PORT", "0.0.0.0:PORT" (the workload's own address), "host:port" or
    # "unix:///path".
    default_endpoint: str = ""
    connection_pool: ConnectionPool | None = None  # this port's inbound cluster
    # TLS the sidecar ends with the user's certificate (Istio's ingress tls: SIMPLE,
    # MUTUAL, OPTIONAL_MUTUAL), on an HTTPS or TLS port whose mTLS mode is DISABLE.
    tls: ServerTLS | None = None


@dataclass(frozen=True, slots=True)
class EgressListener:
    hosts: tuple[str, ...]  # "ns/host" patterns: "./*", "istio-system/*", "*/reviews.x"
    # A listener of its own (Istio's egress port): bind:port, bind "" = the workload's.
    port: SidecarPort | None = None
    bind: str = ""


@dataclass(frozen=True, slots=True)
class Sidecar:
    meta: ObjectMeta
    workload_selector: Mapping[str, str] | None = None
    ingress: tuple[IngressListener, ...] = ()
    egress: tuple[EgressListener, ...] = ()
    # REGISTRY_ONLY: hosts outside the registry get 404; ALLOW_ANY: forwarded to them;
    # "": not set, the mesh settings' mode applies (REGISTRY_ONLY unless they say).
    outbound_traffic_policy: str = ""
    inbound_connection_pool: ConnectionPool | None = None  # every inbound cluster
    # ALLOW_ANY's egress proxy: where requests for hosts outside the registry go.
    egress_proxy: Destination | None = None


# --- The whole mesh -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MeshConfig:
    """Every valid document of one config directory, as one immutable value.

    Each kind's field is declared in `galley.registry` (which kind fills it, how far
    a change to it reaches); the other fields are settings of the control plane,
    classified there too (`SETTINGS`). A test keeps the two in step.
    """

    service_entries: tuple[ServiceEntry, ...] = ()
    workload_entries: tuple[WorkloadEntry, ...] = ()
    sidecars: tuple[Sidecar, ...] = ()
    # Traffic management (model_traffic): VirtualService, DestinationRule, Gateway.
    virtual_services: tuple[VirtualService, ...] = ()
    destination_rules: tuple[DestinationRule, ...] = ()
    gateways: tuple[Gateway, ...] = ()
    tls_credentials: tuple[TLSCredential, ...] = ()  # Secrets named by Gateway credentialName
    peer_authentications: tuple[PeerAuthentication, ...] = ()
    authorization_policies: tuple[AuthorizationPolicy, ...] = ()
    request_authentications: tuple[RequestAuthentication, ...] = ()
    # The `istio` ConfigMap of istio-system (Istio's MeshConfig): at most one.
    mesh_settings: tuple[MeshSettings, ...] = ()
    # Set by a control plane that issues workload identities (SDS): only then is mTLS built.
    workload_identity: bool = False
    root_namespace: str = ROOT_NAMESPACE
    trust_domain: str = "cluster.local"

    @property
    def settings(self) -> MeshSettings | None:
        """The mesh settings document (Galley allows one), if the config has it."""
        return self.mesh_settings[0] if self.mesh_settings else None

    def workload(self, name: str, namespace: str = DEFAULT_NAMESPACE) -> WorkloadEntry | None:
        for we in self.workload_entries:
            if we.meta.name == name and we.meta.namespace == namespace:
                return we
        return None


def labels_match(selector: Mapping[str, str] | None, labels: Mapping[str, str]) -> bool:
    """Istio's selector semantics: every selector label must be present and equal."""
    if selector is None:
        return False
    return all(labels.get(k) == v for k, v in selector.items())
