"""A live mesh for the services & policies tests: a control plane, Envoys, tiny apps.

`LiveMesh.apply(text)` replaces the config with `text` (YAML, `{net}` standing for the
mesh's own 127.x.y block), reloads, and waits until every started Envoy has ACKed
that generation (a NACK fails at once, with Envoy's message). Envoys are started on
first use, from the WorkloadEntries of the current config. Everything binds
127.0.0.0/8 and is stopped by PID.
"""

from __future__ import annotations

import http.server
import json
import random
import socket
import socketserver
import threading
from pathlib import Path
from typing import Any

from tests.e2e.harness import ControlPlaneThread, Envoy, free_port, wait_acked
from tests.identity.mesh import start_sidecar
from xds_server.bootstrap import BootstrapOptions, sidecar_bootstrap
from xds_server.galley.loader import load_paths
from xds_server.identity import IdentityOptions


def random_net() -> str:
    """A 127.x.y block of its own, so two runs (or two modules) never collide."""
    return f"127.{random.randint(100, 254)}.{random.randint(0, 255)}"


class LiveMesh:
    def __init__(self, root: Path, *, identity: bool = False) -> None:
        self.root = root
        self.net = random_net()
        self.config = root / "config"
        self.config.mkdir(parents=True)
        (self.config / "mesh.yaml").write_text("")
        options = {"identity": IdentityOptions()} if identity else {}
        self.plane = ControlPlaneThread(self.config, watch=False, **options).start()
        self.identity = identity
        self.envoys: dict[str, Envoy] = {}

    def stop(self) -> None:
        for envoy in self.envoys.values():
            envoy.stop()
        self.plane.stop()

    def addr(self, octet: int) -> str:
        return f"{self.net}.{octet}"

    # --- config ---------------------------------------------------------------

    def apply(self, text: str) -> int:
        (self.config / "mesh.yaml").write_text(text.replace("{net}", self.net))
        status = self.plane.plane.config_status
        assert self.plane.call(self.plane.plane.reload), status.errors
        generation = self.plane.plane.config_status.generation
        for node_id in self.envoys:
            self.wait_synced(node_id, generation)
        return generation

    def wait_synced(self, node_id: str, generation: int, timeout: float = 15) -> None:
        wait_acked(self.plane, node_id, generation, timeout)

    # --- proxies -----------------------------------------------------------------

    def envoy(self, name: str, namespace: str = "default") -> Envoy:
        node_id = f"{name}.{namespace}"
        if node_id in self.envoys:
            return self.envoys[node_id]
        if self.identity:
            envoy = start_sidecar(self.plane, self.config, self.root, name)
        else:
            loaded = load_paths([self.config]).config_or_raise()
            workload = loaded.workload(name, namespace)
            assert workload is not None, f"no WorkloadEntry {node_id}"
            options = BootstrapOptions(
                xds_address=self.plane.xds_address, admin_port=free_port(workload.address)
            )
            envoy = Envoy(sidecar_bootstrap(workload, options), self.root, node_id)
        self.envoys[node_id] = envoy.start()
        envoy.wait_ready()
        self.wait_synced(node_id, self.plane.plane.config_status.generation)
        return envoy

    def restart(self, name: str, namespace: str = "default") -> Envoy:
        """A new Envoy for a workload whose bootstrap changed (its locality, labels)."""
        node_id = f"{name}.{namespace}"
        old = self.envoys.pop(node_id, None)
        if old is not None:
            old.stop()
        return self.envoy(name, namespace)


# --- apps -------------------------------------------------------------------------


class DualApp:
    """Speaks HTTP and raw TCP on one port, as a server behind an unnamed port may.

    An HTTP request gets JSON `{"app", "path", "headers", "protocol": "http"}`; any
    other first bytes are echoed back after `<name> tcp ` and the connection closed.
    """

    def __init__(self, name: str, host: str, port: int) -> None:
        self.name = name
        app = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data = self.request.recv(65536)
                if data.split(b" ", 1)[0] in (b"GET", b"POST", b"HEAD", b"PUT"):
                    app._http(self.request, data)
                else:
                    self.request.sendall(f"{app.name} tcp ".encode() + data)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server((host, port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _http(self, sock: socket.socket, data: bytes) -> None:
        while b"\r\n\r\n" not in data:
            more = sock.recv(65536)
            if not more:
                return
            data += more
        head = data.split(b"\r\n\r\n", 1)[0].decode(errors="replace").split("\r\n")
        method, path, _ = head[0].split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
        body = json.dumps(
            {
                "app": self.name,
                "path": path,
                "method": method,
                "headers": headers,
                "protocol": "http",
            }
        ).encode()
        sock.sendall(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n"
            + f"content-length: {len(body)}\r\n\r\n".encode()
            + body
        )

    def start(self) -> DualApp:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class UnixHttpApp:
    """An HTTP app on a unix domain socket (a ServiceEntry `unix://` endpoint)."""

    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self.path = path
        app_name = name

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = json.dumps({"app": app_name, "path": self.path}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def address_string(self) -> str:
                return "unix"

            def log_message(self, *args: Any) -> None:
                pass

        class Server(socketserver.ThreadingUnixStreamServer):
            daemon_threads = True

        self.server = Server(str(path), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> UnixHttpApp:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.path.unlink(missing_ok=True)
