"""Identity metrics, on the control plane's registry (served at /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from xds_server.metrics import registry

svids_issued = Counter(
    "pocketmesh_svids_issued",
    "Workload certificates issued, by reason (first, renewal, root).",
    ["reason"],
    registry=registry,
)
trusted_roots = Gauge(
    "pocketmesh_trusted_roots", "Roots in the trust bundle (ROOTCA).", registry=registry
)
proxy_auth_refusals = Counter(
    "pocketmesh_proxy_auth_refusals",
    "xDS streams refused: missing token or one not the node's own.",
    registry=registry,
)
