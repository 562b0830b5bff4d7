"""`connectionPool` (Istio's ConnectionPoolSettings): circuit breakers, timeouts, keepalive.

Used by DestinationRule traffic policies. Validation as Istio's validateConnectionPool.
"""

from __future__ import annotations

from ..fields import Shape, obj, shape, supported
from ..model_traffic import ConnectionPool, TcpKeepalive
from ..schema import DocChecker, Located
from .traffic_common import boolean, duration_ms

MAX_INT32 = 2**31 - 1
MAX_UINT32 = 2**32 - 1
H2_UPGRADE = frozenset({"DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"})

KEEPALIVE: Shape = shape(
    probes=supported("TCP_KEEPCNT"),
    time=supported("TCP_KEEPIDLE, whole seconds"),
    interval=supported("TCP_KEEPINTVL, whole seconds"),
)
TCP: Shape = shape(
    maxConnections=supported(),
    connectTimeout=supported(),
    tcpKeepalive=obj(KEEPALIVE, "SO_KEEPALIVE on upstream connections"),
    maxConnectionDuration=supported(
        "HTTP ports: the upstream connection's lifetime; TCP ports: the downstream one's"
    ),
    idleTimeout=supported("HTTP ports: unless http.idleTimeout is set; TCP ports: tcp_proxy's"),
)
HTTP2_KEEPALIVE: Shape = shape(
    interval=supported("HTTP/2 PING interval"), timeout=supported("PING answer timeout")
)
HTTP: Shape = shape(
    http1MaxPendingRequests=supported(),
    http2MaxRequests=supported(),
    maxRequestsPerConnection=supported("HTTP ports"),
    maxRetries=supported(),
    idleTimeout=supported("HTTP ports"),
    h2UpgradePolicy=supported(
        "UPGRADE: the upstream speaks HTTP/2 (even on an HTTP port); DO_NOT_UPGRADE, DEFAULT: "
        "as the port's protocol says"
    ),
    useClientProtocol=supported("the upstream speaks what the client spoke (HTTP/1.1 or 2)"),
    maxConcurrentStreams=supported("HTTP/2 upstreams"),
    http2KeepAlive=obj(HTTP2_KEEPALIVE, "HTTP/2 upstreams: PING keepalive"),
)
SHAPE: Shape = shape(tcp=obj(TCP), http=obj(HTTP))


def parse_connection_pool(ck: DocChecker, at: Located) -> ConnectionPool | None:
    fields = ck.fields(at, SHAPE)
    if fields is None:
        return None
    if not fields:
        ck.error(at, "connection pool must have at least one field")
        return None
    values: dict[str, object] = {}
    if (tcp_at := fields.get("tcp")) is not None:
        tcp = ck.fields(tcp_at, TCP) or {}
        if "maxConnections" in tcp:
            values["max_connections"] = ck.integer(tcp["maxConnections"], 1, MAX_INT32)
        if "connectTimeout" in tcp:
            values["connect_timeout_ms"] = duration_ms(ck, tcp["connectTimeout"])
        if "tcpKeepalive" in tcp:
            values["tcp_keepalive"] = parse_keepalive(ck, tcp["tcpKeepalive"])
        if "maxConnectionDuration" in tcp:
            values["max_connection_duration_ms"] = duration_ms(ck, tcp["maxConnectionDuration"])
        if "idleTimeout" in tcp:
            # Istio: 0s turns the idle timeout off.
            values["tcp_idle_timeout_ms"] = duration_ms(ck, tcp["idleTimeout"], minimum_ms=0)
    if (http_at := fields.get("http")) is not None:
        http = ck.fields(http_at, HTTP) or {}
        for key, attr in (
            ("http1MaxPendingRequests", "http1_max_pending_requests"),
            ("http2MaxRequests", "http2_max_requests"),
            ("maxRequestsPerConnection", "max_requests_per_connection"),
            ("maxRetries", "max_retries"),
            ("maxConcurrentStreams", "max_concurrent_streams"),
        ):
            if key in http:
                values[attr] = ck.integer(http[key], 1, MAX_INT32)
        if "idleTimeout" in http:
            values["idle_timeout_ms"] = duration_ms(ck, http["idleTimeout"])
        if "h2UpgradePolicy" in http:
            values["h2_upgrade_policy"] = ck.enum(http["h2UpgradePolicy"], H2_UPGRADE) or "DEFAULT"
        if "useClientProtocol" in http:
            values["use_client_protocol"] = bool(boolean(ck, http["useClientProtocol"]))
        if values.get("h2_upgrade_policy") == "UPGRADE" and values.get("use_client_protocol"):
            ck.error(
                http["useClientProtocol"],
                "use client protocol must not be true when h2UpgradePolicy is UPGRADE",
            )
        if (keepalive_at := http.get("http2KeepAlive")) is not None:
            keepalive = ck.fields(keepalive_at, HTTP2_KEEPALIVE) or {}
            for key, attr in (("interval", "interval"), ("timeout", "timeout")):
                item = ck.required(keepalive, key, keepalive_at)
                if item is not None:
                    values[f"http2_keepalive_{attr}_ms"] = duration_ms(ck, item)
    return ConnectionPool(**values)  # type: ignore[arg-type]


def parse_keepalive(ck: DocChecker, at: Located) -> TcpKeepalive | None:
    fields = ck.fields(at, KEEPALIVE)
    if fields is None:
        return None
    probes = ck.integer(fields["probes"], 1, MAX_UINT32) if "probes" in fields else None
    seconds: dict[str, int | None] = {}
    for key in ("time", "interval"):
        if key in fields:
            ms = duration_ms(ck, fields[key], minimum_ms=1000)
            if ms is not None and ms % 1000:
                # As Istio: the socket option counts whole seconds.
                ck.warn(fields[key], f"rounded down to {ms // 1000}s (whole seconds, as Istio)")
            seconds[key] = None if ms is None else ms // 1000
    return TcpKeepalive(probes, seconds.get("time"), seconds.get("interval"))
