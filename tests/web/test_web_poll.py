"""Polling the proxies' admin endpoints: at the WorkloadEntry's address and the port the
proxy announced; a large mesh is sampled a round at a time, in turn; a proxy whose admin
does not answer is reported, not fatal."""

from __future__ import annotations

import asyncio
import http.client
import json
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
from envoy.config.core.v3 import base_pb2

from tests.e2e.harness import ControlPlaneThread, free_port, running
from tests.run.demo_mesh import demo_copy
from xds_server.cache.store import SnapshotCache
from xds_server.galley.loader import load_paths
from xds_server.grpc_api.connections import Connections
from xds_server.pushes import PushTracker
from xds_server.web import view as web_view

NET = "127.0.155"


class Quiet:
    def status(self) -> list[object]:
        return []


def test_each_round_polls_the_next_proxies_and_reports_unreachable_admins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = [
        textwrap.dedent(f"""\
            apiVersion: networking.istio.io/v1
            kind: WorkloadEntry
            metadata: {{name: w{i}, namespace: default}}
            spec: {{address: {NET}.{i + 1}, labels: {{app: w{i}}}}}
            """)
        for i in range(5)
    ]
    (tmp_path / "mesh.yaml").write_text("---\n".join(docs))
    config = load_paths([tmp_path]).config
    assert config is not None
    cache = SnapshotCache()
    cache.update(config)
    connections = Connections()
    tracker = PushTracker(connections)
    closed = free_port(f"{NET}.1")  # nothing listens there
    for i in range(5):
        conn = connections.add(f"w{i}.default", "ADS", False, "", Quiet())
        node = base_pb2.Node(id=conn.node_id)
        node.metadata.update({"PROXY_CONFIG": {"proxyAdminPort": closed}})
        tracker.opened(conn, node)
    plane = SimpleNamespace(cache=cache, connections=connections, pushes=tracker)
    monkeypatch.setattr(web_view, "PER_ROUND", 2)
    web = web_view.WebView(plane)  # type: ignore[arg-type]

    async def rounds() -> list[set[str]]:
        seen = []
        try:
            for _ in range(3):
                web.stats_errors.clear()
                await web.poll()
                seen.append(set(web.stats_errors))
        finally:
            await web._close_session()
        return seen

    seen = asyncio.run(rounds())
    assert seen == [
        {"w0.default", "w1.default"},
        {"w2.default", "w3.default"},
        {"w4.default", "w0.default"},
    ]
    message = web.stats_errors["w0.default"]
    assert message.startswith(f"admin http://{NET}.1:{closed} unreachable: "), message


def test_an_open_page_does_not_hold_up_the_servers_stop(tmp_path: Path) -> None:
    """/ui/events streams the state as JSON; stopping the server ends the stream."""
    config = demo_copy(tmp_path, "127.0.156")
    plane = ControlPlaneThread(config).start()
    with running(plane):
        host, port = plane.debug_url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("GET", "/ui/events")
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Type") == "text/event-stream"
        first = response.readline()
        assert first.startswith(b"data: {"), first
        state = json.loads(first[len(b"data: ") :])
        assert set(state) >= {"mesh", "proxies", "config", "pushes", "server"}
        assert len(state["mesh"]["nodes"]) == 6 and state["proxies"] == []
        plane.stop()  # the harness gives it 10 s
        response.read()  # returns once the server ends the stream (a hang: the 10 s timeout)
        assert response.isclosed()
        conn.close()
