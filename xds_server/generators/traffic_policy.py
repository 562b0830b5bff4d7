"""DestinationRule trafficPolicy -> Envoy Cluster settings (Istio's cluster builder).

Load balancing, circuit breakers (connectionPool) and outlier detection. TLS is
built by the cluster generator from the proxy's security plan (generators.security).
Consistent hashing needs a hash policy on the routes too: `hash_policies` gives it
to the route generator.
"""

from __future__ import annotations

from typing import TypeAlias

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.common.matcher.v3 import matcher_pb2
from envoy.config.core.v3 import protocol_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import any_pb2, duration_pb2

from xds_server.galley.model_mesh import MeshSettings
from xds_server.galley.model_traffic import (
    ConnectionPool,
    ConsistentHash,
    OutlierDetection,
    TcpKeepalive,
    TrafficPolicy,
)

Cluster: TypeAlias = cluster_pb2.Cluster
HashPolicy: TypeAlias = route_components_pb2.RouteAction.HashPolicy

HTTP_PROTOCOL_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_SIMPLE = {
    "ROUND_ROBIN": Cluster.ROUND_ROBIN,
    "LEAST_REQUEST": Cluster.LEAST_REQUEST,
    "RANDOM": Cluster.RANDOM,
}
# Istio's default minimum ring size.
DEFAULT_RING_SIZE = 1024


def duration(ms: int) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)


def apply_traffic_policy(cluster: Cluster, policy: TrafficPolicy | None, http: bool) -> None:
    """Change `cluster` in place to follow `policy` (None: leave Envoy's defaults)."""
    if policy is None:
        return
    _load_balancer(cluster, policy)
    pool = policy.connection_pool
    if pool is not None:
        _connection_pool(cluster, pool, http)
    if policy.retry_budget is not None:  # Istio's applyRetryBudget
        if not cluster.circuit_breakers.thresholds:
            cluster.circuit_breakers.thresholds.add()
        budget = cluster.circuit_breakers.thresholds[0].retry_budget
        budget.budget_percent.value, budget.min_retry_concurrency.value = policy.retry_budget
    outlier = policy.outlier_detection
    if outlier is not None:
        _outlier_detection(cluster, outlier, http)


def _load_balancer(cluster: Cluster, policy: TrafficPolicy) -> None:
    """Istio's applyLoadBalancer / ApplyRingHashLoadBalancer (PASSTHROUGH is a cluster
    type: the cluster generator builds it)."""
    spec = policy.consistent_hash
    if spec is not None:
        if spec.maglev_table_size is not None:
            cluster.lb_policy = Cluster.MAGLEV
            cluster.maglev_lb_config.table_size.value = spec.maglev_table_size
        else:
            cluster.lb_policy = Cluster.RING_HASH
            ring = spec.minimum_ring_size or DEFAULT_RING_SIZE
            cluster.ring_hash_lb_config.minimum_ring_size.value = ring
        return
    if policy.load_balancer in _SIMPLE:
        cluster.lb_policy = _SIMPLE[policy.load_balancer]
    warmup = policy.warmup
    if warmup is None:
        return
    slow_start = Cluster.SlowStartConfig(slow_start_window=duration(warmup.duration_ms))
    if warmup.aggression is not None or warmup.minimum_percent is not None:
        # Istio's setWarmup: both set, with its defaults for the one left out.
        slow_start.aggression.default_value = warmup.aggression or 1.0
        slow_start.aggression.runtime_key = "("  # Istio's: no runtime override
        minimum = warmup.minimum_percent
        slow_start.min_weight_percent.value = 10.0 if minimum is None else minimum
    if cluster.lb_policy == Cluster.LEAST_REQUEST:
        cluster.least_request_lb_config.slow_start_config.CopyFrom(slow_start)
    elif cluster.lb_policy == Cluster.ROUND_ROBIN:
        cluster.round_robin_lb_config.slow_start_config.CopyFrom(slow_start)


def apply_connection_pool(cluster: Cluster, pool: ConnectionPool, http: bool) -> None:
    """A connectionPool alone (a Sidecar's, on inbound clusters)."""
    _connection_pool(cluster, pool, http)


def mesh_cluster_defaults(
    cluster: Cluster, settings: MeshSettings | None, policy: TrafficPolicy | None, http: bool
) -> None:
    """The mesh settings' connectTimeout, tcpKeepalive and h2UpgradePolicy on a cluster,
    where its DestinationRule (`policy`, applied after this) does not say otherwise."""
    if settings is None:
        return
    if settings.connect_timeout_ms is not None:
        cluster.connect_timeout.CopyFrom(duration(settings.connect_timeout_ms))
    if settings.tcp_keepalive is not None:
        _tcp_keepalive(cluster, settings.tcp_keepalive)  # the rule's fields override
    pool = policy.connection_pool if policy is not None else None
    own = pool.h2_upgrade_policy if pool is not None else "DEFAULT"
    if settings.h2_upgrade and http and own == "DEFAULT" and not _is_http2(cluster):
        options = http_protocol_options(cluster)
        options.explicit_http_config.http2_protocol_options.SetInParent()
        set_http_protocol_options(cluster, options)


