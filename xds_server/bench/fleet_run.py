"""One fleet scenario: a server (pocketmesh or the floor), P simulated proxies,
initial sync, then a route change and an endpoint change.

Change times run from the trigger (pocketmesh: the POST /debug/reload, so the
snapshot build is included and the debounce window is not; the floor: the
SIGUSR1) to each affected proxy's last ACK. For pocketmesh the time from the
publish (`loaded_at`) is reported too.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

from xds_server.bench import mesh
from xds_server.bench.fleet import Fleet, ProxySummary
from xds_server.bench.processes import (
    FloorProcess,
    ServerProcess,
    cpu_seconds,
    memory_mb,
)
from xds_server.bench.stats import ProgressBar, spread

CHANGES = ("route", "endpoint")


def write_generations(spec: mesh.MeshSpec, workdir: Path) -> tuple[list[Path], dict[str, str]]:
    """gen1: the mesh; gen2: + the route change; gen3: + the endpoint change.
    Also returns what each change does (change -> description)."""
    dirs = [workdir / f"gen{i}" for i in (1, 2, 3)]
    mesh.write(spec, dirs[0])
    shutil.copytree(dirs[0], dirs[1])
    what = {"route": mesh.route_change(spec, dirs[1])}
    shutil.copytree(dirs[1], dirs[2])
    what["endpoint"] = mesh.endpoint_change(spec, dirs[2])
    return dirs, what


def run(
    spec: mesh.MeshSpec,
    *,
    delta: bool,
    floor: bool,
    workdir: Path,
    workers: int = 2,
    changes: bool = True,
    progress: ProgressBar | None = None,
    timeout: float = 300.0,
    quiet: float = 0.5,
) -> dict[str, Any]:
    """Every figure of one scenario, as a JSON-able dict."""
    bar = progress or ProgressBar(enabled=False)
    server_name = "floor" if floor else "pocketmesh"
    proto = "delta" if delta else "sotw"
    workdir.mkdir(parents=True, exist_ok=True)
    dirs, what = write_generations(spec, workdir / "config")
    live = workdir / "live"
    shutil.copytree(dirs[0], live)
    bar.step(f"{server_name} {proto}: starting the server")
    server: ServerProcess | FloorProcess
    if floor:
        server = FloorProcess(dirs, workdir / "floor.log")
    else:
        server = ServerProcess(live, workdir / "pocketmesh.log").start()
    fleet = Fleet(server.target, mesh.proxy_ids(spec), delta=delta, workers=workers)
    out: dict[str, Any] = {"server": server_name, "protocol": proto, "proxies": spec.proxies}
    try:
        cpu0 = cpu_seconds(server.pid)
        out["server_rss_mb_before_connect"] = round(memory_mb(server.pid)[0], 1)
        bar.step(f"{server_name} {proto}: initial sync of {spec.proxies} proxies")
        t0 = fleet.start()
        rows = fleet.wait_synced(timeout=timeout, progress=bar)
        cpu1 = cpu_seconds(server.pid)
        out["initial"] = {
            "all_acked_s": round(max(r.synced_at for r in rows) - t0, 4),
            "per_proxy_s": spread([r.synced_at - t0 for r in rows]),
            "server_cpu_s": round(cpu1 - cpu0, 3),
            "server_cpu_per_proxy_ms": round((cpu1 - cpu0) / len(rows) * 1000, 3),
            "bytes_per_proxy": round(sum(r.bytes_received for r in rows) / len(rows)),
            "bytes_total": sum(r.bytes_received for r in rows),
            # Streams the proxies had to redial (connection setup failed under load).
            "reconnects": sum(r.reconnects for r in rows),
            # Why (each proxy's last failed stream, status code and details): proxy count.
            "redial_reasons": dict(
                Counter(r.error.split(" [", 1)[0] for r in rows if r.error).most_common()
            ),
        }
        if changes:
            for number, change in enumerate(CHANGES, start=2):
                out[change] = {
                    "what": what[change],
                    **_change(spec, server, fleet, change, number, dirs, live, bar, quiet),
                }
        rss, peak = memory_mb(server.pid)
        out["server_rss_mb"] = round(rss, 1)
        out["server_peak_rss_mb"] = round(peak, 1)
        out["server_cpu_total_s"] = round(cpu_seconds(server.pid), 2)
    finally:
        fleet.stop()
        server.stop()
        bar.clear()
    return out


def _change(
    spec: mesh.MeshSpec,
    server: ServerProcess | FloorProcess,
    fleet: Fleet,
    change: str,
    number: int,
    dirs: list[Path],
    live: Path,
    bar: ProgressBar,
    quiet: float,
) -> dict[str, Any]:
    before_rows = {r.node_id: r for r in fleet.status()}
    before = {n: r.acks for n, r in before_rows.items()}
    expected = set(mesh.affected_proxies(spec))
    cpu0 = cpu_seconds(server.pid)
    bar.step(f"{change} change: waiting for {len(expected)} proxies")
    published = 0.0
    if isinstance(server, ServerProcess):
        shutil.rmtree(live)
        shutil.copytree(dirs[number - 1], live)
        t0 = time.time()
        result = server.reload()
        if not result.get("ok"):
            raise RuntimeError(f"reload rejected: {result.get('errors')}")
        published = float(result["loaded_at"])
    else:
        t0 = time.time()
        os.kill(server.pid, signal.SIGUSR1)
    moved = fleet.wait_converged(before, expected, timeout=120, quiet=quiet, progress=bar)
    cpu1 = cpu_seconds(server.pid)
    figures: dict[str, Any] = {
        "proxies_updated": len(moved),
        "proxies_expected": len(expected),
        "from_trigger_s": spread([r.last_ack_at - t0 for r in moved]),
        "server_cpu_s": round(cpu1 - cpu0, 3),
        "bytes_per_updated_proxy": _bytes_per(moved, before_rows),
    }
    if published:
        figures["build_and_publish_s"] = round(published - t0, 4)
        figures["from_publish_s"] = spread([r.last_ack_at - published for r in moved])
    return figures


def _bytes_per(moved: list[ProxySummary], before: dict[str, ProxySummary]) -> int:
    if not moved:
        return 0
    sent = sum(r.bytes_received - before[r.node_id].bytes_received for r in moved)
    return round(sent / len(moved))
