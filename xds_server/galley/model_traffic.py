"""Traffic management in the model: VirtualService, DestinationRule, Gateway.

Frozen values, like `model.py`; durations are whole milliseconds and
percentages are floats in [0, 100], already checked by Galley. Hosts are kept
as written; `qualify_host` gives the fully qualified name Istio resolves a
short name to (relative to the namespace of the document naming it).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from .model import CLUSTER_DOMAIN, EMPTY_LABELS, ObjectMeta

MESH_GATEWAY = "mesh"


def _empty() -> Mapping[str, str]:
    return EMPTY_LABELS


def qualify_host(host: str, namespace: str) -> str:
    """Istio's short-name rule: `reviews` in namespace `default` is
    `reviews.default.svc.cluster.local`; names with a dot and wildcards stay as written."""
    if host == "*" or "." in host:
        return host.lower()
    return f"{host}.{namespace}.{CLUSTER_DOMAIN}".lower()


# --- VirtualService -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StringMatch:
    kind: str  # "exact", "prefix" or "regex"
    value: str


@dataclass(frozen=True, slots=True)
class KeyMatch:
    """A header or query parameter match; `match` None means "present"."""

    name: str
    match: StringMatch | None


@dataclass(frozen=True, slots=True)
class HTTPMatch:
    name: str = ""
    uri: StringMatch | None = None
    method: StringMatch | None = None
    authority: StringMatch | None = None
    scheme: StringMatch | None = None
    headers: tuple[KeyMatch, ...] = ()
    query_params: tuple[KeyMatch, ...] = ()
    without_headers: tuple[KeyMatch, ...] = ()
    port: int | None = None
    source_labels: Mapping[str, str] | None = None
    source_namespace: str = ""
    gateways: tuple[str, ...] = ()
    ignore_uri_case: bool = False
    stat_prefix: str = ""  # the Envoy route's stat_prefix (Istio's match.statPrefix)

    @property
    def is_catch_all(self) -> bool:
        """Matches every request: nothing but a name (or stat prefix), or a `/` prefix."""
        uri_all = self.uri is None or (self.uri.kind == "prefix" and self.uri.value == "/")
        return uri_all and self == HTTPMatch(
            name=self.name, uri=self.uri, stat_prefix=self.stat_prefix
        )


@dataclass(frozen=True, slots=True)
class Destination:
    host: str  # fully qualified (see qualify_host)
    subset: str = ""
    port: int | None = None


@dataclass(frozen=True, slots=True)
class RouteDestination:
    destination: Destination
    weight: int = 100
    # Istio's per-destination `headers`: edits only when this destination is picked.
    request_headers: HeaderOps = field(default_factory=lambda: HeaderOps())
    response_headers: HeaderOps = field(default_factory=lambda: HeaderOps())


@dataclass(frozen=True, slots=True)
class HeaderOps:
    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Fault:
    delay_ms: int | None = None
    delay_percent: float = 100.0
    abort_status: int | None = None  # HTTP status, or with abort_grpc a gRPC status code
    abort_percent: float = 100.0
    abort_grpc: bool = False  # Istio's abort.grpcStatus (a name, here its code)


@dataclass(frozen=True, slots=True)
class Retries:
    attempts: int
    per_try_timeout_ms: int | None = None
    retry_on: str = ""
    retry_remote_localities: bool = False
    # None: as Istio, retry other hosts than the ones tried unless the route hashes
    # (consistent hash); True/False: retryIgnorePreviousHosts as written.
    ignore_previous_hosts: bool | None = None
    backoff_ms: int | None = None  # Envoy's retry_back_off.base_interval


@dataclass(frozen=True, slots=True)
class Rewrite:
    uri: str = ""
    authority: str = ""
    # uriRegexRewrite: the path's matches of `regex` replaced by `substitution`
    # (RE2, `\1` for groups; Envoy's regex_rewrite).
    regex: str = ""
    substitution: str = ""


@dataclass(frozen=True, slots=True)
class Redirect:
    uri: str = ""
    authority: str = ""
    code: int = 301
    scheme: str = ""
    port: int | None = None
    prefix_rewrite: str = ""  # replaces the matched prefix (Istio's prefixRewrite)
    derive_port: str = ""  # FROM_PROTOCOL_DEFAULT or FROM_REQUEST_PORT


@dataclass(frozen=True, slots=True)
class DirectResponse:
    status: int
    body: str = ""


@dataclass(frozen=True, slots=True)
class CorsPolicy:
    allow_origins: tuple[StringMatch, ...] = ()
    allow_methods: tuple[str, ...] = ()
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age_ms: int | None = None
    allow_credentials: bool | None = None
    forward_unmatched_preflights: bool = True  # unmatchedPreflights: IGNORE -> False


@dataclass(frozen=True, slots=True)
class Delegate:
    """`http[].delegate`: the VirtualService (without hosts) whose routes go here."""

    name: str
    namespace: str  # defaulted to the root's when the document leaves it out

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class HTTPRoute:
    name: str = ""
    match: tuple[HTTPMatch, ...] = ()  # empty: every request
    route: tuple[RouteDestination, ...] = ()
    redirect: Redirect | None = None
    direct_response: DirectResponse | None = None
    rewrite: Rewrite | None = None
    timeout_ms: int | None = None
    retries: Retries | None = None
    fault: Fault | None = None
    mirror: Destination | None = None
    mirror_percent: float = 100.0
    mirrors: tuple[tuple[Destination, float], ...] = ()  # Istio's `mirrors[]`, with percents
    request_headers: HeaderOps = field(default_factory=HeaderOps)
    response_headers: HeaderOps = field(default_factory=HeaderOps)
    cors: CorsPolicy | None = None
    # A root's route: its matches narrow the delegate's routes, which replace it
    # (`galley.delegates` merges them before anything is built).
    delegate: Delegate | None = None


@dataclass(frozen=True, slots=True)
class TCPMatch:
    port: int | None = None
    source_labels: Mapping[str, str] | None = None
    gateways: tuple[str, ...] = ()
    source_namespace: str = ""


@dataclass(frozen=True, slots=True)
class TCPRoute:
    match: tuple[TCPMatch, ...] = ()
    route: tuple[RouteDestination, ...] = ()


@dataclass(frozen=True, slots=True)
class TLSMatch:
    """Istio's TLSMatchAttributes: the SNI names (required) and where the rule applies."""

    sni_hosts: tuple[str, ...]
    port: int | None = None
    source_labels: Mapping[str, str] | None = None
    gateways: tuple[str, ...] = ()
    source_namespace: str = ""


