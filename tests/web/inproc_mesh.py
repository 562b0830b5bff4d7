"""An in-process control plane on a copy of config/demo, real Envoy sidecars, and a test
seam that makes productpage's Envoy NACK its routes on demand. Shared by the web view's
NACK test, the metrics test and the CSDS test."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.e2e.harness import (
    ControlPlaneThread,
    Envoy,
    RouteNacks,
    get,
    running,
    sidecar,
    start_all,
    wait_until,
)
from tests.run.demo_mesh import demo_copy
from xds_server.galley.loader import load_paths
from xds_server.identity import IdentityOptions

TYPES = ("cluster", "listener", "endpoint", "route", "secret")


@dataclass
class Mesh:
    plane: ControlPlaneThread
    injector: RouteNacks
    envoys: dict[str, Envoy]
    config: Path

    def syncz(self) -> list[dict[str, Any]]:
        return list(json.loads(get(self.plane.debug_url + "/debug/syncz")[1]))

    def state(self, proxy: str, type_short: str) -> str | None:
        for conn in self.syncz():
            if conn["proxy"] == proxy:
                return str(conn["types"].get(type_short, {}).get("state")) or None
        return None

    def wait_synced(self, timeout: float = 20) -> None:
        wait_until(
            lambda: all(self.state(p, t) == "SYNCED" for p in self.envoys for t in TYPES),
            timeout=timeout,
            what=f"{', '.join(self.envoys)} SYNCED on every type",
        )

    def nack(self, armed: bool) -> None:
        """Arm (or disarm) the injector and reload: productpage's RDS goes ERROR (or back)."""
        self.injector.armed = armed
        self.plane.call(self.plane.plane.reload)
        want = "ERROR" if armed else "SYNCED"
        wait_until(
            lambda: self.state("productpage.default", "route") == want,
            timeout=15,
            what=f"productpage's routes {want}",
        )


@contextlib.contextmanager
def nack_mesh(
    root: Path, net: str, names: tuple[str, ...], *, delta: tuple[str, ...] = ()
) -> Iterator[Mesh]:
    config = demo_copy(root, net)
    injector = RouteNacks("productpage.default")
    identity = IdentityOptions(ca_dir=None, proxy_auth=False)
    plane = ControlPlaneThread(config, transform=injector, identity=identity).start()
    envoys: dict[str, Envoy] = {}
    with running(plane):
        loaded = load_paths([config]).config
        assert loaded is not None
        for name in names:
            workload = loaded.workload(name)
            assert workload is not None
            envoys[workload.proxy_id] = sidecar(
                workload, plane.xds_address, root, delta=name in delta
            )
        with running(*envoys.values()):
            start_all(envoys.values())
            mesh = Mesh(plane, injector, envoys, config)
            mesh.wait_synced()
            yield mesh
