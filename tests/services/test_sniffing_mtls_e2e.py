"""A port without a protocol, inbound, under mutual TLS: HTTP or TCP per connection.

The workload `dual` serves HTTP and raw TCP on one port that neither its ServiceEntry
nor its Sidecar names a protocol for. Over mTLS its sidecar cannot read the bytes; the
client sidecar's ALPN tells (an HTTP connection pool offers http/1.1, a TCP proxy
nothing), as in Istio. In plaintext the HTTP inspector tells.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests.e2e.harness import free_port, running
from tests.services.live import DualApp, LiveMesh
from tests.traffic.apps import direct, request

MESH = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: dual, namespace: default}
spec:
  hosts: [dual.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 7070, name: dual}]
  workloadSelector: {labels: {app: dual}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: dual, namespace: default}
spec: {address: "{net}.41", labels: {app: dual}, serviceAccount: dual}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: dual, namespace: default}
spec:
  workloadSelector: {labels: {app: dual}}
  ingress: [{port: {number: 7070, name: dual}, defaultEndpoint: "127.0.0.1:APP_PORT"}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: sleep, namespace: default}
spec: {address: "{net}.10", labels: {app: sleep}, serviceAccount: sleep}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: dual, namespace: default}
spec:
  selector: {matchLabels: {app: dual}}
  mtls: {mode: MODE}
"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveMesh]:
    live = LiveMesh(tmp_path_factory.mktemp("sniff-mtls"), identity=True)
    port = free_port()
    app = DualApp("dual", "127.0.0.1", port).start()
    live.text = MESH.replace("APP_PORT", str(port))  # type: ignore[attr-defined]
    with running(app, live):
        live.apply(live.text.replace("MODE", "STRICT"))  # type: ignore[attr-defined]
        live.envoy("dual")
        live.envoy("sleep")
        yield live


def tcp(address: tuple[str, int], payload: bytes) -> bytes:
    with socket.create_connection(address, timeout=5) as sock:
        sock.sendall(payload)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        return data


def test_strict_mtls_http_and_tcp_on_one_port(mesh: LiveMesh) -> None:
    mesh.apply(mesh.text.replace("MODE", "STRICT"))  # type: ignore[attr-defined]
    reply = request(f"{mesh.addr(10)}:15001", "http://dual:7070/x")
    assert reply.status == 200 and reply.data["protocol"] == "http", reply.body
    # The HTTP chain of the mTLS listener: the app sees who called (XFCC).
    xfcc = reply.data["headers"].get("x-forwarded-client-cert", "")
    assert "spiffe://cluster.local/ns/default/sa/sleep" in xfcc, reply.data
    # Raw TCP through sleep's listener for the port, over mTLS, to the TCP chain.
    assert tcp((mesh.addr(10), 7070), b"ping\n") == b"dual tcp ping\n"
    # Plaintext straight to the workload gets nothing (STRICT): closed or reset.
    try:
        refused = tcp((mesh.addr(41), 7070), b"ping\n")
    except ConnectionResetError:
        refused = b""
    assert refused == b"", refused


def test_permissive_plaintext_is_sniffed_too(mesh: LiveMesh) -> None:
    mesh.apply(mesh.text.replace("MODE", "PERMISSIVE"))  # type: ignore[attr-defined]
    plain = direct(f"{mesh.addr(41)}:7070", "/plain", headers={"Host": "dual"})
    assert plain.status == 200 and plain.data["path"] == "/plain", plain.body
    assert "x-forwarded-client-cert" not in plain.data["headers"]  # no peer certificate
    assert tcp((mesh.addr(41), 7070), b"ping\n") == b"dual tcp ping\n"
    # And mTLS clients still get both chains.
    reply = request(f"{mesh.addr(10)}:15001", "http://dual:7070/y")
    assert "x-forwarded-client-cert" in reply.data["headers"], reply.data
    assert tcp((mesh.addr(10), 7070), b"pong\n") == b"dual tcp pong\n"