@dataclass(frozen=True, slots=True)
class TLSRoute:
    """`tls[]`: unterminated TLS routed by SNI (passthrough gateways, TLS ports)."""

    match: tuple[TLSMatch, ...]
    route: tuple[RouteDestination, ...] = ()


@dataclass(frozen=True, slots=True)
class VirtualService:
    meta: ObjectMeta
    hosts: tuple[str, ...]  # fully qualified, or `*` / `*.suffix`; none: a delegate
    gateways: tuple[str, ...] = (MESH_GATEWAY,)  # "ns/name" or "mesh"
    http: tuple[HTTPRoute, ...] = ()
    tcp: tuple[TCPRoute, ...] = ()
    export_to: tuple[str, ...] = ()
    tls: tuple[TLSRoute, ...] = ()

    @property
    def is_delegate(self) -> bool:
        """A VirtualService without hosts only routes for the roots delegating to it."""
        return not self.hosts

    def exported_to(self, namespace: str) -> bool:
        if not self.export_to:
            return True
        return any(
            t == "*" or t == namespace or (t == "." and namespace == self.meta.namespace)
            for t in self.export_to
        )


# --- DestinationRule ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConsistentHash:
    http_header_name: str = ""
    http_cookie_name: str = ""
    http_cookie_path: str = ""
    http_cookie_ttl_ms: int = 0
    http_cookie_attributes: tuple[tuple[str, str], ...] = ()
    use_source_ip: bool = False
    http_query_parameter_name: str = ""
    minimum_ring_size: int = 0  # ringHash.minimumRingSize, or the deprecated top-level one
    maglev_table_size: int | None = None  # set: Maglev (0: Envoy's default table size)


@dataclass(frozen=True, slots=True)
class TcpKeepalive:
    """SO_KEEPALIVE on upstream connections; unset values are the OS defaults."""

    probes: int | None = None
    time_s: int | None = None
    interval_s: int | None = None


@dataclass(frozen=True, slots=True)
class ConnectionPool:
    max_connections: int | None = None
    connect_timeout_ms: int | None = None
    tcp_keepalive: TcpKeepalive | None = None
    max_connection_duration_ms: int | None = None
    tcp_idle_timeout_ms: int | None = None  # 0: no idle timeout
    http1_max_pending_requests: int | None = None
    http2_max_requests: int | None = None
    max_requests_per_connection: int | None = None
    max_retries: int | None = None
    idle_timeout_ms: int | None = None
    h2_upgrade_policy: str = "DEFAULT"  # DEFAULT, DO_NOT_UPGRADE, UPGRADE
    use_client_protocol: bool = False
    max_concurrent_streams: int | None = None
    http2_keepalive_interval_ms: int | None = None
    http2_keepalive_timeout_ms: int | None = None


