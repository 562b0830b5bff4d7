"""Translation from the mesh model to Envoy xDS resources (Istio's pilot generators).

Pure functions over a PushContext: no I/O, no clock, deterministic (sorted) output.
Resources equal across proxies are the same Python objects, so the cache can
serialize each one once, by identity.
"""

from __future__ import annotations

from google.protobuf.message import Message

from xds_server import xds_types
from xds_server.generators.clusters import build_clusters
from xds_server.generators.endpoints import build_endpoints
from xds_server.generators.listeners import build_listeners
from xds_server.generators.mtls import secure
from xds_server.generators.push_context import Proxy, PushContext
from xds_server.generators.routes import build_routes

__all__ = ["Proxy", "PushContext", "generate"]


def generate(ctx: PushContext, proxy: Proxy) -> dict[str, dict[str, Message]]:
    """type_url -> {resource name -> message} for one proxy.

    SECRET stays empty: certificates change on their own clock, so the cache lays
    them over the snapshot (cache.overlay, identity.sds).
    """
    resources: dict[str, dict[str, Message]] = {
        xds_types.CLUSTER: build_clusters(ctx, proxy),
        xds_types.ENDPOINT: build_endpoints(ctx, proxy),
        xds_types.LISTENER: build_listeners(ctx, proxy),
        xds_types.ROUTE: build_routes(ctx, proxy),
        xds_types.SECRET: {},
    }
    secure(ctx, proxy, resources)  # mTLS and AuthorizationPolicy
    return resources
