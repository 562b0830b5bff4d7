"""The mesh settings: Istio's MeshConfig, as Istio users keep it.

istiod reads MeshConfig from the `istio` ConfigMap of `istio-system`, as YAML text
under `data.mesh`; pocketmesh reads the same document:

    apiVersion: v1
    kind: ConfigMap
    metadata: {name: istio, namespace: istio-system}
    data:
      mesh: |-
        extensionProviders:
        - name: sample-ext-authz-grpc
          envoyExtAuthzGrpc: {service: ext-authz.foo.svc.cluster.local, port: 9000}

Findings inside `data.mesh` are located at their own line of the file (a block
scalar's text starts on the line after `mesh:`). Only the fields pocketmesh builds
are accepted: `extensionProviders` of the ext_authz kinds, which AuthorizationPolicies
with `action: CUSTOM` name, and the access log (`accessLogFile`, `accessLogEncoding`,
`accessLogFormat`). Every other MeshConfig field is refused, so a setting never
silently does nothing; the trust domain is `serve --trust-domain`.
"""

from __future__ import annotations

import json
from typing import Any

from ..fields import Shape, deprecated, each, no_effect, not_yet, obj, shape, supported
from ..model import ROOT_NAMESPACE, ObjectMeta
from ..model_mesh import (
    DEFAULT_EXT_AUTHZ_TIMEOUT_MS,
    MESH_CONFIGMAP,
    AccessLogSettings,
    ExtAuthzProvider,
    MeshSettings,
    RequestBody,
)
from ..model_traffic import Retries, TcpKeepalive
from ..names import dns1123_label_problem, hostname_problem
from ..schema import DocChecker, Located
from ..yaml_lines import YamlList, YamlMap, YamlSyntaxError, load_documents
from . import connection_pool
from .common import MAX_PORT, parse_export_to
from .connection_pool import parse_keepalive
from .traffic_common import boolean, duration_ms, host_problem
from .virtual_service import RETRIES, parse_retries

_TELEMETRY = "a Telemetry provider: Telemetry is not supported yet"
ACCESS_LOG_ENCODINGS = frozenset({"TEXT", "JSON"})
OUTBOUND_MODES = frozenset({"REGISTRY_ONLY", "ALLOW_ANY"})
H2_UPGRADE_POLICIES = frozenset({"DO_NOT_UPGRADE", "UPGRADE"})