def _tcp_keepalive(cluster: Cluster, ka: TcpKeepalive) -> None:
    keepalive = cluster.upstream_connection_options.tcp_keepalive
    keepalive.SetInParent()  # SO_KEEPALIVE with the OS defaults, as Istio
    for value, target in (
        (ka.probes, keepalive.keepalive_probes),
        (ka.time_s, keepalive.keepalive_time),
        (ka.interval_s, keepalive.keepalive_interval),
    ):
        if value is not None:
            target.value = value


def _connection_pool(cluster: Cluster, pool: ConnectionPool, http: bool) -> None:
    thresholds = circuit_breaker_pb2.CircuitBreakers.Thresholds()
    for value, target in (
        (pool.max_connections, thresholds.max_connections),
        (pool.http1_max_pending_requests, thresholds.max_pending_requests),
        (pool.http2_max_requests, thresholds.max_requests),
        (pool.max_retries, thresholds.max_retries),
    ):
        if value is not None:
            target.value = value
    cluster.circuit_breakers.thresholds.append(thresholds)
    if pool.connect_timeout_ms is not None:
        cluster.connect_timeout.CopyFrom(duration(pool.connect_timeout_ms))
    if pool.tcp_keepalive is not None:
        _tcp_keepalive(cluster, pool.tcp_keepalive)
    if not http:
        return  # TCP ports: the tcp_proxy takes the timeouts (tcp_proxy_timeouts)
    if pool.h2_upgrade_policy == "UPGRADE" and not _is_http2(cluster):
        options = http_protocol_options(cluster)
        options.explicit_http_config.http2_protocol_options.SetInParent()
        set_http_protocol_options(cluster, options)
    if pool.use_client_protocol:
        options = http_protocol_options(cluster)
        options.use_downstream_protocol_config.SetInParent()  # replaces explicit_http_config
        set_http_protocol_options(cluster, options)
    # Istio: http.idleTimeout, else tcp.idleTimeout (0s: none).
    idle = pool.idle_timeout_ms if pool.idle_timeout_ms is not None else pool.tcp_idle_timeout_ms
    common = (pool.max_requests_per_connection, idle, pool.max_connection_duration_ms)
    if any(v is not None for v in common):
        options = http_protocol_options(cluster)
        common_options = options.common_http_protocol_options
        if pool.max_requests_per_connection:
            common_options.max_requests_per_connection.value = pool.max_requests_per_connection
        if idle is not None:
            common_options.idle_timeout.CopyFrom(duration(idle))
        if pool.max_connection_duration_ms is not None:
            common_options.max_connection_duration.CopyFrom(
                duration(pool.max_connection_duration_ms)
            )
        set_http_protocol_options(cluster, options)
    h2_settings = (
        pool.max_concurrent_streams,
        pool.http2_keepalive_interval_ms,
        pool.http2_keepalive_timeout_ms,
    )
    if any(v is not None for v in h2_settings) and _is_http2(cluster):
        options = http_protocol_options(cluster)
        h2 = options.explicit_http_config.http2_protocol_options
        if pool.max_concurrent_streams is not None:
            h2.max_concurrent_streams.value = pool.max_concurrent_streams
        if pool.http2_keepalive_interval_ms is not None:
            h2.connection_keepalive.interval.CopyFrom(duration(pool.http2_keepalive_interval_ms))
        if pool.http2_keepalive_timeout_ms is not None:
            h2.connection_keepalive.timeout.CopyFrom(duration(pool.http2_keepalive_timeout_ms))
        set_http_protocol_options(cluster, options)


def _outlier_detection(cluster: Cluster, outlier: OutlierDetection, http: bool) -> None:
    """Istio's applyOutlierDetection: success-rate ejection off, panic threshold from
    minHealthPercent (0 unless set: Envoy would otherwise route to ejected hosts)."""
    detection = outlier_detection_pb2.OutlierDetection()
    detection.enforcing_success_rate.value = 0
    if outlier.consecutive_5xx_errors is not None:
        # Istio: consecutive5xxErrors 0 turns the 5xx check off.
        detection.consecutive_5xx.value = outlier.consecutive_5xx_errors
        enforcing = 100 if outlier.consecutive_5xx_errors else 0
        detection.enforcing_consecutive_5xx.value = enforcing
    if outlier.consecutive_gateway_errors is not None:
        detection.consecutive_gateway_failure.value = outlier.consecutive_gateway_errors
        enforcing = 100 if outlier.consecutive_gateway_errors else 0
        detection.enforcing_consecutive_gateway_failure.value = enforcing
    if outlier.interval_ms is not None:
        detection.interval.CopyFrom(duration(outlier.interval_ms))
    if outlier.base_ejection_time_ms is not None:
        detection.base_ejection_time.CopyFrom(duration(outlier.base_ejection_time_ms))
    if outlier.max_ejection_percent is not None:
        detection.max_ejection_percent.value = outlier.max_ejection_percent
    if outlier.split_external_local_origin_errors:
        detection.split_external_local_origin_errors = True
        if outlier.consecutive_local_origin_failures:
            detection.consecutive_local_origin_failure.value = (
                outlier.consecutive_local_origin_failures
            )
            detection.enforcing_consecutive_local_origin_failure.value = 100
        detection.enforcing_local_origin_success_rate.value = 0
    cluster.common_lb_config.healthy_panic_threshold.value = outlier.min_health_percent or 0
    cluster.outlier_detection.CopyFrom(detection)
    if outlier.http_error_codes and http:
        options = http_protocol_options(cluster)
        options.outlier_detection.error_matcher.CopyFrom(_status_matcher(outlier.http_error_codes))
        set_http_protocol_options(cluster, options)


