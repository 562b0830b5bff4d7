"""Real Envoy sidecars driven by pocketmesh: SotW and Delta, reload, bad config, NACK."""

from __future__ import annotations

import json
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from google.protobuf.message import Message

from tests.e2e.harness import (
    ControlPlaneThread,
    EchoApp,
    RouteNacks,
    app_of,
    free_port,
    get,
    holds_for,
    running,
    sidecar,
    start_all,
    via_proxy,
    wait_until,
)
from xds_server import xds_types
from xds_server.galley.loader import load_paths

# Each test module gets its own 127.x block so runs never collide.
NET = "127.0.42"
REVIEWS = "outbound|9080||reviews.default.svc.cluster.local"


def write_mesh(config: Path, ports: dict[str, int]) -> None:
    (config / "services.yaml").write_text(
        textwrap.dedent("""\
        # reviews has two versions; productpage calls it through its sidecar.
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: reviews, namespace: default}
        spec:
          hosts: [reviews.default.svc.cluster.local]
          location: MESH_INTERNAL
          resolution: STATIC
          ports: [{number: 9080, name: http, protocol: HTTP}]
          workloadSelector: {labels: {app: reviews}}
        ---
        apiVersion: networking.istio.io/v1beta1
        kind: ServiceEntry
        metadata: {name: productpage, namespace: default}
        spec:
          hosts: [productpage.default.svc.cluster.local]
          location: MESH_INTERNAL
          resolution: STATIC
          ports: [{number: 9080, name: http, protocol: HTTP}]
          workloadSelector: {labels: {app: productpage}}
        """)
    )
    (config / "workloads.yaml").write_text(
        textwrap.dedent(f"""\
        apiVersion: networking.istio.io/v1alpha3
        kind: WorkloadEntry
        metadata: {{name: productpage, namespace: default}}
        spec: {{address: {NET}.10, labels: {{app: productpage}}}}
        ---
        apiVersion: networking.istio.io/v1
        kind: WorkloadEntry
        metadata: {{name: reviews-v1, namespace: default}}
        spec: {{address: {NET}.11, labels: {{app: reviews, version: v1}}}}
        ---
        apiVersion: networking.istio.io/v1
        kind: WorkloadEntry
        metadata: {{name: reviews-v2, namespace: default}}
        spec: {{address: {NET}.12, labels: {{app: reviews, version: v2}}}}
        """)
    )
    # The apps share one machine, so each sidecar forwards to its own app port.
    sidecars = []
    for version in ("v1", "v2"):
        sidecars.append(
            textwrap.dedent(f"""\
            apiVersion: networking.istio.io/v1
            kind: Sidecar
            metadata: {{name: reviews-{version}, namespace: default}}
            spec:
              workloadSelector: {{labels: {{app: reviews, version: {version}}}}}
              ingress:
              - port: {{number: 9080, protocol: HTTP, name: http}}
                defaultEndpoint: 127.0.0.1:{ports[version]}
            """)
        )
    (config / "sidecars.yaml").write_text("---\n".join(sidecars))


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("mesh")
    config = root / "config"
    config.mkdir()
    ports = {"v1": free_port(), "v2": free_port()}
    write_mesh(config, ports)
    apps = [EchoApp(f"reviews-{v}", "127.0.0.1", p).start() for v, p in ports.items()]
    injector = Injector()
    plane = ControlPlaneThread(config, transform=injector).start()
    with running(*apps, plane):
        yield {"config": config, "plane": plane, "root": root, "injector": injector}


class Injector(RouteNacks):
    """Test-only seam into the generated resources.

    `armed` corrupts every outbound route config so Envoy NACKs it (RouteNacks);
    `cluster_timeout` changes the reviews cluster so Envoy rebuilds it.
    """

    cluster_timeout = 0

    def __call__(self, node_id: str, generated: dict[str, dict[str, Message]]) -> None:
        clusters = generated.get(xds_types.CLUSTER, {})
        if self.cluster_timeout and REVIEWS in clusters:
            changed = cluster_pb2.Cluster()
            changed.CopyFrom(clusters[REVIEWS])
            changed.connect_timeout.seconds = self.cluster_timeout
            clusters[REVIEWS] = changed
        super().__call__(node_id, generated)