REQUEST_BODY: Shape = shape(
    maxRequestBytes=supported(),
    allowPartialMessage=supported(),
    packAsBytes=supported("gRPC API: the body as bytes"),
)
_COMMON = {
    "service": supported("[<namespace>/]<host> of a ServiceEntry"),
    "port": supported("a port of that ServiceEntry"),
    "timeout": supported("default 600s"),
    "failOpen": supported("allow the request when the check fails"),
    "clearRouteCache": supported(),
    "statusOnError": supported("the status when the check fails (default 403)"),
    "includeRequestBodyInCheck": obj(REQUEST_BODY),
}
EXT_AUTHZ_HTTP: Shape = shape(
    **_COMMON,
    pathPrefix=supported(),
    includeRequestHeadersInCheck=supported("exact, prefix* or *suffix"),
    includeHeadersInCheck=deprecated("use includeRequestHeadersInCheck"),
    includeAdditionalHeadersInCheck=supported(),
    headersToUpstreamOnAllow=supported(),
    headersToDownstreamOnDeny=supported(),
    headersToDownstreamOnAllow=supported(),
)
EXT_AUTHZ_GRPC: Shape = shape(**_COMMON)
PROVIDER: Shape = shape(
    name=supported("what AuthorizationPolicy provider.name says"),
    envoyExtAuthzHttp=obj(EXT_AUTHZ_HTTP),
    envoyExtAuthzGrpc=obj(EXT_AUTHZ_GRPC),
    zipkin=not_yet(_TELEMETRY),
    lightstep=not_yet(_TELEMETRY),
    datadog=not_yet(_TELEMETRY),
    stackdriver=not_yet(_TELEMETRY),
    opencensus=not_yet(_TELEMETRY),
    skywalking=not_yet(_TELEMETRY),
    opentelemetry=not_yet(_TELEMETRY),
    prometheus=not_yet(_TELEMETRY),
    envoyFileAccessLog=not_yet(_TELEMETRY),
    envoyHttpAls=not_yet(_TELEMETRY),
    envoyTcpAls=not_yet(_TELEMETRY),
    envoyOtelAls=not_yet(_TELEMETRY),
    sds=not_yet("an SDS provider for gateway credentials"),
)
_NOT_HERE = {
    "rootNamespace": "pocketmesh's root namespace is istio-system",
}
# MeshConfig fields pocketmesh does not read (trust domain: `serve --trust-domain`).
_REFUSED_MESH_FIELDS = (
    "hboneIdleTimeout", "protocolDetectionTimeout", "ingressClass",
    "ingressService", "ingressControllerMode", "ingressSelector", "enableTracing",
    "enableEnvoyAccessLogService",
    "disableEnvoyListenerLog", "defaultConfig", "inboundTrafficPolicy",
    "configSources", "trustDomainAliases", "caCertificates",
    "rootNamespace", "localityLbSetting", "dnsRefreshRate",
    "inboundClusterStatName", "outboundClusterStatName", "certificates", "serviceSettings",
    "serviceScopeConfigs", "enablePrometheusMerge", "verifyCertificateAtClient", "ca",
    "defaultProviders", "discoverySelectors", "pathNormalization",
    "meshMTLS", "tlsDefaults", "defaultTrafficPolicy", "serviceEntryVisibility",
    "proxyListenPort", "proxyInboundListenPort", "proxyHttpPort", "enableSdsTokenMount",
    "sdsUdsPath", "thriftConfig", "outboundTrafficPolicyMode",
)  # fmt: skip
MESH: Shape = shape(
    extensionProviders=each(PROVIDER, "the ext_authz providers CUSTOM policies name"),
    accessLogFile=supported(
        "every sidecar and gateway logs each request and TCP connection to this file "
        "(/dev/stdout: Envoy's output, which `up` keeps in its log directory); '' for none"
    ),
    accessLogEncoding=supported("TEXT (the default) or JSON"),
    connectTimeout=supported("every cluster's connect timeout unless its DestinationRule says"),
    trustDomain=supported(
        "the mesh CA's trust domain, as a check: a control plane whose CA has another one "
        "refuses the config (the CA's is set by `pocketmesh ca init --trust-domain`)"
    ),
    enableAutoMtls=supported(
        "true (the default): clients speak mTLS to mesh workloads that accept it; false: only "
        "where a DestinationRule says ISTIO_MUTUAL"
    ),
    defaultServiceExportTo=supported(
        "the exportTo of ServiceEntries that set none ('*' unless it says; '.', '~', names)"
    ),
    defaultVirtualServiceExportTo=supported("the exportTo of VirtualServices that set none"),
    defaultDestinationRuleExportTo=supported(
        "the exportTo of DestinationRules that set none (and select no workloads)"
    ),
    tcpKeepalive=obj(
        connection_pool.KEEPALIVE,
        "SO_KEEPALIVE on every upstream connection; a DestinationRule's fields override it",
    ),
    h2UpgradePolicy=supported(
        "UPGRADE: HTTP/1.1 upstreams are spoken to in h2 unless their DestinationRule says "
        "DO_NOT_UPGRADE; DO_NOT_UPGRADE (the default)"
    ),
    defaultHttpRetryPolicy=obj(
        RETRIES,
        "the retries of every outbound HTTP route that sets none (VirtualService routes "
        "and services' default routes); unset: none (Istio retries twice by default)",
    ),
    outboundTrafficPolicy=obj(
        shape(
            mode=supported(
                "REGISTRY_ONLY (pocketmesh's default) or ALLOW_ANY (Istio's): for workloads "
                "whose Sidecar sets no outboundTrafficPolicy"
            )
        ),
        "the mesh-wide default of Sidecar outboundTrafficPolicy",
    ),
    accessLogFormat=supported(
        "Envoy's format operators (%START_TIME%, %RESPONSE_CODE%, ...); with JSON, a JSON "
        "object of them. Default: Istio's line (TEXT) or fields (JSON)"
    ),
    **{name: not_yet(_NOT_HERE.get(name, "")) for name in _REFUSED_MESH_FIELDS},
)
DATA: Shape = shape(
    mesh=obj(MESH, "Istio's MeshConfig, as YAML text"),
    meshNetworks=not_yet("multi-network meshes"),
)
# A ConfigMap has no spec: these are its top-level fields besides apiVersion/kind/metadata.
SPEC: Shape = shape(
    data=obj(DATA),
    binaryData=not_yet(),
    immutable=no_effect("pocketmesh reads ConfigMaps from files; it never edits them"),
)
_STATUS_CODES = frozenset(
    {100, *range(200, 209), 226, *range(300, 309), *range(400, 419), *range(421, 427), 428, 429,
     431, *range(500, 509), 510, 511}
)  # fmt: skip