def _status_matcher(codes: tuple[int, ...]) -> matcher_pb2.MatchPredicate:
    rules = [
        matcher_pb2.MatchPredicate(
            http_response_headers_match=matcher_pb2.HttpHeadersMatch(
                headers=[
                    route_components_pb2.HeaderMatcher(
                        name=":status", string_match=string_pb2.StringMatcher(exact=str(code))
                    )
                ]
            )
        )
        for code in codes
    ]
    if len(rules) == 1:
        return rules[0]
    return matcher_pb2.MatchPredicate(or_match=matcher_pb2.MatchPredicate.MatchSet(rules=rules))


def tcp_proxy_timeouts(proxy: tcp_proxy_pb2.TcpProxy, policy: TrafficPolicy | None) -> None:
    """DestinationRule tcp.idleTimeout and maxConnectionDuration on a TCP port's proxy
    (Istio's buildOutboundNetworkFiltersWithSingleDestination)."""
    pool = policy.connection_pool if policy is not None else None
    if pool is None:
        return
    if pool.tcp_idle_timeout_ms is not None:
        proxy.idle_timeout.CopyFrom(duration(pool.tcp_idle_timeout_ms))
    if pool.max_connection_duration_ms is not None:
        proxy.max_downstream_connection_duration.CopyFrom(duration(pool.max_connection_duration_ms))


def tunnel(proxy: tcp_proxy_pb2.TcpProxy, policy: TrafficPolicy | None) -> None:
    """DestinationRule `tunnel` of the one destination: the connection goes inside an
    HTTP CONNECT (or POST) to the target (Istio's tunnelingconfig.Apply)."""
    if policy is None or policy.tunnel is None:
        return
    protocol, host, port = policy.tunnel
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    proxy.tunneling_config.CopyFrom(
        tcp_proxy_pb2.TcpProxy.TunnelingConfig(hostname=target, use_post=protocol == "POST")
    )


def _is_http2(cluster: Cluster) -> bool:
    existing = cluster.typed_extension_protocol_options.get(HTTP_PROTOCOL_OPTIONS_KEY)
    if existing is None:
        return False
    options = http_protocol_options_pb2.HttpProtocolOptions()
    existing.Unpack(options)
    return options.explicit_http_config.HasField("http2_protocol_options")


def set_http_protocol_options(
    cluster: Cluster, options: http_protocol_options_pb2.HttpProtocolOptions
) -> None:
    """Give the cluster `options` (replacing any it had: merge with http_protocol_options)."""
    packed = any_pb2.Any()
    packed.Pack(options)
    cluster.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS_KEY].CopyFrom(packed)


def http_protocol_options(cluster: Cluster) -> http_protocol_options_pb2.HttpProtocolOptions:
    """The cluster's HttpProtocolOptions so far (it may already choose HTTP/2), to merge
    into; pack it back under HTTP_PROTOCOL_OPTIONS_KEY."""
    options = http_protocol_options_pb2.HttpProtocolOptions()
    existing = cluster.typed_extension_protocol_options.get(HTTP_PROTOCOL_OPTIONS_KEY)
    if existing is not None:
        existing.Unpack(options)
    else:
        # The upstream protocol is a required choice; HTTP/1.1 is what the cluster used.
        options.explicit_http_config.http_protocol_options.CopyFrom(
            protocol_pb2.Http1ProtocolOptions()
        )
    return options


def hash_policies(policy: TrafficPolicy | None) -> list[HashPolicy]:
    """The route-side half of consistentHash: what to hash each request on."""
    if policy is None or policy.consistent_hash is None:
        return []
    return [_hash_policy(policy.consistent_hash)]


def _hash_policy(spec: ConsistentHash) -> HashPolicy:
    if spec.http_header_name:
        return HashPolicy(header=HashPolicy.Header(header_name=spec.http_header_name))
    if spec.use_source_ip:
        return HashPolicy(connection_properties=HashPolicy.ConnectionProperties(source_ip=True))
    if spec.http_query_parameter_name:
        return HashPolicy(
            query_parameter=HashPolicy.QueryParameter(name=spec.http_query_parameter_name)
        )
    cookie = HashPolicy.Cookie(name=spec.http_cookie_name, path=spec.http_cookie_path)
    if spec.http_cookie_ttl_ms:
        cookie.ttl.CopyFrom(duration(spec.http_cookie_ttl_ms))
    for name, value in spec.http_cookie_attributes:
        cookie.attributes.append(HashPolicy.CookieAttribute(name=name, value=value))
    return HashPolicy(cookie=cookie)
