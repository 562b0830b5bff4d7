"""Reading the HTTP connection managers inside a built Listener.

The cache checks their RDS names, the non-ADS rewrite and the benchmarks edit
them: one walk over the filter chains serves all of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

HCM_TYPE: Final = "type.googleapis.com/" + hcm_pb2.HttpConnectionManager.DESCRIPTOR.full_name


def filter_chains(listener: listener_pb2.Listener) -> list[listener_components_pb2.FilterChain]:
    """Every filter chain, the default one included."""
    return [*listener.filter_chains, listener.default_filter_chain]


def http_managers(
    chain: listener_components_pb2.FilterChain,
) -> Iterator[tuple[listener_components_pb2.Filter, hcm_pb2.HttpConnectionManager]]:
    """Each HCM of a chain, unpacked, with its filter (Pack the HCM back after editing)."""
    for f in chain.filters:
        if f.typed_config.type_url == HCM_TYPE:
            yield f, hcm_pb2.HttpConnectionManager.FromString(f.typed_config.value)


def rds_names(listener: listener_pb2.Listener) -> list[str]:
    """The route configurations the listener asks for by RDS."""
    return [
        hcm.rds.route_config_name
        for chain in filter_chains(listener)
        for _, hcm in http_managers(chain)
        if hcm.HasField("rds")
    ]
