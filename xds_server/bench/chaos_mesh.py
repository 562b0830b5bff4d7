"""The pieces of a chaos run: a small mTLS mesh of real Envoys, its apps, a control
plane process that can be killed, paused and restarted, and steady traffic.

The mesh: K services `s0..sK-1`, one WorkloadEntry each (its own 127.0.91.x address
and service account), each sidecar handing inbound traffic to an app on 127.0.0.1;
mTLS STRICT mesh-wide, and one request per upstream connection (a DestinationRule), so
every request is a fresh mTLS handshake and an expired certificate shows at once.
Traffic goes s0 -> s1..sK-1 and s1 -> s0 through the sidecars' outbound proxies.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ca import init_ca_dir
from xds_server.bench.envoy_run import envoy_binary
from xds_server.bench.processes import answers_ready, free_port, stop_process, wait_for
from xds_server.bootstrap import BootstrapOptions, sidecar_bootstrap
from xds_server.galley.loader import load_paths
from xds_server.identity.auth import ProxyTokens

NETWORK = "127.0.91"
PORT = 9080


def address(i: int) -> str:
    return f"{NETWORK}.{10 + i}"


def edit(config_dir: Path, number: int) -> None:
    """A live edit: s1's VirtualService sets header x-edit to `number` (an RDS change)."""
    (config_dir / "edit.yaml").write_text(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
        "metadata: {name: s1, namespace: default}\n"
        "spec:\n  hosts: [s1.default.svc.cluster.local]\n  http:\n"
        f"  - headers: {{request: {{set: {{x-edit: '{number}'}}}}}}\n"
        "    route:\n    - destination: {host: s1.default.svc.cluster.local}\n"
    )


def write_config(config_dir: Path, app_ports: list[int]) -> None:
    docs = [
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
        "metadata: {name: default, namespace: istio-system}\nspec: {mtls: {mode: STRICT}}\n"
    ]
    for i, app_port in enumerate(app_ports):
        host = f"s{i}.default.svc.cluster.local"
        docs += [
            f"apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
            f"metadata: {{name: s{i}, namespace: default}}\n"
            f"spec:\n  hosts: [{host}]\n  location: MESH_INTERNAL\n  resolution: STATIC\n"
            f"  ports: [{{number: {PORT}, name: http, protocol: HTTP}}]\n"
            f"  workloadSelector: {{labels: {{app: s{i}}}}}\n",
            f"apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n"
            f"metadata: {{name: s{i}, namespace: default}}\n"
            f"spec: {{address: {address(i)}, labels: {{app: s{i}}}, serviceAccount: s{i}}}\n",
            f"apiVersion: networking.istio.io/v1\nkind: Sidecar\n"
            f"metadata: {{name: s{i}, namespace: default}}\n"
            f"spec:\n  workloadSelector: {{labels: {{app: s{i}}}}}\n  ingress:\n"
            f"  - port: {{number: {PORT}, protocol: HTTP, name: http}}\n"
            f"    defaultEndpoint: 127.0.0.1:{app_port}\n",
            f"apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
            f"metadata: {{name: s{i}, namespace: default}}\n"
            f"spec:\n  host: {host}\n  trafficPolicy:\n"
            f"    connectionPool: {{http: {{maxRequestsPerConnection: 1}}}}\n",
        ]
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "mesh.yaml").write_text("---\n".join(docs))


class App:
    """An HTTP app answering 200 with its name."""

    def __init__(self, name: str) -> None:
        body = json.dumps({"app": name}).encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class ControlPlaneProcess:
    """`pocketmesh serve` on fixed ports (sidecars are bootstrapped to them), which a
    run kills with SIGKILL, pauses with SIGSTOP and starts again."""

    def __init__(
        self, config_dir: Path, ca_dir: Path, log_path: Path, svid_ttl: str, watch: bool = False
    ) -> None:
        self.config_dir, self.ca_dir, self.log_path = config_dir, ca_dir, log_path
        self.svid_ttl = svid_ttl
        self.watch = watch
        self.xds_port, self.debug_port = free_port(), free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def xds_address(self) -> str:
        return f"127.0.0.1:{self.xds_port}"

    @property
    def debug_url(self) -> str:
        return f"http://127.0.0.1:{self.debug_port}"

    def start(self) -> float:
        """Exec it; returns the time of the exec (wait with `wait_ready`)."""
        cmd = [
            sys.executable, "-m", "xds_server", "serve", *([] if self.watch else ["--no-watch"]),
            "--config", str(self.config_dir), "--ca-dir", str(self.ca_dir),
            "--svid-ttl", self.svid_ttl,
            "--xds-address", self.xds_address,
            "--debug-address", f"127.0.0.1:{self.debug_port}",
        ]  # fmt: skip
        self.starts += 1
        log = self.log_path.open("ab")
        log.write(f"\n=== start {self.starts} ===\n".encode())
        log.flush()
        started = time.time()
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        return started

    def wait_ready(self, timeout: float = 60) -> float:
        def ready() -> bool:
            url = self.debug_url + "/ready"
            return answers_ready(self.proc, url, "pocketmesh serve", self.log_path)

        wait_for(ready, timeout=timeout, what="pocketmesh /ready", interval=0.02)
        return time.time()

    def kill9(self) -> float:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        return time.time()

    def pause(self) -> float:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        return time.time()

    def resume(self) -> float:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)
        return time.time()

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.debug_url + path, timeout=5) as resp:
            body = resp.read()
        return json.loads(body) if path != "/metrics" else body.decode()

    def stop(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(OSError):
                self.proc.send_signal(signal.SIGCONT)  # a paused process cannot exit
            stop_process(self.proc)


class Sidecar:
    def __init__(self, bootstrap: dict[str, Any], workdir: Path, name: str) -> None:
        self.name = name
        admin = bootstrap["admin"]["address"]["socket_address"]
        self.admin = f"http://{admin['address']}:{admin['port_value']}"
        self.config_path = workdir / f"{name}.yaml"
        self.config_path.write_text(yaml.safe_dump(bootstrap))
        os.chmod(self.config_path, 0o600)  # it holds the proxy's token
        self.log_path = workdir / f"{name}.envoy.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [envoy_binary(), "-c", str(self.config_path), "--use-dynamic-base-id",
             "--disable-hot-restart", "-l", "warning", "--drain-time-s", "1"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()

    def wait_ready(self, timeout: float = 30) -> None:
        def ready() -> bool:
            url = self.admin + "/ready"
            return answers_ready(self.proc, url, f"envoy {self.name}", self.log_path)

        wait_for(ready, timeout=timeout, what=f"envoy {self.name} /ready", interval=0.05)

    def admin_json(self, path: str) -> Any:
        with urllib.request.urlopen(self.admin + path, timeout=5) as resp:
            return json.loads(resp.read())

    def serials(self) -> set[str]:
        certs = self.admin_json("/certs")
        return {
            c["serial_number"]
            for entry in certs.get("certificates", [])
            for c in entry.get("cert_chain", [])
        }

    def expirations(self) -> list[float]:
        """When each certificate it holds expires (epoch seconds)."""
        from datetime import datetime

        certs = self.admin_json("/certs")
        out = []
        for entry in certs.get("certificates", []):
            for c in entry.get("cert_chain", []):
                text = c["expiration_time"].replace("Z", "+00:00")
                out.append(datetime.fromisoformat(text).timestamp())
        return out

    def updates(self) -> int:
        """Config updates Envoy applied so far (every xDS type's update_success)."""
        with urllib.request.urlopen(self.admin + "/stats?filter=update_success", timeout=5) as r:
            text = r.read().decode()
        return sum(int(v) for _, _, v in (ln.partition(": ") for ln in text.splitlines()) if v)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)


