"""Registers the xDS services: ADS and the per-type services, SotW and Delta.

Every method is one line: it hands the stream to the shared StreamHandler.
Responses are written as bytes already encoded from cached resources, so the
response serializer is the identity.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from envoy.service.discovery.v3.discovery_pb2 import (
    DeltaDiscoveryRequest,
    DiscoveryRequest,
)

from xds_server import xds_types
from xds_server.grpc_api.streams import StreamHandler, StreamKind

# gRPC core queues new calls until the server asks for them, and grpc.aio asks one at
# a time from the event loop. Past `max_pending_requests` (default 1,000) core rejects
# calls at random (CANCELLED, before any handler runs): with 2,000 sidecars redialing
# after a restart, 10-13 % of them failed and retried with backoff. The queue only
# holds calls, so room for a large fleet costs nothing until it is used.
SERVER_OPTIONS = (
    ("grpc.server.max_pending_requests", 65536),
    ("grpc.server.max_pending_requests_hard_limit", 65536),
)

# (gRPC service, short name, SotW method, Delta method, types served)
_SERVICES = (
    (
        "envoy.service.discovery.v3.AggregatedDiscoveryService",
        "ADS",
        "StreamAggregatedResources",
        "DeltaAggregatedResources",
        xds_types.ALL_TYPES,
    ),
    ("envoy.service.cluster.v3.ClusterDiscoveryService", "CDS", "StreamClusters",
     "DeltaClusters", frozenset({xds_types.CLUSTER})),
    ("envoy.service.endpoint.v3.EndpointDiscoveryService", "EDS", "StreamEndpoints",
     "DeltaEndpoints", frozenset({xds_types.ENDPOINT})),
    ("envoy.service.listener.v3.ListenerDiscoveryService", "LDS", "StreamListeners",
     "DeltaListeners", frozenset({xds_types.LISTENER})),
    ("envoy.service.route.v3.RouteDiscoveryService", "RDS", "StreamRoutes",
     "DeltaRoutes", frozenset({xds_types.ROUTE})),
    ("envoy.service.secret.v3.SecretDiscoveryService", "SDS", "StreamSecrets",
     "DeltaSecrets", frozenset({xds_types.SECRET})),
)  # fmt: skip


def _identity(data: bytes) -> bytes:
    return data


def _method(handler: StreamHandler, kind: StreamKind) -> grpc.RpcMethodHandler:
    async def behaviour(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> None:
        await handler.handle(kind, requests, context)

    return grpc.stream_stream_rpc_method_handler(
        behaviour,
        request_deserializer=(
            DeltaDiscoveryRequest.FromString if kind.delta else DiscoveryRequest.FromString
        ),
        response_serializer=_identity,
    )


def xds_handlers(handler: StreamHandler) -> list[grpc.GenericRpcHandler]:
    out = []
    for service, short, sotw, delta, types in _SERVICES:
        methods = {
            sotw: _method(handler, StreamKind(short, False, types)),
            delta: _method(handler, StreamKind(short, True, types)),
        }
        out.append(grpc.method_handlers_generic_handler(service, methods))
    return out
