"""xDS type URLs, and the order in which ADS pushes them (make-before-break)."""

from __future__ import annotations

from typing import Final

CLUSTER: Final = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT: Final = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER: Final = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE: Final = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
SECRET: Final = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

# Clusters before their endpoints, both before the listeners and routes that use them.
PUSH_ORDER: Final = (CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET)
ALL_TYPES: Final = frozenset(PUSH_ORDER)

# Types whose wildcard (empty name list) subscription means "everything for me".
WILDCARD_TYPES: Final = frozenset({CLUSTER, LISTENER})

SHORT_NAMES: Final = {
    CLUSTER: "cluster",
    ENDPOINT: "endpoint",
    LISTENER: "listener",
    ROUTE: "route",
    SECRET: "secret",
}


def short_name(type_url: str) -> str:
    return SHORT_NAMES.get(type_url, type_url.rsplit(".", 1)[-1])