def bootstraps(
    config_dir: Path, ca_dir: Path, xds_address: str, *, default_backoff: bool
) -> dict[str, dict[str, Any]]:
    """Each workload's bootstrap, as `pocketmesh bootstrap` writes it (token included);
    `default_backoff` removes the xDS retry policy, to measure Envoy's own backoff."""
    config = load_paths([config_dir]).config
    assert config is not None, "the chaos mesh does not load"
    tokens = ProxyTokens.load_or_create(ca_dir)
    out = {}
    for workload in config.workload_entries:
        options = BootstrapOptions(
            xds_address=xds_address,
            admin_port=free_port(workload.address),
            token=tokens.token(workload.proxy_id),
        )
        boot = sidecar_bootstrap(workload, options)
        if default_backoff:
            for service in boot["dynamic_resources"]["ads_config"]["grpc_services"]:
                service["envoy_grpc"].pop("retry_policy", None)
        out[workload.meta.name] = boot
    return out


@dataclass
class Traffic:
    """Requests back to back on each path; every outcome kept with its time."""

    paths: list[tuple[str, str]]  # (outbound proxy HOST:PORT, URL)
    pause: float = 0.01
    results: list[tuple[float, bool, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _run(self, proxy: str, url: str) -> None:
        host, port = proxy.rsplit(":", 1)
        authority = url.removeprefix("http://").split("/", 1)[0]
        while not self._stop.is_set():
            conn = http.client.HTTPConnection(host, int(port), timeout=5)
            try:
                conn.request("GET", url, headers={"Host": authority})
                resp = conn.getresponse()
                resp.read()
                ok, detail = resp.status == 200, str(resp.status)
            except OSError as err:
                ok, detail = False, type(err).__name__
            finally:
                conn.close()
            self.results.append((time.time(), ok, detail))
            time.sleep(self.pause)

    def start(self) -> Traffic:
        for proxy, url in self.paths:
            thread = threading.Thread(target=self._run, args=(proxy, url), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)

    def between(self, start: float, end: float) -> dict[str, Any]:
        window = [r for r in self.results if start <= r[0] < end]
        failed = [r for r in window if not r[1]]
        reasons: dict[str, int] = {}
        for _, _, detail in failed:
            reasons[detail] = reasons.get(detail, 0) + 1
        return {"sent": len(window), "failed": len(failed), "why": reasons}

    def first_ok_after(self, start: float) -> float | None:
        return next((t for t, ok, _ in self.results if t >= start and ok), None)

    def steady_after(self, start: float, run: int = 20) -> float | None:
        """When `run` requests in a row succeeded, after `start`."""
        streak = 0
        for t, ok, _ in self.results:
            if t < start:
                continue
            streak = streak + 1 if ok else 0
            if streak >= run:
                return t
        return None


def synced(plane: ControlPlaneProcess, proxies: set[str]) -> dict[str, dict[str, str]] | None:
    """Each proxy's acked version per type, once every proxy is connected and SYNCED."""
    try:
        streams = plane.get("/debug/syncz")
    except OSError:
        return None
    out: dict[str, dict[str, str]] = {}
    for stream in streams:
        types = stream["types"]
        if not types or any(t["state"] != "SYNCED" for t in types.values()):
            return None
        out[stream["proxy"]] = {k: t["acked_version"] for k, t in types.items()}
    want = {"cluster", "endpoint", "listener", "route", "secret"}
    if set(out) != proxies or any(set(v) != want for v in out.values()):
        return None
    return out


def wait(check: Callable[[], Any], timeout: float, what: str) -> Any:
    return wait_for(check, timeout=timeout, what=what, interval=0.02)


def new_ca(ca_dir: Path) -> None:
    init_ca_dir(ca_dir)
    ProxyTokens.load_or_create(ca_dir)
