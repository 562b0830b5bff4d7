"""Where the generated resources tell Envoy to fetch the resources they name."""

from __future__ import annotations

from envoy.config.core.v3 import config_source_pb2


def ads_config_source() -> config_source_pb2.ConfigSource:
    """Over the proxy's ADS stream (EDS, RDS, SDS); `cache.config_source` rewrites it
    for proxies that use the per-type services."""
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.V3,
    )
