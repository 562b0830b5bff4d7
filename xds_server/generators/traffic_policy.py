"""DestinationRule trafficPolicy -> Envoy Cluster settings (Istio's cluster builder).

Load balancing, circuit breakers (connectionPool) and outlier detection. TLS is
built by the cluster generator from the proxy's security plan (generators.security).
Consistent hashing needs a hash policy on the routes too: `hash_policies` gives it
to the route generator.
"""

from __future__ import annotations

from typing import TypeAlias

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import protocol_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2

from xds_server.galley.model_traffic import ConsistentHash, TrafficPolicy

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
    if policy.consistent_hash is not None:
        cluster.lb_policy = Cluster.RING_HASH
        ring = policy.consistent_hash.minimum_ring_size or DEFAULT_RING_SIZE
        cluster.ring_hash_lb_config.minimum_ring_size.value = ring
    elif policy.load_balancer is not None:
        cluster.lb_policy = _SIMPLE[policy.load_balancer]
    pool = policy.connection_pool
    if pool is not None:
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
        if http and (pool.max_requests_per_connection or pool.idle_timeout_ms):
            _http_options(cluster, pool.max_requests_per_connection, pool.idle_timeout_ms)
    outlier = policy.outlier_detection
    if outlier is not None:
        detection = outlier_detection_pb2.OutlierDetection()
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
        if outlier.min_health_percent is not None:
            cluster.common_lb_config.healthy_panic_threshold.value = outlier.min_health_percent
        cluster.outlier_detection.CopyFrom(detection)


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


def _http_options(cluster: Cluster, per_connection: int | None, idle_ms: int | None) -> None:
    options = http_protocol_options(cluster)
    if per_connection:
        options.common_http_protocol_options.max_requests_per_connection.CopyFrom(
            wrappers_pb2.UInt32Value(value=per_connection)
        )
    if idle_ms:
        options.common_http_protocol_options.idle_timeout.CopyFrom(duration(idle_ms))
    packed = any_pb2.Any()
    packed.Pack(options)
    cluster.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS_KEY].CopyFrom(packed)


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
    cookie = HashPolicy.Cookie(name=spec.http_cookie_name, path=spec.http_cookie_path)
    if spec.http_cookie_ttl_ms:
        cookie.ttl.CopyFrom(duration(spec.http_cookie_ttl_ms))
    return HashPolicy(cookie=cookie)