def parse_mesh_config(ck: DocChecker, meta: ObjectMeta, doc: Located | None) -> MeshSettings | None:
    if doc is None or not isinstance(doc.value, YamlMap):
        return None
    before = len(ck.errors)
    if (meta.namespace, meta.name) != (ROOT_NAMESPACE, MESH_CONFIGMAP):
        at = Located(meta.name, "metadata.name", ck.lines.get("metadata.name", doc.line))
        ck.error(
            at,
            f"pocketmesh reads one ConfigMap, the mesh settings {ROOT_NAMESPACE}/{MESH_CONFIGMAP} "
            f"(Istio's MeshConfig), not {meta.key}",
        )
        return None
    root: YamlMap = doc.value
    providers: list[ExtAuthzProvider] = []
    access_log: AccessLogSettings | None = None
    outbound = ""
    default_retry: Retries | None = None
    cluster_defaults: tuple[int | None, TcpKeepalive | None, bool] = (None, None, False)
    export_defaults: tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]] = ((), (), ())
    auto_mtls = True
    trust_domain = ""
    data_at = _at(root, "data", doc.line)
    if data_at is not None:
        data = ck.fields(data_at, DATA)
        mesh_at = data.get("mesh") if data is not None else None
        if mesh_at is not None:
            mesh = _mesh_document(ck, mesh_at)
            fields = ck.fields(mesh, MESH) if mesh is not None else None
            if fields is not None:
                providers = _providers(ck, fields)
                access_log = _access_log(ck, fields)
                outbound = _outbound_mode(ck, fields)
                if (retry_at := fields.get("defaultHttpRetryPolicy")) is not None:
                    default_retry = parse_retries(ck, retry_at)
                cluster_defaults = _cluster_defaults(ck, fields)
                export_defaults = _export_defaults(ck, fields)
                if (auto_at := fields.get("enableAutoMtls")) is not None:
                    auto_mtls = boolean(ck, auto_at) is not False
                if (td_at := fields.get("trustDomain")) is not None:
                    trust_domain = ck.string(td_at, hostname_problem) or ""
    if len(ck.errors) > before:
        return None
    timeout, keepalive, upgrade = cluster_defaults
    services_export, virtual_services_export, rules_export = export_defaults
    return MeshSettings(
        meta,
        extension_providers=tuple(providers),
        access_log=access_log,
        outbound_mode=outbound,
        default_http_retry=default_retry,
        connect_timeout_ms=timeout,
        tcp_keepalive=keepalive,
        h2_upgrade=upgrade,
        default_service_export_to=services_export,
        default_virtual_service_export_to=virtual_services_export,
        default_destination_rule_export_to=rules_export,
        auto_mtls=auto_mtls,
        trust_domain=trust_domain,
    )


def _at(root: YamlMap, key: str, line: int) -> Located | None:
    if root.get(key) is None:
        return None
    return Located(root[key], key, root.key_lines.get(key, line))


def _mesh_document(ck: DocChecker, at: Located) -> Located | None:
    """`data.mesh` read as YAML, its lines moved to where they are in the file."""
    text = ck.string(at)
    if text is None:
        return None
    parsed = load_documents(text)
    if isinstance(parsed, YamlSyntaxError):
        line = at.line + parsed.line if "\n" in text else at.line
        ck.error(Located(None, at.path, line), f"is not YAML: {parsed.message}")
        return None
    if not parsed:
        return Located(YamlMap(at.line), at.path, at.line)
    if len(parsed) > 1:
        ck.error(at, "must be one YAML document")
        return None
    value = parsed[0].value
    # A block scalar's text starts on the line after `mesh:`; a one-line value is there.
    _move(value, at.line if "\n" in text else None, at.line)
    line = (at.line + parsed[0].line) if "\n" in text else at.line
    return Located(value, at.path, line)


def _move(value: Any, offset: int | None, line: int) -> None:
    """Add `offset` to every line in a parsed tree (None: put them all on `line`)."""

    def moved(n: int) -> int:
        return line if offset is None else n + offset

    if isinstance(value, YamlMap):
        value.line = moved(value.line)
        for key in value.key_lines:
            value.key_lines[key] = moved(value.key_lines[key])
        value.duplicate_keys[:] = [(k, moved(n)) for k, n in value.duplicate_keys]
        for item in value.values():
            _move(item, offset, line)
    elif isinstance(value, YamlList):
        value.line = moved(value.line)
        value.item_lines[:] = [moved(n) for n in value.item_lines]
        for item in value:
            _move(item, offset, line)


