"""The mesh settings' access log (`accessLogFile`, `accessLogEncoding`, `accessLogFormat`),
written by real Envoy.

A workload `logger` (on `<net>.71`) with its own Envoy, flushing access logs every 50 ms
(as `up` runs them, every second; Envoy's default is 10 s), calls reviews through its
sidecar; each line the sidecar writes names the request, as Istio's default line or
fields do.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.harness import wait_until
from tests.traffic.apps import request
from tests.traffic.mesh import NET, Mesh, mesh_settings

ADDRESS = f"{NET}.71"
PROXY = f"{ADDRESS}:15001"
REVIEWS = "http://reviews.default.svc.cluster.local:9080"
WORKLOAD = f"""\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: logger, namespace: default}}
spec: {{address: {ADDRESS}, labels: {{app: logger}}}}
"""


@pytest.fixture(scope="module")
def logger(mesh: Mesh, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The logger's Envoy, started; the directory its access logs go to."""
    mesh.use(extra={"logger.yaml": WORKLOAD})
    mesh.envoy("logger", file_flush_ms=50)
    return tmp_path_factory.mktemp("access")


def use(mesh: Mesh, mesh_text: str) -> None:
    generation = mesh.use(extra={"logger.yaml": WORKLOAD + "---\n" + mesh_settings(mesh_text)})
    mesh.wait_synced("logger.default", generation)


def logged(path: Path, needle: str) -> str:
    """The first line of `path` that has `needle`, once Envoy has written it."""

    def find() -> str | None:
        lines = path.read_text().splitlines() if path.exists() else []
        return next((line for line in lines if needle in line), None)

    return str(wait_until(find, timeout=10, what=f"{needle!r} in {path}"))


def test_istio_default_line(mesh: Mesh, logger: Path) -> None:
    path = logger / "text.log"
    use(mesh, f"accessLogFile: {path}")
    reply = request(PROXY, REVIEWS + "/text-line")
    assert reply.status == 200
    line = logged(path, "/text-line")
    assert '"GET /text-line HTTP/1.1" 200 - via_upstream' in line, line
    assert "outbound|9080||reviews.default.svc.cluster.local" in line, line
    assert '"reviews.default.svc.cluster.local:9080"' in line, line


def test_json_fields_of_istio_or_of_the_format(mesh: Mesh, logger: Path) -> None:
    path = logger / "json.log"
    use(mesh, f"accessLogFile: {path}\naccessLogEncoding: JSON")
    assert request(PROXY, REVIEWS + "/json-default").status == 200
    entry = json.loads(logged(path, "/json-default"))
    assert (entry["method"], entry["response_code"]) == ("GET", 200)
    assert entry["upstream_cluster"] == "outbound|9080||reviews.default.svc.cluster.local"
    custom = logger / "custom.log"
    use(
        mesh,
        f"accessLogFile: {custom}\naccessLogEncoding: JSON\n"
        'accessLogFormat: \'{"code": "%RESPONSE_CODE%", "path": "%REQ(:PATH)%"}\'',
    )
    assert request(PROXY, REVIEWS + "/json-custom").status == 200
    assert json.loads(logged(custom, "/json-custom")) == {"code": 200, "path": "/json-custom"}
    # No accessLogFile: nothing is logged any more.
    use(mesh, "")
    request(PROXY, REVIEWS + "/not-logged")
    assert "/not-logged" not in custom.read_text()
