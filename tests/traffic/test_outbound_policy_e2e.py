"""The mesh settings' `outboundTrafficPolicy.mode`, through real Envoy: the default for
every workload whose Sidecar does not set one (productpage's Sidecar sets none).

A host outside the registry (httpbin's app, by its address) gets 404 from the sidecar
under REGISTRY_ONLY (pocketmesh's default) and is reached under ALLOW_ANY (Istio's).
"""

from __future__ import annotations

from tests.traffic.apps import request
from tests.traffic.mesh import CLIENT, NET, Mesh, cluster_dump, mesh_settings

OUTSIDE = f"http://{NET}.31:8000/outside"  # httpbin-v1's app: no ServiceEntry has it


def test_the_mesh_default_applies_where_no_sidecar_says(mesh: Mesh) -> None:
    mesh.use()
    assert request(CLIENT, OUTSIDE).status == 404  # pocketmesh's default: REGISTRY_ONLY
    mesh.use(extra={"mesh.yaml": mesh_settings("outboundTrafficPolicy: {mode: ALLOW_ANY}")})
    reply = request(CLIENT, OUTSIDE)
    assert (reply.status, reply.app, reply.data["path"]) == (200, "httpbin-v1", "/outside")
    mesh.use(extra={"mesh.yaml": mesh_settings("outboundTrafficPolicy: {mode: REGISTRY_ONLY}")})
    assert request(CLIENT, OUTSIDE).status == 404


def test_default_http_retry_policy(mesh: Mesh) -> None:
    """Routes that set no retries (here ratings' default route) get the mesh's."""
    ratings = mesh.app("ratings-v1")
    url = "http://ratings.default.svc.cluster.local:9080/flaky"

    def tries() -> tuple[int, int]:
        before = len(ratings.seen)
        ratings.fail_next = 1  # the first answer is 503, the next 200
        status = request(CLIENT, url).status
        ratings.fail_next = 0
        return status, len(ratings.seen) - before

    mesh.use()
    assert tries() == (503, 1)  # pocketmesh's default: no retries
    mesh.use(
        extra={"mesh.yaml": mesh_settings("defaultHttpRetryPolicy: {attempts: 2, retryOn: 5xx}")}
    )
    assert tries() == (200, 2)  # the 503, then one retry


def test_cluster_defaults_as_envoy_holds_them(mesh: Mesh) -> None:
    """connectTimeout, tcpKeepalive and h2UpgradePolicy reach every cluster (here
    productpage's cluster for ratings) and requests still flow (h2 to the app)."""
    mesh.use(
        extra={
            "mesh.yaml": mesh_settings(
                "connectTimeout: 3s\ntcpKeepalive: {time: 60s, probes: 3}\nh2UpgradePolicy: UPGRADE"
            )
        }
    )
    cluster = cluster_dump(
        mesh.envoy("productpage"), "outbound|9080||ratings.default.svc.cluster.local"
    )
    assert cluster["connect_timeout"] == "3s"
    keepalive = cluster["upstream_connection_options"]["tcp_keepalive"]
    assert (keepalive["keepalive_time"], keepalive["keepalive_probes"]) == (60, 3)
    options = cluster["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    assert "http2_protocol_options" in options["explicit_http_config"]
