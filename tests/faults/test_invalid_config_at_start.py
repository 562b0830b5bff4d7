"""A control plane started on an invalid config sends no proxy anything until a valid
one loads: it does not wipe reconnecting Envoys with an empty config.

The case: Envoys run on a good config; the control plane stops (a crash, a restart);
someone breaks the config meanwhile; the control plane starts again on it. Envoys
reconnect and must keep serving their last config (0 failed requests); the control
plane says it is not ready (`/ready` 503) and why (`/debug/config`, located errors);
once the config is fixed, every proxy re-syncs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.service.discovery.v3.discovery_pb2 import (
    DeltaDiscoveryRequest,
    DiscoveryRequest,
)

from tests.e2e.harness import (
    AdsStream,
    ControlPlaneThread,
    EchoApp,
    free_port,
    get,
    running,
    sidecar,
    start_all,
    wait_until,
)
from tests.identity.mesh import call, write_mesh
from tests.run.up_process import Traffic
from xds_server import xds_types
from xds_server.galley.loader import load_paths

NET = "127.0.86"
BROKEN = """
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: broken, namespace: default}
spec:
  hosts: [broken.default.svc.cluster.local]
  ports: [{number: not-a-port, name: http, protocol: HTTP}]
"""


def break_config(config: Path) -> str:
    good = (config / "mesh.yaml").read_text()
    (config / "mesh.yaml").write_text(good + BROKEN)
    return good


def debug(plane: ControlPlaneThread, path: str) -> tuple[int, Any]:
    status, body = get(plane.debug_url + path)
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body


def synced(plane: ControlPlaneThread, proxies: list[str]) -> bool:
    status, streams = debug(plane, "/debug/syncz")
    generation = plane.plane.config_status.generation
    mine = {s["proxy"]: s for s in streams if s["proxy"] in proxies}
    return (
        status == 200
        and generation > 0
        and set(mine) == set(proxies)
        and all(
            s["generation"] >= generation
            and all(t["state"] == "SYNCED" for t in s["types"].values())
            for s in mine.values()
        )
    )


@pytest.fixture
def config(tmp_path: Path) -> Path:
    directory = tmp_path / "config"
    directory.mkdir()
    return directory


def test_envoys_keep_their_config_through_a_restart_on_a_broken_config(
    config: Path, tmp_path: Path
) -> None:
    ports = {"productpage": free_port(), "reviews": free_port(), "ratings": free_port()}
    write_mesh(config, NET, ports)
    loaded = load_paths([config]).config
    assert loaded is not None
    xds = f"127.0.0.1:{free_port()}"  # the same address across the restart
    first = ControlPlaneThread(config, xds_address=xds, watch=False).start()
    app = EchoApp("reviews", "127.0.0.1", ports["reviews"]).start()
    envoys = [
        sidecar(loaded.workload(name), xds, tmp_path)  # type: ignore[arg-type]
        for name in ("productpage", "reviews")
    ]
    second: ControlPlaneThread | None = None
    with running(app, *envoys):
        with running(first):
            start_all(envoys)
            proxies = [e.name for e in envoys]
            wait_until(lambda: synced(first, proxies), timeout=30, what="first sync")
            wait_until(
                lambda: call(f"{NET}.10:15001", "http://reviews:9080/")[0] == 200,
                timeout=20,
                what="traffic through the sidecars",
            )
        updates = {e.name: e.stats("cluster_manager.cds.update_success") for e in envoys}

        def request() -> tuple[int, Any]:
            return call(f"{NET}.10:15001", "http://reviews:9080/")

        def check(answer: tuple[int, Any]) -> str | None:
            status, body = answer
            return None if status == 200 and body.get("app") == "reviews" else f"{answer}"

        with Traffic(request, check) as traffic:
            # Down, the config broken, up again on it.
            good = break_config(config)
            second = ControlPlaneThread(config, xds_address=xds)  # watching the files
            with running(second.start()):
                assert not second.plane.ready
                status, body = debug(second, "/ready")
                assert status == 503, body
                status, state = debug(second, "/debug/config")
                assert state["generation"] == 0
                assert any("mesh.yaml:" in e and "broken" in e for e in state["errors"]), state

                # Every Envoy reconnects (its stream is open) and is sent nothing.
                def reconnected() -> bool:
                    return all(
                        e.stats("control_plane.connected_state")
                        == {"control_plane.connected_state": 1}
                        for e in envoys
                    )

                wait_until(reconnected, timeout=30, what="the Envoys reconnecting")
                sent = traffic.sent
                wait_until(
                    lambda: traffic.sent > sent + 50, timeout=30, what="traffic while not ready"
                )
                assert traffic.failures == [], traffic.failures[:5]
                for envoy in envoys:
                    assert envoy.stats("cluster_manager.cds.update_success") == updates[envoy.name]
                    dump = envoy.config_dump()["configs"]
                    clusters = next(c for c in dump if "ClustersConfigDump" in c["@type"])
                    assert clusters.get("dynamic_active_clusters"), envoy.name
                assert debug(second, "/debug/syncz")[1] == []  # nobody was served

                # Fixed: published, and every proxy re-syncs.
                (config / "mesh.yaml").write_text(good)
                wait_until(lambda: synced(second, proxies), timeout=30, what="re-sync")
                assert debug(second, "/ready")[0] == 200
                sent = traffic.sent
                wait_until(lambda: traffic.sent > sent + 20, timeout=30, what="traffic after")
        assert traffic.failures == [], traffic.failures[:5]
        assert traffic.sent > 70


@pytest.fixture
def broken_plane(config: Path) -> Iterator[ControlPlaneThread]:
    write_mesh(config, NET, {"productpage": 1, "reviews": 2, "ratings": 3})
    good = break_config(config)
    plane = ControlPlaneThread(config, watch=False)
    with running(plane.start()):
        (config / "mesh.yaml").write_text(good)  # for the reload, later
        yield plane


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_the_first_response_on_a_broken_start_is_the_first_valid_config(
    broken_plane: ControlPlaneThread, delta: bool
) -> None:
    """No empty response first: whatever a stream opened before the config was valid
    receives, it is that config, whole."""
    stream = AdsStream(broken_plane.xds_address, delta=delta)
    with running(stream):
        if delta:
            request: Any = DeltaDiscoveryRequest(type_url=xds_types.CLUSTER)
        else:
            request = DiscoveryRequest(type_url=xds_types.CLUSTER)
        request.node.id = "productpage.default"
        stream.send(request)
        # The stream is open, authenticated and waiting, with nothing sent.
        handler = broken_plane.plane.handler
        wait_until(lambda: handler.waiting == 1, timeout=10, what="the stream waiting")
        assert not broken_plane.plane.ready
        assert stream.responses.empty()
        assert broken_plane.call(broken_plane.plane.reload)
        first = stream.responses.get(timeout=10)
        assert not isinstance(first, grpc.RpcError), first
        assert first.type_url == xds_types.CLUSTER
        names = {r.name for r in first.resources} if delta else set()
        assert len(first.resources) >= 3, first  # the whole mesh: no empty first answer
        if delta:
            assert "outbound|9080||reviews.default.svc.cluster.local" in names, names
