"""Reading what a proxy is sent: the filters of a chain, a cluster's TLS, its endpoints,
a route's faults. Plain functions over Envoy protobufs (read only)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from xds_server.generators.proxy_protocol import inner_socket
from xds_server.generators.tls_plan import ROOT_SECRET, WORKLOAD_SECRET
from xds_server.generators.traffic_policy import HTTP_PROTOCOL_OPTIONS_KEY

HCM = hcm_pb2.HttpConnectionManager
FAULT_FILTER = "envoy.filters.http.fault"


def unpack(packed: any_pb2.Any, kind: type[Message]) -> Any:
    """The message inside `packed` if it is a `kind`, else None."""
    if packed.type_url.rpartition("/")[2] != kind.DESCRIPTOR.full_name:
        return None
    message = kind()
    packed.Unpack(message)
    return message


def to_dict(message: Message) -> dict[str, Any]:
    return MessageToDict(message, preserving_proto_field_name=True)


def seconds(d: duration_pb2.Duration) -> str:
    value = d.seconds + d.nanos / 1e9
    return f"{value:g}s"


def percent(p: percent_pb2.FractionalPercent) -> float:
    per = {0: 100, 1: 10_000, 2: 1_000_000}.get(p.denominator, 100)
    return round(p.numerator * 100 / per, 4)


# --- listeners -----------------------------------------------------------------------


def http_manager(chain: listener_components_pb2.FilterChain) -> Any:
    for f in chain.filters:
        hcm = unpack(f.typed_config, HCM)
        if hcm is not None:
            return hcm
    return None


def tcp_proxy(chain: listener_components_pb2.FilterChain) -> Any:
    for f in chain.filters:
        proxy = unpack(f.typed_config, tcp_proxy_pb2.TcpProxy)
        if proxy is not None:
            return proxy
    return None


@dataclass(frozen=True, slots=True)
class RbacFilter:
    """One RBAC filter of a chain: Envoy's action and its policies by name."""

    action: str  # ALLOW, DENY, LOG
    policies: Mapping[str, rbac_pb2.Policy]
    shadow: bool  # dry-run (shadow_rules): counted, never enforced


def rbac_filters(chain: listener_components_pb2.FilterChain) -> list[RbacFilter]:
    """The chain's RBAC filters in order: network ones, then the HCM's HTTP ones."""
    configs: list[Any] = []
    for f in chain.filters:
        config = unpack(f.typed_config, network_rbac_pb2.RBAC)
        if config is not None:
            configs.append(config)
    hcm = http_manager(chain)
    if hcm is not None:
        for f in hcm.http_filters:
            config = unpack(f.typed_config, http_rbac_pb2.RBAC)
            if config is not None:
                configs.append(config)
    found = []
    for config in configs:
        for rules, shadow in ((config.rules, False), (config.shadow_rules, True)):
            if config.HasField("shadow_rules" if shadow else "rules"):
                action = rbac_pb2.RBAC.Action.Name(rules.action)
                found.append(RbacFilter(action, dict(rules.policies), shadow))
    return found


def http_filter_names(chain: listener_components_pb2.FilterChain) -> list[str]:
    hcm = http_manager(chain)
    return [f.name for f in hcm.http_filters] if hcm is not None else []


def requires_client_certificate(chain: listener_components_pb2.FilterChain) -> bool:
    context = unpack(chain.transport_socket.typed_config, tls_pb2.DownstreamTlsContext)
    return context is not None and context.require_client_certificate.value


def downstream_mode(listener: listener_pb2.Listener) -> str:
    """What an inbound listener accepts: STRICT (mTLS only), PERMISSIVE (mTLS or
    plaintext, told apart by the TLS inspector), DISABLE (plaintext only)."""
    tls = [c for c in listener.filter_chains if c.HasField("transport_socket")]
    plain = [c for c in listener.filter_chains if not c.HasField("transport_socket")]
    if tls and plain:
        return "PERMISSIVE"
    if tls:
        return "STRICT" if all(requires_client_certificate(c) for c in tls) else "TLS"
    return "DISABLE"


# --- clusters ------------------------------------------------------------------------


def parse_cluster_name(name: str) -> tuple[str, int, str, str] | None:
    """`outbound|9080|v1|reviews.default.svc.cluster.local` -> (direction, port, subset, host)."""
    parts = name.split("|")
    if len(parts) != 4 or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1]), parts[2], parts[3]


