"""Translation from the mesh model to Envoy xDS resources (Istio's pilot generators).

Pure functions over a PushContext: no I/O, no clock, deterministic (sorted) output.
Resources equal across proxies are the same objects, so the cache can serialize
each one once, by identity; they are read-only (`generators.frozen`), so no proxy's
generator can change what another is sent. Security (upstream TLS, inbound mTLS and
RBAC) is planned per proxy first (`generators.security`) and built into the
clusters, listeners and secrets as they are made.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from xds_server import xds_types
from xds_server.generators.clusters import build_clusters
from xds_server.generators.endpoints import build_endpoints
from xds_server.generators.frozen import Frozen, FrozenMessageError
from xds_server.generators.gateway import gateway_route_configs
from xds_server.generators.listeners import build_listeners
from xds_server.generators.push_context import Proxy, PushContext
from xds_server.generators.routes import build_routes
from xds_server.generators.secrets import build_secrets
from xds_server.generators.security import UnbuildableConfig

__all__ = ["Frozen", "FrozenMessageError", "Proxy", "PushContext", "UnbuildableConfig", "generate"]


def generate(ctx: PushContext, proxy: Proxy) -> dict[str, Mapping[str, Frozen[Any]]]:
    """type_url -> {resource name -> read-only message} for one proxy.

    SECRET holds the certificates DestinationRules name; the proxy's own SVID and the
    mesh roots change on their own clock, so the cache lays them over the snapshot
    (cache.overlay, identity.sds). Raises UnbuildableConfig for a config that asks for
    security this control plane cannot give (it is refused, never built weaker).
    """
    return {
        xds_types.CLUSTER: build_clusters(ctx, proxy),
        xds_types.ENDPOINT: build_endpoints(ctx, proxy),
        xds_types.LISTENER: build_listeners(ctx, proxy),
        xds_types.ROUTE: (
            gateway_route_configs(ctx, proxy) if proxy.gateways else build_routes(ctx, proxy)
        ),
        xds_types.SECRET: build_secrets(ctx, proxy),
    }