def start_sidecars(mesh: Any, delta: bool, *names: str, ads: bool = True) -> list[Any]:
    config = load_paths([mesh["config"]]).config
    assert config is not None
    envoys = []
    for name in names:
        workload = config.workload(name)
        assert workload is not None
        envoys.append(
            sidecar(workload, mesh["plane"].xds_address, mesh["root"], delta=delta, ads=ads)
        )
    return envoys


def ask(proxy: str, url: str) -> tuple[int, str | None]:
    status, body = via_proxy(proxy, url)
    return status, app_of(body)


def spread(proxy: str, url: str, n: int = 20) -> Counter[str | None]:
    return Counter(ask(proxy, url)[1] for _ in range(n))


def syncz(mesh: Any) -> list[dict[str, Any]]:
    return json.loads(get(mesh["plane"].debug_url + "/debug/syncz")[1])


@pytest.mark.parametrize(
    ("delta", "ads"),
    [(False, True), (True, True), (False, False), (True, False)],
    ids=["ads-sotw", "ads-delta", "per-type-sotw", "per-type-delta"],
)
def test_request_reaches_other_workload_and_edits_reroute(
    mesh: Any, delta: bool, ads: bool
) -> None:
    envoys = start_sidecars(mesh, delta, "productpage", "reviews-v1", "reviews-v2", ads=ads)
    with running(*envoys):
        start_all(envoys)
        proxy = f"{NET}.10:15001"

        # Round robin over both versions, for every name the host answers to.
        for host in ("reviews", "reviews:9080", "reviews.default:9080",
                     "reviews.default.svc.cluster.local:9080"):  # fmt: skip
            seen = wait_until(
                lambda h=host: len(s := spread(proxy, f"http://{h}/")) == 2 and s,
                timeout=10,
                what=f"both reviews versions via {host}",
            )
            assert set(seen) == {"reviews-v1", "reviews-v2"}
        assert ask(proxy, "http://nosuch.default.svc.cluster.local:9080/")[0] == 404

        # Edit a file while the Envoys run: v2 leaves the service.
        workloads = mesh["config"] / "workloads.yaml"
        original = workloads.read_text()
        try:
            workloads.write_text(original.replace("app: reviews, version: v2", "app: old"))
            wait_until(
                lambda: spread(proxy, "http://reviews:9080/") == Counter({"reviews-v1": 20}),
                timeout=10,
                what="traffic only to reviews-v1 after the edit",
            )
        finally:
            workloads.write_text(original)
        wait_until(
            lambda: len(spread(proxy, "http://reviews:9080/")) == 2,
            timeout=10,
            what="reviews-v2 back after restoring the file",
        )
        for envoy in envoys:
            assert "rejected" not in envoy.log().lower(), envoy.log()
        services = {c["service"] for c in syncz(mesh) if c["proxy"] == "productpage.default"}
        assert services == ({"ADS"} if ads else {"CDS", "EDS", "LDS", "RDS"})