@dataclass(frozen=True, slots=True)
class OutlierDetection:
    consecutive_5xx_errors: int | None = None
    consecutive_gateway_errors: int | None = None
    interval_ms: int | None = None
    base_ejection_time_ms: int | None = None
    max_ejection_percent: int | None = None
    min_health_percent: int | None = None
    split_external_local_origin_errors: bool = False
    consecutive_local_origin_failures: int | None = None
    http_error_codes: tuple[int, ...] = ()  # answers that count as errors besides 5xx


@dataclass(frozen=True, slots=True)
class Warmup:
    """Envoy's slow start: new endpoints get traffic ramped up over `duration_ms`."""

    duration_ms: int
    minimum_percent: float | None = None  # None: Istio's 10
    aggression: float | None = None  # None: Istio's 1.0 (linear)


@dataclass(frozen=True, slots=True)
class LocalityDistribute:
    """Traffic from proxies in `source` goes to these localities by weight (percent)."""

    source: str  # "region/zone/subzone", trailing `*` allowed
    to: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class LocalityLbSetting:
    """Istio's localityLbSetting: `distribute` weights, or failover priorities."""

    enabled: bool | None = None
    distribute: tuple[LocalityDistribute, ...] = ()
    failover: tuple[tuple[str, str], ...] = ()  # (from region, to region)
    failover_priority: tuple[str, ...] = ()  # label names, optionally `name=value`


@dataclass(frozen=True, slots=True)
class ZoneAwareLbSetting:
    """Istio's zoneAwareLbSetting: the proxy's region first, then `failover`'s, then
    the rest; Envoy's zone-aware routing inside the region."""

    enabled: bool | None = None
    failover: tuple[tuple[str, str], ...] = ()
    failover_priority: tuple[str, ...] = ()
    min_cluster_size: int | None = None


@dataclass(frozen=True, slots=True)
class PemFile:
    """A PEM file a document names: its absolute path, and its text once loaded.

    Parsing keeps only the path (the parse cache must not hold a file's old text);
    the loader reads the file on every load (`galley.tls_files`), so a renewed
    certificate is a changed DestinationRule.
    """

    path: str
    pem: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class ClientTLS:
    """`trafficPolicy.tls` (Istio's ClientTLSSettings), checked by Galley."""

    mode: str  # DISABLE, SIMPLE, MUTUAL, ISTIO_MUTUAL
    client_certificate: PemFile | None = None
    private_key: PemFile | None = None
    ca_certificates: PemFile | None = None
    ca_crl: PemFile | None = None  # revoked upstream certificates
    credential_name: str = ""  # a kubernetes.io/tls Secret in the rule's namespace
    namespace: str = ""  # the rule's: where credentialName is looked up
    subject_alt_names: tuple[str, ...] = ()
    sni: str = ""
    insecure_skip_verify: bool = False
    # The field path of this `tls` in its document, for load-time findings.
    path: str = field(default="", compare=False)

    @property
    def originates(self) -> bool:
        """SIMPLE or MUTUAL: TLS to the upstream with the user's certificates."""
        return self.mode in ("SIMPLE", "MUTUAL")

    def files(self) -> tuple[tuple[str, PemFile], ...]:
        """(field name, file) for every file this names."""
        named = (
            ("clientCertificate", self.client_certificate),
            ("privateKey", self.private_key),
            ("caCertificates", self.ca_certificates),
            ("caCrl", self.ca_crl),
        )
        return tuple((name, f) for name, f in named if f is not None)


