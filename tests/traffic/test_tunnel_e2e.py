"""DestinationRule `trafficPolicy.tunnel`, through real Envoy: a TCP route to a forward
proxy carries each connection inside an HTTP/1.1 CONNECT (or POST) to the target.

Istio's shape: the app opens a TCP connection for `external.app.com:9999`; a
VirtualService's `tcp` route sends it to the forward proxy `forward-proxy.corp.net:3128`,
whose DestinationRule says to tunnel to `external.app.com:9999`. The forward proxy is a
small server here: it answers the CONNECT (or POST) and then echoes, naming the request
it got, so the test sees exactly what Envoy sent.
"""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator

import pytest

from tests.traffic.mesh import CLIENT, NET, Mesh

PROXY_ADDRESS = f"{NET}.63"
SIDECAR = CLIENT.split(":")[0]  # productpage's sidecar: the app's TCP listeners are here
TARGET_PORT = 9999


class ForwardProxy(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: str) -> None:
        super().__init__((address, 0), _Handler)
        self.port = int(self.server_address[1])


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        request_line = self.rfile.readline().decode().strip()
        headers = {}
        while (line := self.rfile.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        self.wfile.write(b"HTTP/1.1 200 OK\r\n\r\n")
        if headers.get("transfer-encoding") == "chunked":  # POST: the bytes in chunks
            self.rfile.readline()  # the chunk's size
        data = self.rfile.readline().decode().strip()
        host = headers.get("host", "")
        self.wfile.write(f"{request_line} | host {host} | {data}\n".encode())


@pytest.fixture(scope="module")
def forward_proxy() -> Iterator[ForwardProxy]:
    server = ForwardProxy(PROXY_ADDRESS)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def config(proxy: ForwardProxy, tunnel: str) -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: external-app}}
spec:
  hosts: [external.app.com]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: {TARGET_PORT}, name: tcp, protocol: TCP}}]
  endpoints: [{{address: 127.0.0.9}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: forward-proxy}}
spec:
  hosts: [forward-proxy.corp.net]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: 3128, name: http-proxy, protocol: HTTP}}]
  endpoints: [{{address: {PROXY_ADDRESS}, ports: {{http-proxy: {proxy.port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: external-app}}
spec:
  hosts: [external.app.com]
  tcp:
  - match: [{{port: {TARGET_PORT}}}]
    route: [{{destination: {{host: forward-proxy.corp.net, port: {{number: 3128}}}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: forward-proxy}}
spec:
  host: forward-proxy.corp.net
  trafficPolicy:
    tunnel: {tunnel}
"""


def send(line: str) -> str:
    with socket.create_connection((SIDECAR, TARGET_PORT), timeout=5) as conn:
        conn.sendall(line.encode() + b"\n")
        return conn.makefile().readline().strip()


def test_connect_and_post_tunnels(mesh: Mesh, forward_proxy: ForwardProxy) -> None:
    mesh.use(
        extra={
            "tunnel.yaml": config(forward_proxy, "{targetHost: external.app.com, targetPort: 9999}")
        }
    )
    assert send("hello") == (
        "CONNECT external.app.com:9999 HTTP/1.1 | host external.app.com:9999 | hello"
    )
    mesh.use(
        extra={
            "tunnel.yaml": config(
                forward_proxy, "{protocol: POST, targetHost: external.app.com, targetPort: 9999}"
            )
        }
    )
    assert send("again") == "POST / HTTP/1.1 | host external.app.com:9999 | again"
