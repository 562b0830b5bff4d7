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
svids_reused = Counter(
    "pocketmesh_svids_reused",
    "Workload certificates kept on disk and handed out again after a restart.",
    registry=registry,
)
trusted_roots = Gauge(
    "pocketmesh_trusted_roots", "Roots in the trust bundle (ROOTCA).", registry=registry
)
proxy_auth_refusals = Counter(
    "pocketmesh_proxy_auth_refusals",
    "xDS streams refused, by reason: no_token, wrong_token (not the node's own), "
    "no_certificate, wrong_certificate (a client certificate for another node id), "
    "wrong_address (not the WorkloadEntry's address).",
    ["reason"],
    registry=registry,
)
sds_refusals = Counter(
    "pocketmesh_sds_refusals",
    "Secret requests not served, by reason: no_workload (the node names no "
    "WorkloadEntry), not_owned (a secret name that is not the proxy's own).",
    ["reason"],
    registry=registry,
)

# Every reason shows from the start (at 0), so a dashboard or a test reading the counter
# finds it before the first refusal.
for _reason in ("no_token", "wrong_token", "no_certificate", "wrong_certificate", "wrong_address"):
    proxy_auth_refusals.labels(_reason)
for _reason in ("no_workload", "not_owned"):
    sds_refusals.labels(_reason)