def _cluster_defaults(
    ck: DocChecker, fields: dict[str, Located]
) -> tuple[int | None, TcpKeepalive | None, bool]:
    """connectTimeout, tcpKeepalive, h2UpgradePolicy: defaults of every cluster."""
    timeout = duration_ms(ck, fields["connectTimeout"]) if "connectTimeout" in fields else None
    keepalive = parse_keepalive(ck, fields["tcpKeepalive"]) if "tcpKeepalive" in fields else None
    upgrade = False
    if (h2_at := fields.get("h2UpgradePolicy")) is not None:
        upgrade = ck.enum(h2_at, H2_UPGRADE_POLICIES) == "UPGRADE"
    return timeout, keepalive, upgrade


def _export_defaults(
    ck: DocChecker, fields: dict[str, Located]
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """defaultServiceExportTo, defaultVirtualServiceExportTo, defaultDestinationRuleExportTo
    ('.' stays relative: each resource's own namespace)."""
    found = []
    for key in (
        "defaultServiceExportTo",
        "defaultVirtualServiceExportTo",
        "defaultDestinationRuleExportTo",
    ):
        values: list[str] = []
        if (at := fields.get(key)) is not None:
            values, _ = parse_export_to(ck, at, "", none_allowed=key == "defaultServiceExportTo")
        found.append(tuple(values))
    return found[0], found[1], found[2]


def _outbound_mode(ck: DocChecker, fields: dict[str, Located]) -> str:
    if (at := fields.get("outboundTrafficPolicy")) is None:
        return ""
    policy = ck.fields(at, MESH["outboundTrafficPolicy"].fields or {}) or {}
    if (mode_at := policy.get("mode")) is None:
        return "REGISTRY_ONLY"  # the API's default, once the field is written
    return ck.enum(mode_at, OUTBOUND_MODES) or ""


def _access_log(ck: DocChecker, fields: dict[str, Located]) -> AccessLogSettings | None:
    """Istio's access log settings: a file, its encoding, its format."""
    path = ck.string(fields["accessLogFile"]) or "" if "accessLogFile" in fields else ""
    encoding = "TEXT"
    if (e := fields.get("accessLogEncoding")) is not None:
        encoding = ck.enum(e, ACCESS_LOG_ENCODINGS) or encoding
    text = ""
    json_fields: tuple[tuple[str, str], ...] = ()
    if (f := fields.get("accessLogFormat")) is not None:
        fmt = ck.string(f) or ""
        if encoding == "JSON" and fmt:
            json_fields = _json_format(ck, f, fmt)
        else:
            text = fmt if fmt.endswith("\n") or not fmt else fmt + "\n"  # Istio adds it
    if not path:
        for key in ("accessLogEncoding", "accessLogFormat"):
            if key in fields:
                ck.warn(fields[key], "has no effect without accessLogFile (as in Istio)")
        return None
    return AccessLogSettings(path, encoding, text, json_fields)


def _json_format(ck: DocChecker, at: Located, fmt: str) -> tuple[tuple[str, str], ...]:
    """A JSON accessLogFormat: an object whose values are format strings."""
    try:
        parsed = json.loads(fmt)
    except ValueError as err:
        ck.error(at, f"with accessLogEncoding JSON it must be a JSON object: {err}")
        return ()
    if not isinstance(parsed, dict) or not all(isinstance(v, str) for v in parsed.values()):
        ck.error(at, "with accessLogEncoding JSON it must be a JSON object of strings")
        return ()
    return tuple((str(k), v) for k, v in parsed.items())


def _providers(ck: DocChecker, fields: dict[str, Located]) -> list[ExtAuthzProvider]:
    if (at := fields.get("extensionProviders")) is None:
        return []
    out: list[ExtAuthzProvider] = []
    names: dict[str, int] = {}
    for item in ck.items(at) or ():
        provider = _provider(ck, item)
        if provider is None:
            continue
        if provider.name in names:
            ck.error(
                item,
                f"provider name {provider.name!r} is already used (line {names[provider.name]})",
                path=f"{item.path}.name",
            )
            continue
        names[provider.name] = item.line
        out.append(provider)
    return out


def _provider(ck: DocChecker, at: Located) -> ExtAuthzProvider | None:
    fields = ck.fields(at, PROVIDER)
    if fields is None:
        return None
    name_at = ck.required(fields, "name", at)
    name = ck.string(name_at, dns1123_label_problem) if name_at is not None else None
    kinds = [k for k in ("envoyExtAuthzHttp", "envoyExtAuthzGrpc") if k in fields]
    if len(kinds) != 1:
        ck.error(at, "must set exactly one of envoyExtAuthzHttp, envoyExtAuthzGrpc")
        return None
    kind = kinds[0]
    grpc = kind == "envoyExtAuthzGrpc"
    body = ck.fields(fields[kind], EXT_AUTHZ_GRPC if grpc else EXT_AUTHZ_HTTP)
    if body is None:
        return None
    provider = _ext_authz(ck, fields[kind], body, name or "", grpc, at.path)
    return provider if name is not None else None


def _ext_authz(
    ck: DocChecker, at: Located, f: dict[str, Located], name: str, grpc: bool, path: str
) -> ExtAuthzProvider | None:
    before = len(ck.errors)
    service_at = ck.required(f, "service", at)
    service = ck.string(service_at, _service_problem) if service_at is not None else None
    port_at = ck.required(f, "port", at)
    port = _port(ck, port_at) if port_at is not None else None
    timeout = DEFAULT_EXT_AUTHZ_TIMEOUT_MS
    if (timeout_at := f.get("timeout")) is not None:
        timeout = duration_ms(ck, timeout_at) or timeout
    status = 0
    if (status_at := f.get("statusOnError")) is not None:
        status = _status(ck, status_at)
    body: RequestBody | None = None
    if (body_at := f.get("includeRequestBodyInCheck")) is not None:
        body = _body(ck, body_at)
    headers = _patterns(ck, f, "includeRequestHeadersInCheck")
    if not headers:
        headers = _patterns(ck, f, "includeHeadersInCheck")
    additional: list[tuple[str, str]] = []
    if (extra_at := f.get("includeAdditionalHeadersInCheck")) is not None:
        additional = sorted((ck.string_map(extra_at) or {}).items())
    prefix = ""
    if (prefix_at := f.get("pathPrefix")) is not None:
        prefix = ck.string(prefix_at, _path_prefix_problem) or ""
    if len(ck.errors) > before or service is None or port is None:
        return None
    namespace, _, host = service.rpartition("/")
    return ExtAuthzProvider(
        name=name,
        grpc=grpc,
        service=host,
        namespace=namespace,
        port=port,
        timeout_ms=timeout,
        fail_open=_flag(ck, f, "failOpen"),
        clear_route_cache=_flag(ck, f, "clearRouteCache"),
        status_on_error=status,
        request_body=body,
        path_prefix=prefix,
        include_request_headers=headers,
        include_additional_headers=tuple(additional),
        headers_to_upstream_on_allow=_patterns(ck, f, "headersToUpstreamOnAllow"),
        headers_to_downstream_on_deny=_patterns(ck, f, "headersToDownstreamOnDeny"),
        headers_to_downstream_on_allow=_patterns(ck, f, "headersToDownstreamOnAllow"),
        path=path,
    )


def _service_problem(value: str) -> str | None:
    namespace, slash, host = value.rpartition("/")
    if slash and dns1123_label_problem(namespace) is not None:
        return "must be [<namespace>/]<host>"
    if "*" in host:
        return "must name one host, not a wildcard"
    return host_problem(host)


def _path_prefix_problem(value: str) -> str | None:
    return None if value.startswith("/") else "must begin with '/' (as in Istio)"


def _port(ck: DocChecker, at: Located) -> int | None:
    value = at.value
    if isinstance(value, str) and value.isdigit():  # MeshConfig JSON: a uint32 as a string
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PORT:
        ck.error(at, f"{at.value!r} must be a port number from 1 to {MAX_PORT}")
        return None
    return value


def _status(ck: DocChecker, at: Located) -> int:
    value = at.value
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.isdigit() or int(value) not in _STATUS_CODES:
        ck.error(at, f'{at.value!r} must be an HTTP status code Envoy knows, like "403"')
        return 0
    return int(value)


def _flag(ck: DocChecker, f: dict[str, Located], key: str) -> bool:
    at = f.get(key)
    return bool(boolean(ck, at)) if at is not None else False


def _pattern_problem(value: str) -> str | None:
    if not value:
        return "must not be empty"
    if value == "*":
        return "'*' alone is not supported: use a prefix* or *suffix (as in Istio)"
    return None


def _patterns(ck: DocChecker, f: dict[str, Located], key: str) -> tuple[str, ...]:
    at = f.get(key)
    if at is None:
        return ()
    return tuple(v for v, _ in ck.strings(at, _pattern_problem) or ())


def _body(ck: DocChecker, at: Located) -> RequestBody | None:
    fields = ck.fields(at, REQUEST_BODY)
    if fields is None:
        return None
    size = 0
    if (size_at := fields.get("maxRequestBytes")) is not None:
        size = ck.integer(size_at, 0, 2**32 - 1) or 0
    return RequestBody(
        max_request_bytes=size,
        allow_partial_message=_flag(ck, fields, "allowPartialMessage"),
        pack_as_bytes=_flag(ck, fields, "packAsBytes"),
    )