def upstream_tls(cluster: cluster_pb2.Cluster) -> dict[str, Any]:
    """The TLS a cluster speaks, as Istio names the modes."""
    socket, proxy_protocol = inner_socket(cluster.transport_socket)
    context = unpack(socket.typed_config, tls_pb2.UpstreamTlsContext)
    header = {"proxy_protocol": proxy_protocol} if proxy_protocol else {}
    if context is None:
        return {"mode": "DISABLE", "wire": "plaintext", **header}
    common = context.common_tls_context
    certs = [c.name for c in common.tls_certificate_sds_secret_configs]
    validation = common.combined_validation_context
    roots = validation.validation_context_sds_secret_config.name
    matchers = validation.default_validation_context.match_typed_subject_alt_names
    sans = [m.matcher.exact or m.matcher.prefix for m in matchers]
    if certs == [WORKLOAD_SECRET] and roots == ROOT_SECRET:
        mode = "ISTIO_MUTUAL"
    elif certs:
        mode = "MUTUAL"
    else:
        mode = "SIMPLE"
    out: dict[str, Any] = {
        "mode": mode,
        "wire": "mutual TLS" if certs else "TLS",
        "sni": context.sni,
        "client_certificate": certs[0] if certs else "",
        "roots": roots,
        "server_identities": sans,
        "verified": bool(roots),
        **header,
    }
    options = _http_protocol_options(cluster)
    if options is not None and options.HasField("upstream_http_protocol_options"):
        upstream = options.upstream_http_protocol_options
        out["auto_sni"] = upstream.auto_sni
        out["auto_san_validation"] = upstream.auto_san_validation
    return out


def _http_protocol_options(
    cluster: cluster_pb2.Cluster,
) -> http_protocol_options_pb2.HttpProtocolOptions | None:
    """The cluster's `envoy.extensions.upstreams.http.v3.HttpProtocolOptions`, if set."""
    packed = cluster.typed_extension_protocol_options.get(HTTP_PROTOCOL_OPTIONS_KEY)
    if packed is None:
        return None
    return unpack(packed, http_protocol_options_pb2.HttpProtocolOptions)


def cluster_policy(cluster: cluster_pb2.Cluster) -> dict[str, Any]:
    """The traffic policy Envoy applies to a cluster (what a DestinationRule set)."""
    out: dict[str, Any] = {
        "type": cluster_pb2.Cluster.DiscoveryType.Name(cluster.type),
        "lb_policy": cluster_pb2.Cluster.LbPolicy.Name(cluster.lb_policy),
        "connect_timeout": seconds(cluster.connect_timeout),
    }
    if cluster.HasField("circuit_breakers"):
        out["circuit_breakers"] = to_dict(cluster.circuit_breakers)
    if cluster.HasField("outlier_detection"):
        out["outlier_detection"] = to_dict(cluster.outlier_detection)
    options = _http_protocol_options(cluster)
    if options is not None and options.HasField("common_http_protocol_options"):
        out["http_protocol_options"] = to_dict(options.common_http_protocol_options)
    if options is not None and options.HasField("explicit_http_config"):
        config = options.explicit_http_config
        out["upstream_protocol"] = (
            "HTTP/2" if config.HasField("http2_protocol_options") else "HTTP/1.1"
        )
    return out


def endpoints(
    cluster: cluster_pb2.Cluster, assignments: Mapping[str, Message]
) -> tuple[list[dict[str, Any]], str]:
    """The endpoints Envoy balances over, and where they come from (EDS or inline)."""
    if cluster.type == cluster_pb2.Cluster.EDS:
        name = cluster.eds_cluster_config.service_name or cluster.name
        cla = assignments.get(name)
        where = f"EDS {name}"
    else:
        cla = cluster.load_assignment
        where = (
            f"{cluster_pb2.Cluster.DiscoveryType.Name(cluster.type)} (inline, resolved by Envoy)"
        )
    if not isinstance(cla, endpoint_pb2.ClusterLoadAssignment):
        return [], where
    found = []
    for group in cla.endpoints:
        locality = "/".join(p for p in (group.locality.region, group.locality.zone,
                                        group.locality.sub_zone) if p)  # fmt: skip
        for lb in group.lb_endpoints:
            address = lb.endpoint.address.socket_address
            istio = lb.metadata.filter_metadata.get("istio")
            fields = istio.fields if istio is not None else {}
            workload = fields["workload"].string_value if "workload" in fields else ""
            namespace = fields["namespace"].string_value if "namespace" in fields else ""
            found.append(
                {
                    "address": f"{address.address}:{address.port_value}",
                    "workload": f"{workload}.{namespace}" if workload else "",
                    "weight": lb.load_balancing_weight.value or 1,
                    "locality": locality,
                    "priority": group.priority,
                }
            )
    return found, where