@dataclass(frozen=True, slots=True)
class TrafficPolicy:
    """One level of policy; unset fields inherit from the level above (see `merged`)."""

    load_balancer: str | None = None  # ROUND_ROBIN, LEAST_REQUEST, RANDOM, PASSTHROUGH
    consistent_hash: ConsistentHash | None = None
    locality_lb: LocalityLbSetting | None = None  # the rest of Istio's loadBalancer block
    zone_aware: ZoneAwareLbSetting | None = None
    warmup: Warmup | None = None
    connection_pool: ConnectionPool | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLS | None = None  # replaced as a whole by a lower level (Istio)
    port_level: tuple[tuple[int, TrafficPolicy], ...] = ()
    retry_budget: tuple[float, int] | None = None  # (percent, minRetryConcurrency)
    proxy_protocol: str | None = None  # V1 or V2: a PROXY header on each connection
    # TCP and TLS routes to the host go through it as a tunnel: (CONNECT or POST,
    # target host, target port), Envoy's tcp_proxy tunneling_config.
    tunnel: tuple[str, str, int] | None = None

    @property
    def tls_mode(self) -> str | None:
        return None if self.tls is None else self.tls.mode

    def for_port(self, port: int) -> TrafficPolicy:
        """Istio: a portLevelSettings entry replaces each field it sets, for that port."""
        for number, policy in self.port_level:
            if number == port:
                return self.merged(policy)
        return self

    def merged(self, over: TrafficPolicy | None) -> TrafficPolicy:
        if over is None:
            return self
        # Istio: a `loadBalancer` block below replaces the one above as a whole.
        lb_set = any(
            v is not None
            for v in (
                over.load_balancer,
                over.consistent_hash,
                over.locality_lb,
                over.zone_aware,
                over.warmup,
            )
        )
        lb = over if lb_set else self
        return TrafficPolicy(
            load_balancer=lb.load_balancer,
            consistent_hash=lb.consistent_hash,
            locality_lb=lb.locality_lb,
            zone_aware=lb.zone_aware,
            warmup=lb.warmup,
            connection_pool=over.connection_pool or self.connection_pool,
            outlier_detection=over.outlier_detection or self.outlier_detection,
            tls=over.tls or self.tls,
            port_level=over.port_level or self.port_level,
            retry_budget=over.retry_budget or self.retry_budget,
            proxy_protocol=over.proxy_protocol or self.proxy_protocol,
            tunnel=over.tunnel or self.tunnel,
        )


@dataclass(frozen=True, slots=True)
class Subset:
    name: str
    labels: Mapping[str, str] = field(default_factory=_empty)
    traffic_policy: TrafficPolicy | None = None


@dataclass(frozen=True, slots=True)
class DestinationRule:
    meta: ObjectMeta
    host: str  # fully qualified
    traffic_policy: TrafficPolicy | None = None
    subsets: tuple[Subset, ...] = ()
    # Istio's exportTo: empty means every namespace ("*"); "." the rule's own.
    export_to: tuple[str, ...] = ()
    # Only the sidecars of these workloads (in the rule's namespace) use the rule.
    workload_selector: Mapping[str, str] | None = None

    def subset(self, name: str) -> Subset | None:
        return next((s for s in self.subsets if s.name == name), None)

    def tls_settings(self) -> Iterator[ClientTLS]:
        """Every `tls` the rule sets: top level, subsets, and their port levels."""
        policies = [self.traffic_policy, *(s.traffic_policy for s in self.subsets)]
        for policy in policies:
            if policy is None:
                continue
            for level in (policy, *(p for _, p in policy.port_level)):
                if level.tls is not None:
                    yield level.tls

    def policy(self, port: int, subset: str = "") -> TrafficPolicy | None:
        """The effective policy for one cluster: top level, then subset, then port level."""
        top = self.traffic_policy or TrafficPolicy()
        chosen = self.subset(subset) if subset else None
        effective = top.for_port(port)
        if chosen is not None and chosen.traffic_policy is not None:
            effective = effective.merged(chosen.traffic_policy.for_port(port))
        return None if effective == TrafficPolicy() else effective


# --- Gateway --------------------------------------------------------------

# Server TLS modes (Istio's ServerTLSSettings.TLSmode); PASSTHROUGH is the default.
PASSTHROUGH = "PASSTHROUGH"
AUTO_PASSTHROUGH = "AUTO_PASSTHROUGH"
TERMINATING_MODES = frozenset({"SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL", "ISTIO_MUTUAL"})
# Gateway server protocols that carry HTTP in the clear (Istio's Protocol.IsHTTP()).
GATEWAY_HTTP = frozenset({"HTTP", "HTTP2", "GRPC", "GRPC-WEB"})


