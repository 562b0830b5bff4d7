"""The examples' mesh, running: control plane, apps and Envoys for the traffic tests.

`config/examples/bookinfo` is the registry (workloads on 127.0.73.x); each test
switches the routing by copying one example folder in and reloading, then waits
until the client's Envoy has ACKed that generation before sending requests.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

from tests.e2e.harness import ControlPlaneThread, Envoy, free_port, get, wait_acked
from tests.traffic.apps import VersionApp
from xds_server.bootstrap import BootstrapOptions, sidecar_bootstrap
from xds_server.galley.model import WorkloadEntry

EXAMPLES = Path(__file__).resolve().parents[2] / "config" / "examples"
REGISTRY = EXAMPLES / "bookinfo"
EXAMPLES_NET = "127.0.73"  # the block bookinfo/workloads.yaml uses
# The examples bind fixed ports (9080, 8000, ...): each test run moves them to a block
# of its own, so two runs at once (or another module's block) never collide.
NET = f"127.{random.randint(100, 254)}.{random.randint(0, 255)}"
CLIENT = f"{NET}.10:15001"  # productpage's sidecar, an HTTP proxy


class Mesh:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = root / "config"
        self.config.mkdir()
        _copy(REGISTRY, self.config / "bookinfo")
        (self.config / "routing").mkdir()
        self.plane = ControlPlaneThread(self.config, watch=False).start()
        self.envoys: dict[str, Envoy] = {}
        self.apps: dict[str, object] = {}  # name -> VersionApp / TcpEchoApp

    def app(self, name: str) -> VersionApp:
        found = self.apps[name]
        assert isinstance(found, VersionApp)
        return found

    def stop(self) -> None:
        for envoy in self.envoys.values():
            envoy.stop()
        self.plane.stop()

    # --- config -----------------------------------------------------------------

    def use(self, *examples: str, extra: dict[str, str] | None = None) -> int:
        """Route with these example folders (plus extra files); returns the generation."""
        routing = self.config / "routing"
        shutil.rmtree(routing)
        routing.mkdir()
        for example in examples:
            _copy(EXAMPLES / example, routing / example)
        for name, text in (extra or {}).items():
            (routing / name).write_text(text.replace(EXAMPLES_NET + ".", NET + "."))
        assert self.plane.call(self.plane.plane.reload), self.plane.plane.config_status.errors
        generation = self.plane.plane.config_status.generation
        for node_id in self.envoys:
            self.wait_synced(node_id, generation)
        return generation

    def wait_synced(self, node_id: str, generation: int) -> None:
        wait_acked(self.plane, node_id, generation)

    def nacks(self, node_id: str) -> list[str]:
        _status, body = get(self.plane.debug_url + "/debug/syncz")
        return [
            t["nack"]
            for s in json.loads(body)
            if s["proxy"] == node_id
            for t in s["types"].values()
            if t["state"] == "ERROR"
        ]

    # --- proxies ------------------------------------------------------------------

    def envoy(
        self, name: str, namespace: str = "default", *, file_flush_ms: int | None = None
    ) -> Envoy:
        """Start (once) the Envoy of a WorkloadEntry of the registry (or of the config
        in use); `file_flush_ms`: how soon it writes access logs."""
        node_id = f"{name}.{namespace}"
        if node_id in self.envoys:
            return self.envoys[node_id]
        workload = _workload(name, namespace, self.config)
        bootstrap = sidecar_bootstrap(
            workload,
            BootstrapOptions(
                xds_address=self.plane.xds_address, admin_port=free_port(workload.address)
            ),
        )
        envoy = Envoy(bootstrap, self.root, node_id, file_flush_ms=file_flush_ms).start()
        self.envoys[node_id] = envoy
        envoy.wait_ready()
        self.wait_synced(node_id, self.plane.plane.config_status.generation)
        return envoy


def _copy(source: Path, target: Path) -> None:
    """Copy an example folder, moving its addresses to this run's block."""
    target.mkdir(parents=True)
    for path in sorted(source.iterdir()):
        # An example links the registry files it needs (for `pocketmesh up`); this mesh
        # has the whole registry already, and its own apps in place of up's.
        if path.is_file() and not path.is_symlink():
            text = path.read_text().replace(EXAMPLES_NET + ".", NET + ".")
            (target / path.name).write_text(text)


def _workload(name: str, namespace: str, registry: Path) -> WorkloadEntry:
    from xds_server.galley.loader import load_paths

    config = load_paths([registry]).config_or_raise()
    workload = config.workload(name, namespace)
    assert workload is not None, f"no WorkloadEntry {namespace}/{name} in {registry}"
    return workload


def mesh_settings(mesh_text: str) -> str:
    """The mesh settings document (Istio's meshConfig) with `mesh_text` as `data.mesh`."""
    indented = "".join(f"    {line}\n" for line in mesh_text.splitlines())
    return (
        "apiVersion: v1\nkind: ConfigMap\n"
        "metadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: |\n" + indented
    )


def stats(envoy: Envoy, prefix: str) -> dict[str, int]:
    return envoy.stats(prefix)


def cluster_dump(envoy: Envoy, name: str) -> dict[str, Any]:
    dump = envoy.config_dump()
    for config in dump["configs"]:
        for entry in config.get("dynamic_active_clusters", []):
            if entry["cluster"]["name"] == name:
                return dict(entry["cluster"])
    raise AssertionError(f"no cluster {name} in {envoy.name}'s config dump")