# --- routes --------------------------------------------------------------------------


def route_config_name(route: rc.Route) -> str:
    """The `istio.config` metadata a generator recorded (the VirtualService)."""
    istio = route.metadata.filter_metadata.get("istio")
    if istio is None or "config" not in istio.fields:
        return ""
    return str(istio.fields["config"].string_value)


def fault(route: rc.Route) -> dict[str, Any] | None:
    packed = route.typed_per_filter_config.get(FAULT_FILTER)
    config = unpack(packed, fault_pb2.HTTPFault) if packed is not None else None
    if config is None:
        return None
    out: dict[str, Any] = {}
    if config.HasField("delay"):
        out["delay"] = {
            "fixed_delay": seconds(config.delay.fixed_delay),
            "percent": percent(config.delay.percentage),
        }
    if config.HasField("abort"):
        out["abort"] = {
            "http_status": config.abort.http_status,
            "percent": percent(config.abort.percentage),
        }
    return out or None


def route_action(route: rc.Route) -> dict[str, Any]:
    """What the matched route does, besides choosing clusters."""
    out: dict[str, Any] = {}
    if route.HasField("redirect"):
        out["action"] = "redirect"
        out["redirect"] = to_dict(route.redirect)
    elif route.HasField("direct_response"):
        out["action"] = "direct_response"
        out["status"] = route.direct_response.status
        body = route.direct_response.body
        if body.HasField("inline_string"):
            out["body"] = body.inline_string
    elif route.HasField("route"):
        out["action"] = "route"
        action = route.route
        if action.HasField("timeout"):
            out["timeout"] = seconds(action.timeout) if action.timeout.ToNanoseconds() else "none"
        if action.HasField("retry_policy"):
            out["retries"] = to_dict(action.retry_policy)
        if action.prefix_rewrite:
            out["prefix_rewrite"] = action.prefix_rewrite
        if action.HasField("regex_rewrite"):
            rewrite = action.regex_rewrite
            out["regex_rewrite"] = f"{rewrite.pattern.regex} -> {rewrite.substitution}"
        if action.host_rewrite_literal:
            out["host_rewrite"] = action.host_rewrite_literal
        if action.hash_policy:
            out["hash_policy"] = [to_dict(h) for h in action.hash_policy]
        mirrors = []
        for m in action.request_mirror_policies:
            mirrors.append(
                {"cluster": m.cluster, "percent": percent(m.runtime_fraction.default_value)}
            )
        if mirrors:
            out["mirrors"] = mirrors
    else:
        out["action"] = route.WhichOneof("action") or "none"
    fault_config = fault(route)
    if fault_config:
        out["fault"] = fault_config
    others = sorted(k for k in route.typed_per_filter_config if k != FAULT_FILTER)
    if others:
        out["per_filter_config"] = others
    headers = {
        "request_add": [f"{h.header.key}: {h.header.value}" for h in route.request_headers_to_add],
        "request_remove": list(route.request_headers_to_remove),
        "response_add": [
            f"{h.header.key}: {h.header.value}" for h in route.response_headers_to_add
        ],
        "response_remove": list(route.response_headers_to_remove),
    }
    if any(headers.values()):
        out["headers"] = {k: v for k, v in headers.items() if v}
    return out


def chosen_clusters(route: rc.Route) -> list[tuple[str, int]]:
    """(cluster, weight) a route sends to; one cluster has weight 100."""
    action = route.route
    if action.HasField("weighted_clusters"):
        return [(c.name, c.weight.value) for c in action.weighted_clusters.clusters]
    if action.cluster:
        return [(action.cluster, 100)]
    return []
