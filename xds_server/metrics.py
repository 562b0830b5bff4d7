"""Prometheus metrics, served on the debug address at /metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

registry = CollectorRegistry()

connected_proxies = Gauge(
    "pocketmesh_xds_connected_streams", "Open xDS streams.", registry=registry
)
pushes = Counter(
    "pocketmesh_xds_pushes", "Discovery responses sent, by type.", ["type"], registry=registry
)
push_bytes = Counter(
    "pocketmesh_xds_push_bytes", "Bytes of discovery responses sent.", registry=registry
)
nacks = Counter(
    "pocketmesh_xds_nacks", "Responses rejected by proxies, by type.", ["type"], registry=registry
)
config_errors = Counter(
    "pocketmesh_config_errors", "Config loads rejected by validation.", registry=registry
)
snapshot_build_seconds = Histogram(
    "pocketmesh_snapshot_build_seconds",
    "Time to translate and serialize one config generation.",
    registry=registry,
)
config_generation = Gauge(
    "pocketmesh_config_generation", "Generation of the config being served.", registry=registry
)
