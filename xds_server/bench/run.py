"""A whole benchmark run: fleet scenarios (pocketmesh, then the floor, per protocol),
real-Envoy ready times, and the figures gathered into one JSON-able dict."""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from xds_server.bench import envoy_run, fleet_run
from xds_server.bench.mesh import MeshSpec
from xds_server.bench.report import machine
from xds_server.bench.stats import ProgressBar

PRESETS: dict[str, MeshSpec] = {
    # The targets: Istio's published 1,000 services / 2,000 sidecars shape.
    "scoped": MeshSpec(services=1000, endpoints=2, namespaces=100, proxies=2000, sidecars=True),
    "unscoped": MeshSpec(services=1000, endpoints=2, namespaces=100, proxies=200, sidecars=False),
    # Seconds, for the test that keeps the harness from rotting.
    "tiny": MeshSpec(services=6, endpoints=2, namespaces=2, proxies=8, sidecars=True),
}


@dataclass
class BenchOptions:
    meshes: list[MeshSpec]
    protocols: tuple[str, ...] = ("sotw", "delta")
    floor: bool = True
    changes: bool = True
    workers: int = 2
    envoy_clusters: tuple[int, ...] = (100, 1000, 5000)
    envoy_runs: int = 3
    workdir: Path | None = None
    progress: bool | None = None  # None: when stderr is a terminal
    timeout: float = 300.0
    quiet: float = 0.5  # no new ACK for this long (after all expected moved): converged
    notes: list[str] = field(default_factory=list)


def run(options: BenchOptions) -> dict[str, Any]:
    bar = ProgressBar(options.progress)
    owned = None
    if options.workdir is None:
        owned = tempfile.TemporaryDirectory(prefix="pocketmesh-bench-")
        workdir = Path(owned.name)
    else:
        workdir = options.workdir
    results: dict[str, Any] = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "notes": [
            *options.notes,
            "route change = one VirtualService edited (svc-0: timeout 10s -> 5s, retries "
            "added): an RDS-only change for the proxies that see svc-0",
            "change times run from the trigger (POST /debug/reload: includes the rebuild, "
            "excludes the debounce window) to each affected proxy's last ACK",
        ],
        "fleet": [],
        "envoy": [],
    }
    try:
        for n, spec in enumerate(options.meshes):
            for proto in options.protocols:
                group: dict[str, Any] = {
                    "mesh": spec.label(),
                    "spec": asdict(spec),
                    "protocol": proto,
                }
                servers = ["pocketmesh", "floor"] if options.floor else ["pocketmesh"]
                for server in servers:
                    group[server] = fleet_run.run(
                        spec,
                        delta=proto == "delta",
                        floor=server == "floor",
                        workdir=workdir / f"mesh{n}-{proto}-{server}",
                        workers=options.workers,
                        changes=options.changes,
                        progress=bar,
                        timeout=options.timeout,
                        quiet=options.quiet,
                    )
                results["fleet"].append(group)
        for clusters in options.envoy_clusters:
            bar.step(f"one real Envoy, {clusters} EDS clusters")
            results["envoy"].append(
                envoy_run.run(clusters, workdir=workdir / "envoy", repeat=options.envoy_runs)
            )
            bar.clear()
    finally:
        if owned is not None:
            owned.cleanup()
    results["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return results
