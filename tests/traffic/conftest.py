"""The running examples mesh, shared by the end-to-end traffic tests of this package."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.harness import running
from tests.traffic.apps import TcpEchoApp, VersionApp
from tests.traffic.mesh import NET, Mesh


@pytest.fixture(scope="package")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    apps: list[VersionApp | TcpEchoApp] = [
        VersionApp("reviews-v1", f"{NET}.11", 9080),
        VersionApp("reviews-v2", f"{NET}.12", 9080),
        VersionApp("reviews-v3", f"{NET}.13", 9080),
        VersionApp("ratings-v1", f"{NET}.21", 9080),
        VersionApp("httpbin-v1", f"{NET}.31", 8000),
        VersionApp("httpbin-v2", f"{NET}.32", 8000),
        TcpEchoApp("tcp-echo-v1", f"{NET}.41", 9000),
        TcpEchoApp("tcp-echo-v2", f"{NET}.42", 9000),
    ]
    for app in apps:
        app.start()
    mesh = Mesh(tmp_path_factory.mktemp("traffic"))
    mesh.apps = {app.name: app for app in apps}
    with running(*apps, mesh):
        mesh.envoy("productpage")
        yield mesh