@dataclass(frozen=True, slots=True)
class ServerCertificate:
    """One certificate a gateway server presents: files, or a Secret document."""

    chain: PemFile | None = None
    key: PemFile | None = None
    credential_name: str = ""
    # Where it is written, relative to the `tls`: "" or "tlsCertificates[1]".
    where: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class ServerTLS:
    """A server's `tls` (Istio's ServerTLSSettings), checked by Galley.

    `certificates` holds what the server presents: the `serverCertificate` /
    `privateKey` pair, each of `tlsCertificates`, or each `credentialName(s)`.
    `ca_certificates` / `ca_crl` are files; with a Secret, the client CA comes from
    `caCertCredentialName`, else `<credentialName>-cacert`, else the Secret itself.
    """

    mode: str = PASSTHROUGH
    https_redirect: bool = False
    certificates: tuple[ServerCertificate, ...] = ()
    ca_certificates: PemFile | None = None
    ca_crl: PemFile | None = None
    ca_cert_credential_name: str = ""
    subject_alt_names: tuple[str, ...] = ()
    verify_certificate_spki: tuple[str, ...] = ()
    verify_certificate_hash: tuple[str, ...] = ()
    min_protocol_version: str = ""  # TLS_AUTO, TLSV1_0 ... TLSV1_3; "" is Envoy's default
    max_protocol_version: str = ""
    cipher_suites: tuple[str, ...] = ()
    insecure_skip_verify: bool = False
    # The field path of this `tls` in its document, for load-time findings.
    path: str = field(default="", compare=False)

    @property
    def credential_name(self) -> str:
        """The first Secret named (Istio takes the client CA from it)."""
        return next((c.credential_name for c in self.certificates if c.credential_name), "")

    @property
    def terminates(self) -> bool:
        return self.mode in TERMINATING_MODES

    @property
    def verifies_clients(self) -> bool:
        return self.mode in ("MUTUAL", "OPTIONAL_MUTUAL")

    def files(self) -> tuple[tuple[str, PemFile], ...]:
        """(field path, file) for every file this names, relative to `path`."""
        found: list[tuple[str, PemFile]] = []
        for cert in self.certificates:
            prefix = f"{cert.where}." if cert.where else ""
            if cert.chain is not None:
                found.append((f"{prefix}serverCertificate", cert.chain))
            if cert.key is not None:
                found.append((f"{prefix}privateKey", cert.key))
        if self.ca_certificates is not None:
            found.append(("caCertificates", self.ca_certificates))
        if self.ca_crl is not None:
            found.append(("caCrl", self.ca_crl))
        return tuple(found)


@dataclass(frozen=True, slots=True)
class GatewayServer:
    port: int
    protocol: str
    port_name: str
    hosts: tuple[str, ...]  # "ns/host" or "host" (any namespace)
    tls: ServerTLS | None = None
    name: str = ""
    index: int = 0  # its place in the Gateway's servers

    @property
    def is_http(self) -> bool:
        """Plain HTTP: one connection manager shared by the port's HTTP servers."""
        return self.protocol in GATEWAY_HTTP

    @property
    def terminates_http(self) -> bool:
        """HTTPS ended here: HTTP routes behind this server's own TLS."""
        return self.protocol == "HTTPS" and self.tls is not None and self.tls.terminates

    @property
    def passthrough(self) -> bool:
        return (
            self.tls is not None
            and self.tls.mode in (PASSTHROUGH, AUTO_PASSTHROUGH)
            and (not self.is_http)
        )

    @property
    def uses_tls(self) -> bool:
        """Told apart from the port's other servers by SNI (Istio: a TLS server)."""
        return self.tls is not None and not self.is_http

    @property
    def sni_hosts(self) -> tuple[str, ...]:
        """The server's hosts without their namespaces (Istio's GetSNIHostsForServer)."""
        return tuple(sorted({h.rpartition("/")[2] for h in self.hosts}))


@dataclass(frozen=True, slots=True)
class Gateway:
    meta: ObjectMeta
    selector: Mapping[str, str]
    servers: tuple[GatewayServer, ...]

    def selects(self, labels: Mapping[str, str]) -> bool:
        return bool(self.selector) and all(labels.get(k) == v for k, v in self.selector.items())


def gateway_key(name: str, namespace: str) -> str:
    """`gateways:` entries are `name` (same namespace as the VirtualService) or `ns/name`."""
    if name == MESH_GATEWAY or "/" in name:
        return name
    return f"{namespace}/{name}"


# --- TLS credentials (Kubernetes Secrets) ---------------------------------


@dataclass(frozen=True, slots=True)
class TLSCredential:
    """A Secret a `credentialName` names: a certificate and its key, CA roots, or both.

    Istio reads `tls.crt`/`tls.key` or `cert`/`key`, `ca.crt` or `cacert`, and
    `ca.crl` or `crl`; a `kubernetes.io/tls` Secret always has the first pair.
    """

    meta: ObjectMeta
    cert_pem: str = field(default="", repr=False)
    key_pem: str = field(default="", repr=False)
    ca_pem: str = field(default="", repr=False)  # roots: clients (Gateway) or upstreams (DR)
    crl_pem: str = field(default="", repr=False)  # revoked client certificates (Gateway)

    @property
    def has_key_pair(self) -> bool:
        return bool(self.cert_pem and self.key_pem)
