"""DestinationRule `trafficPolicy.tunnel`, through real Envoy: a TCP route to a forward
proxy carries each connection inside an HTTP/1.1 CONNECT to the target.

Istio's shape: the app opens a TCP connection for `external.app.com:9999`; a
VirtualService's `tcp` route sends it to the forward proxy `forward-proxy.corp.net:3128`,
whose DestinationRule says to tunnel to `external.app.com:9999`. The forward proxy is a
small server here: it answers the CONNECT and then echoes, naming the request it got, so
the test sees exactly what Envoy sent. (POST is refused: with it Envoy 1.40 crashed when
the listener drained, found here.)
"""

from __future__ import annotations

import socket
import socketserver
from collections.abc import Iterator

import pytest

from tests.traffic.apps import StreamApp
from tests.traffic.mesh import CLIENT, NET, Mesh

PROXY_ADDRESS = f"{NET}.63"
SIDECAR = CLIENT.split(":")[0]  # productpage's sidecar: the app's TCP listeners are here
TARGET_PORT = 9999


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
def forward_proxy() -> Iterator[StreamApp]:
    server = StreamApp(PROXY_ADDRESS, _Handler).start()
    yield server
    server.stop()


def config(proxy: StreamApp, tunnel: str, protocol: str = "HTTP") -> str:
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
  ports: [{{number: 3128, name: http-proxy, protocol: {protocol}}}]
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


def test_connect_tunnels(mesh: Mesh, forward_proxy: StreamApp) -> None:
    target = "{targetHost: external.app.com, targetPort: 9999}"
    expected = "CONNECT external.app.com:9999 HTTP/1.1 | host external.app.com:9999 | {}"
    for protocol in ("HTTP", "TCP"):  # HTTP/1.1 either way: forward proxies speak it
        mesh.use(extra={"tunnel.yaml": config(forward_proxy, target, protocol)})
        assert send(f"via-{protocol}") == expected.format(f"via-{protocol}")
    # A config change drains the listener with the tunnel: Envoy carries on.
    mesh.use(
        extra={
            "tunnel.yaml": config(forward_proxy, "{targetHost: other.app.com, targetPort: 9999}")
        }
    )
    assert send("again") == (
        "CONNECT other.app.com:9999 HTTP/1.1 | host other.app.com:9999 | again"
    )
