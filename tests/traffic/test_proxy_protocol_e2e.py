"""DestinationRule `trafficPolicy.proxyProtocol`, through real Envoy: the upstream reads a
PROXY protocol header (v1 text, v2 binary) before the request, naming the client.

The upstream is a service outside the mesh (MESH_EXTERNAL, a static endpoint), as
proxyProtocol is meant for: a small server here that parses the header and answers with
what it read.
"""

from __future__ import annotations

import json
import socketserver
import struct
from collections.abc import Iterator

import pytest

from tests.traffic.apps import StreamApp, request
from tests.traffic.mesh import CLIENT, NET, Mesh

HOST = "legacy.example.com"
ADDRESS = f"{NET}.62"
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        first = self.rfile.peek(16)[:16]
        if first.startswith(b"PROXY "):
            header = {"version": "v1", "line": self.rfile.readline().decode().strip()}
        elif first.startswith(V2_SIGNATURE):
            fixed = self.rfile.read(16)
            length = struct.unpack("!H", fixed[14:16])[0]
            body = self.rfile.read(length)
            family = fixed[13]
            source = ".".join(str(b) for b in body[0:4]) if family == 0x11 else ""
            header = {"version": "v2", "command": fixed[12] & 0x0F, "source": source}
        else:
            header = {"version": "none"}
        while self.rfile.readline() not in (b"\r\n", b""):  # the request's headers
            pass
        body = json.dumps({"proxy_protocol": header}).encode()
        self.wfile.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            + f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
            + body
        )


@pytest.fixture(scope="module")
def upstream() -> Iterator[StreamApp]:
    """Answers each HTTP request with the PROXY header that came before it."""
    server = StreamApp(ADDRESS, _Handler).start()
    yield server
    server.stop()


def config(upstream: StreamApp, policy: str) -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: legacy}}
spec:
  hosts: [{HOST}]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: {ADDRESS}, ports: {{http: {upstream.port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: legacy}}
spec:
  host: {HOST}
  trafficPolicy: {policy}
"""


def proxy_protocol(mesh: Mesh, upstream: StreamApp, policy: str) -> dict[str, object]:
    mesh.use(extra={"legacy.yaml": config(upstream, policy)})
    reply = request(CLIENT, f"http://{HOST}/")
    assert reply.status == 200, reply
    header = reply.data["proxy_protocol"]
    assert isinstance(header, dict)
    return header


def test_v1_and_v2_headers_name_the_client(mesh: Mesh, upstream: StreamApp) -> None:
    # The header describes the connection the sidecar received: from this test (the
    # app, on 127.0.0.1) to productpage's sidecar proxy (its address, port 15001).
    sidecar_ip, sidecar_port = CLIENT.split(":")
    v1 = proxy_protocol(mesh, upstream, "{proxyProtocol: {}}")  # V1, the API's default
    assert v1["version"] == "v1"
    words = str(v1["line"]).split()
    assert words[:4] == ["PROXY", "TCP4", "127.0.0.1", sidecar_ip], v1
    assert words[5] == sidecar_port, v1
    v2 = proxy_protocol(mesh, upstream, "{proxyProtocol: {version: V2}}")
    assert v2 == {"version": "v2", "command": 1, "source": "127.0.0.1"}, v2
    # Without it, the upstream reads the request straight away.
    none = proxy_protocol(mesh, upstream, "{loadBalancer: {simple: ROUND_ROBIN}}")
    assert none == {"version": "none"}
