"""`pocketmesh explain`: why a request from a workload goes where it goes.

Istio's `istioctl x describe`, answered from what the proxy is actually sent: the
listeners, route configurations, clusters and endpoints of its snapshot view, walked
with Envoy's own matching rules (`envoy_match`), and mapped back to the Istio objects
that produced them (route metadata `istio.config`, cluster names, the push context's
scope, policies and rules). The same function serves the running control plane's
`/debug/explain` and the offline `explain --config`.
"""

from __future__ import annotations

from typing import Any

from xds_server.explain import destination, workload
from xds_server.explain.inputs import MeshState, OfflineError, from_snapshot, offline
from xds_server.explain.render import render
from xds_server.explain.request import BadRequest, Request, parse_destination, parse_header
from xds_server.explain.workload import UnknownWorkload

__all__ = [
    "BadRequest",
    "MeshState",
    "OfflineError",
    "Request",
    "UnknownWorkload",
    "explain",
    "from_snapshot",
    "offline",
    "parse_destination",
    "parse_header",
    "render",
]


def explain(state: MeshState, proxy_name: str, request: Request | None = None) -> dict[str, Any]:
    """What applies to the proxy, and (with a request) where the request goes.

    Raises UnknownWorkload for a name that is no proxy of the mesh.
    """
    proxy = workload.find_proxy(state, proxy_name)
    out: dict[str, Any] = {
        "source": state.source,
        "generation": state.generation,
        "workload": workload.section(state, proxy),
    }
    if request is not None:
        out["request"] = request.to_json()
        out["destination"] = destination.section(state, proxy, request)
    return out