def test_broken_file_keeps_traffic_flowing_and_reports_the_error(mesh: Any) -> None:
    envoys = start_sidecars(mesh, False, "productpage", "reviews-v1", "reviews-v2")
    plane = mesh["plane"]
    with running(*envoys):
        for envoy in envoys:
            envoy.start().wait_ready()
        proxy = f"{NET}.10:15001"
        wait_until(lambda: ask(proxy, "http://reviews:9080/")[0] == 200, timeout=10, what="200")
        generation = plane.plane.config_status.generation
        broken = mesh["config"] / "zz-broken.yaml"
        broken.write_text(
            textwrap.dedent("""\
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata: {name: ratings}
            spec:
              hosts: [ratings.default.svc.cluster.local]
              ports: [{number: "not-a-port", name: http, protocol: HTTP}]
            """)
        )
        try:
            errors = wait_until(
                lambda: json.loads(get(plane.debug_url + "/debug/config")[1])["errors"],
                timeout=10,
                what="the config error to be reported",
            )
            assert any("zz-broken.yaml:6" in e and "number" in e for e in errors), errors
            assert plane.plane.config_status.generation == generation
            assert ask(proxy, "http://reviews:9080/")[0] == 200
        finally:
            broken.unlink()
        wait_until(
            lambda: not json.loads(get(plane.debug_url + "/debug/config")[1])["errors"],
            timeout=10,
            what="recovery after removing the broken file",
        )
        assert ask(proxy, "http://reviews:9080/")[0] == 200


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_nack_is_recorded_not_resent_and_traffic_keeps_flowing(mesh: Any, delta: bool) -> None:
    envoys = start_sidecars(mesh, delta, "productpage", "reviews-v1", "reviews-v2")
    plane = mesh["plane"]
    injector: Injector = mesh["injector"]
    with running(*envoys):
        for envoy in envoys:
            envoy.start().wait_ready()
        proxy = f"{NET}.10:15001"
        wait_until(lambda: ask(proxy, "http://reviews:9080/")[0] == 200, timeout=10, what="200")

        def route_state() -> dict[str, Any] | None:
            for conn in syncz(mesh):
                if conn["proxy"] == "productpage.default":
                    return conn["types"].get("route")
            return None

        try:
            injector.armed = True
            assert plane.call(plane.plane.reload)
            state = wait_until(
                lambda: (s := route_state()) and s["state"] == "ERROR" and s,
                timeout=10,
                what="the NACK to be recorded",
            )
            assert state["nack"]
            rejected = envoys[0].stats("http.outbound_15001.rds.15001.update_rejected")
            # No resend loop: nothing more is sent while the config stays the same.
            pushes = envoys[0].stats("http.outbound_15001.rds.15001.update_attempt")
            plane.call(plane.plane.reload)  # same config again: must not be resent
            holds_for(
                lambda: envoys[0].stats("http.outbound_15001.rds.15001.update_attempt") == pushes,
                seconds=1.5,
            )
            assert envoys[0].stats("http.outbound_15001.rds.15001.update_rejected") == rejected
            # Envoy keeps the last good routes.
            assert ask(proxy, "http://reviews:9080/")[0] == 200
        finally:
            injector.armed = False
        plane.call(plane.plane.reload)
        wait_until(
            lambda: (s := route_state()) and s["state"] == "SYNCED",
            timeout=10,
            what="SYNCED after the fix",
        )


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_changed_cluster_gets_its_endpoints_without_the_initial_fetch_timeout(
    mesh: Any, delta: bool
) -> None:
    """Envoy rebuilds a changed EDS cluster and waits for its endpoints; unless the
    server sends them again, the cluster warms only after the 15 s initial fetch timeout."""
    envoys = start_sidecars(mesh, delta, "productpage", "reviews-v1", "reviews-v2")
    plane = mesh["plane"]
    injector: Injector = mesh["injector"]
    with running(*envoys):
        for envoy in envoys:
            envoy.start().wait_ready()
        pp = envoys[0]
        proxy = f"{NET}.10:15001"
        wait_until(lambda: ask(proxy, "http://reviews:9080/")[0] == 200, timeout=10, what="200")
        before = pp.stats("cluster_manager.cds.update_success")[
            "cluster_manager.cds.update_success"
        ]
        try:
            injector.cluster_timeout = 7
            assert plane.call(plane.plane.reload)

            def rebuilt_and_warm() -> bool:
                stats = pp.stats("cluster_manager.")
                return (
                    stats["cluster_manager.cds.update_success"] > before
                    and stats["cluster_manager.warming_clusters"] == 0
                )

            # Well inside the 15 s initial fetch timeout Envoy would otherwise wait out.
            wait_until(rebuilt_and_warm, timeout=8, what="the changed cluster to warm")
            dump = json.dumps(pp.config_dump())
            assert '"connect_timeout": "7s"' in dump
            assert ask(proxy, "http://reviews:9080/")[0] == 200
        finally:
            injector.cluster_timeout = 0
            plane.call(plane.plane.reload)
