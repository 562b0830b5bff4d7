"""The mesh settings: the part of Istio's MeshConfig pocketmesh reads.

Istio users keep MeshConfig in the `istio` ConfigMap of `istio-system`, as YAML under
`data.mesh`; pocketmesh reads the same document (`galley.kinds.mesh_config`). Of its
fields, `extensionProviders` of the ext_authz kinds are built (the providers an
AuthorizationPolicy with `action: CUSTOM` names); the rest are refused, located.
"""

from __future__ import annotations

from dataclasses import dataclass

from .model import ObjectMeta
from .model_traffic import Retries, TcpKeepalive

# Where Istio reads its MeshConfig from.
MESH_CONFIGMAP = "istio"
DEFAULT_EXT_AUTHZ_TIMEOUT_MS = 600_000  # Istio's default: 600 s


@dataclass(frozen=True, slots=True)
class RequestBody:
    """`includeRequestBodyInCheck`: Envoy's ext_authz `with_request_body`."""

    max_request_bytes: int = 0
    allow_partial_message: bool = False
    pack_as_bytes: bool = False


@dataclass(frozen=True, slots=True)
class ExtAuthzProvider:
    """One `extensionProviders[]` entry: an ext_authz service (HTTP or gRPC API)."""

    name: str
    grpc: bool  # envoyExtAuthzGrpc; else envoyExtAuthzHttp
    service: str  # a ServiceEntry host
    port: int
    namespace: str = ""  # `<namespace>/<host>`: the ServiceEntry's namespace
    timeout_ms: int = DEFAULT_EXT_AUTHZ_TIMEOUT_MS
    fail_open: bool = False
    clear_route_cache: bool = False
    status_on_error: int = 0  # 0: Envoy's default, 403
    request_body: RequestBody | None = None
    # HTTP API only:
    path_prefix: str = ""
    include_request_headers: tuple[str, ...] = ()
    include_additional_headers: tuple[tuple[str, str], ...] = ()
    headers_to_upstream_on_allow: tuple[str, ...] = ()
    headers_to_downstream_on_deny: tuple[str, ...] = ()
    headers_to_downstream_on_allow: tuple[str, ...] = ()
    path: str = ""  # `data.mesh.extensionProviders[N]`, for findings about it


@dataclass(frozen=True, slots=True)
class AccessLogSettings:
    """MeshConfig's accessLogFile / accessLogEncoding / accessLogFormat."""

    path: str  # a file, or /dev/stdout, /dev/stderr
    encoding: str = "TEXT"  # TEXT or JSON
    # TEXT: Envoy's format operators ("" is Istio's default line); JSON: field -> operator
    # ({} is Istio's default fields).
    text_format: str = ""
    json_format: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class MeshSettings:
    meta: ObjectMeta
    extension_providers: tuple[ExtAuthzProvider, ...] = ()
    access_log: AccessLogSettings | None = None
    # outboundTrafficPolicy.mode for workloads whose Sidecar does not say ("": unset,
    # pocketmesh's default REGISTRY_ONLY).
    outbound_mode: str = ""
    # defaultHttpRetryPolicy: the retries of every outbound HTTP route that sets none
    # (None: pocketmesh's default, no retries).
    default_http_retry: Retries | None = None
    # Cluster defaults a DestinationRule's connectionPool overrides (Istio's meshConfig):
    connect_timeout_ms: int | None = None  # None: Istio's 10s
    tcp_keepalive: TcpKeepalive | None = None
    h2_upgrade: bool = False  # h2UpgradePolicy UPGRADE: HTTP/1.1 upstreams speak h2
    # exportTo of ServiceEntries, VirtualServices and DestinationRules that set none
    # (empty: Istio's default, '*').
    default_service_export_to: tuple[str, ...] = ()
    default_virtual_service_export_to: tuple[str, ...] = ()
    default_destination_rule_export_to: tuple[str, ...] = ()
    auto_mtls: bool = True  # enableAutoMtls: false, mTLS only where a rule says
    # trustDomain: must be the CA's (`pocketmesh ca init --trust-domain`); "" unset.
    trust_domain: str = ""

    def provider(self, name: str) -> ExtAuthzProvider | None:
        return next((p for p in self.extension_providers if p.name == name), None)
