"""Resources for proxies that do not use ADS.

The generators point EDS and RDS at ADS (`ads: {}`). A bootstrap that uses the
per-type services instead needs them to name the xDS cluster's gRPC services;
Envoy does not implement the `self` config source, so the resources are
rewritten here, once per shared object, for that flavour of proxy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import config_source_pb2
from envoy.config.listener.v3 import listener_pb2
from google.protobuf.message import Message

from xds_server import xds_types
from xds_server.bootstrap import XDS_CLUSTER
from xds_server.generators.frozen import thaw
from xds_server.generators.mtls import point_sds_at
from xds_server.listener_filters import filter_chains, http_managers

ADS = "ads"
GRPC = "grpc"
DELTA_GRPC = "delta_grpc"
FLAVOURS = (ADS, GRPC, DELTA_GRPC)


def api_config_source(flavour: str) -> config_source_pb2.ConfigSource:
    source = config_source_pb2.ConfigSource(resource_api_version=config_source_pb2.V3)
    api = source.api_config_source
    api.api_type = (
        config_source_pb2.ApiConfigSource.DELTA_GRPC
        if flavour == DELTA_GRPC
        else config_source_pb2.ApiConfigSource.GRPC
    )
    api.transport_api_version = config_source_pb2.V3
    api.set_node_on_first_message_only = True
    api.grpc_services.add().envoy_grpc.cluster_name = XDS_CLUSTER
    return source


class Rewriter:
    """Rewrites `ads` config sources to the per-type services; memoized by identity."""

    def __init__(self, flavour: str) -> None:
        self.source = api_config_source(flavour)
        self._memo: dict[int, tuple[Any, Any]] = {}

    def rewrite(self, generated: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for type_url, items in generated.items():
            fix = {xds_types.CLUSTER: self._cluster, xds_types.LISTENER: self._listener}.get(
                type_url
            )
            out[type_url] = (
                {n: self._memoized(m, fix) for n, m in items.items()} if fix else {**items}
            )
        return out

    def _memoized(self, message: Any, fix: object) -> Any:
        hit = self._memo.get(id(message))
        if hit is not None and hit[0] is message:
            return hit[1]
        result = fix(message)  # type: ignore[operator]
        self._memo[id(message)] = (message, result)
        return result

    def _cluster(self, cluster: cluster_pb2.Cluster) -> Message:
        copy = thaw(cluster)
        assert isinstance(copy, cluster_pb2.Cluster)
        eds = copy.eds_cluster_config.eds_config.HasField("ads")
        if eds:
            copy.eds_cluster_config.eds_config.CopyFrom(self.source)
        sds = point_sds_at(copy.transport_socket, self.source)  # mTLS secrets (identity)
        return copy if eds or sds else cluster

    def _listener(self, listener: listener_pb2.Listener) -> Message:
        copy = thaw(listener)
        assert isinstance(copy, listener_pb2.Listener)
        changed = False
        for chain in filter_chains(copy):
            changed = point_sds_at(chain.transport_socket, self.source) or changed
            for f, hcm in http_managers(chain):
                if hcm.HasField("rds") and hcm.rds.config_source.HasField("ads"):
                    hcm.rds.config_source.CopyFrom(self.source)
                    f.typed_config.Pack(hcm)
                    changed = True
        return copy if changed else listener
