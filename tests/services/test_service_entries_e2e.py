"""ServiceEntry and Sidecar fields of issue 14c through real Envoy.

DNS resolution, resolution NONE (to the request's authority, a TLS connection's SNI,
the entry's address), unix:// endpoints, exportTo, subjectAltNames, ports without a
protocol (sniffed), and Sidecar outboundTrafficPolicy. Names that must resolve are
`localhost`: no other DNS is used.
"""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import free_port, running
from tests.services.live import DualApp, LiveMesh, UnixHttpApp
from tests.traffic.apps import TcpEchoApp, VersionApp, direct, request
from tests.traffic.tls_upstream import Pki, TlsUpstream

CLIENTS = """\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: sleep, namespace: default}
spec: {address: "{net}.10", labels: {app: sleep}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: sleep, namespace: other}
spec: {address: "{net}.12", labels: {app: sleep}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: sleep-any, namespace: default}
spec: {address: "{net}.13", labels: {app: sleep-any}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: sleep-any, namespace: default}
spec:
  workloadSelector: {labels: {app: sleep-any}}
  outboundTrafficPolicy: {mode: ALLOW_ANY}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: no-proxy, namespace: default}
spec: {address: "{net}.14", labels: {app: no-proxy}}
---
# Istio's "no-ip-tables" Sidecar: an app that does not use a proxy reaches services on
# listeners of their own (egress ports).
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: no-proxy, namespace: default}
spec:
  workloadSelector: {labels: {app: no-proxy}}
  egress:
  - port: {number: 8080, protocol: HTTP, name: egresshttp}
    captureMode: NONE
    hosts: ["./*"]
  - port: {number: 9000, protocol: TCP, name: egresstcp}
    hosts: ["./echo.example"]
  - hosts: ["istio-system/*"]
"""


@dataclass
class World:
    mesh: LiveMesh
    local_port: int  # an app on 127.0.0.1 (what `localhost` resolves to)
    socket_path: Path
    tls: TlsUpstream  # HTTPS on 127.0.0.1, certificate for localhost, san.example.com
    ca: Path
    tls_remote: TlsUpstream  # the same, on the mesh's block

    def apply(self, extra: str) -> None:
        text = CLIENTS + extra
        for key, value in self.values().items():
            text = text.replace(key, value)
        self.mesh.apply(text)

    def values(self) -> dict[str, str]:
        return {
            "LOCAL_PORT": str(self.local_port),
            "SOCKET": str(self.socket_path),
            "TLS_PORT": str(self.tls.port),
            "SAN_PORT": str(self.tls_remote.port),
            "CA_FILE": str(self.ca),
        }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("entries")
    mesh = LiveMesh(root)
    local_port = free_port()
    pki = Pki(root / "pki", "entries")
    cert = pki.issue("localhost", dns=("localhost", "san.example.com"))
    sock = Path(f"/tmp/pm-14c-{mesh.net}.sock")
    sock.unlink(missing_ok=True)
    apps: list[Any] = [
        VersionApp("localhost-app", "127.0.0.1", local_port),
        VersionApp("by-address", mesh.addr(31), 8080),
        VersionApp("outside", mesh.addr(61), 8080),
        TcpEchoApp("tcp-echo", mesh.addr(51), 9000),
        DualApp("dual", mesh.addr(41), 7070),
        UnixHttpApp("unix-app", sock),
        TlsUpstream("127.0.0.1", cert),
        TlsUpstream(mesh.addr(62), cert),
    ]
    for app in apps:
        app.start()
    with running(*apps, mesh):
        world = World(mesh, local_port, sock, apps[6], pki.ca_file, apps[7])
        world.apply("")
        clients = (("sleep", "default"), ("sleep", "other"), ("sleep-any", "default"))
        for name, namespace in (*clients, ("no-proxy", "default")):
            mesh.envoy(name, namespace)
        yield world


def via(world: World, client: int, url: str, **kw: Any) -> tuple[int, str | None]:
    reply = request(f"{world.mesh.addr(client)}:15001", url, **kw)
    return reply.status, reply.app


def cluster_type(world: World, name: str) -> str:
    dump = world.mesh.envoys["sleep.default"].config_dump()
    for config in dump["configs"]:
        for entry in config.get("dynamic_active_clusters", []):
            if entry["cluster"]["name"] == name:
                cluster = entry["cluster"]
                return str(cluster.get("type") or cluster["cluster_type"]["name"])
    raise AssertionError(f"no cluster {name}")


def entry(name: str, spec: str) -> str:
    return f"""\
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: default}}
spec:
{spec}"""


def test_dns_resolution_resolves_the_host_or_the_endpoints(world: World) -> None:
    world.apply(
        entry(
            "localhost",
            "  hosts: [localhost]\n  resolution: DNS\n"
            "  ports: [{number: LOCAL_PORT, name: http, protocol: HTTP}]\n",
        )
        + entry(
            "web",
            "  hosts: [web.example.internal]\n  resolution: DNS_ROUND_ROBIN\n"
            "  ports: [{number: 8080, name: http, protocol: HTTP, targetPort: LOCAL_PORT}]\n"
            "  endpoints: [{address: localhost}]\n",
        )
    )
    port = world.local_port
    assert via(world, 10, f"http://localhost:{port}/") == (200, "localhost-app")
    assert cluster_type(world, f"outbound|{port}||localhost") == "STRICT_DNS"
    assert via(world, 10, "http://web.example.internal:8080/") == (200, "localhost-app")
    assert cluster_type(world, "outbound|8080||web.example.internal") == "LOGICAL_DNS"


def test_resolution_none_sends_http_where_the_authority_says(world: World) -> None:
    world.apply(
        entry(
            "local",
            "  hosts: [localhost]\n  resolution: NONE\n"
            "  ports: [{number: LOCAL_PORT, name: http, protocol: HTTP}]\n",
        )
        + entry(
            "by-address",
            '  hosts: [by-address.example]\n  addresses: ["{net}.31"]\n  resolution: NONE\n'
            "  ports: [{number: 8080, name: http, protocol: HTTP}]\n",
        )
    )
    assert via(world, 10, f"http://localhost:{world.local_port}/") == (200, "localhost-app")
    assert via(world, 10, f"http://{world.mesh.addr(31)}:8080/") == (200, "by-address")
    # by-address.example has no DNS record: nowhere to go (Envoy's DNS failure: 503).
    assert via(world, 10, "http://by-address.example:8080/")[0] == 503


def test_resolution_none_sends_tls_where_the_sni_says(world: World) -> None:
    listen = free_port(world.mesh.addr(10))
    world.apply(
        entry(
            "local-tls",
            "  hosts: [localhost]\n  resolution: NONE\n"
            f"  ports: [{{number: {listen}, name: tls, protocol: TLS, targetPort: TLS_PORT}}]\n",
        )
    )
    context = ssl.create_default_context(cafile=str(world.ca))
    raw = socket.create_connection((world.mesh.addr(10), listen), timeout=5)
    with context.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := tls.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["sni"] == "localhost"


def test_resolution_none_tcp_goes_to_the_entrys_one_address(world: World) -> None:
    world.apply(
        entry(
            "echo",
            '  hosts: [echo.example]\n  addresses: ["{net}.51"]\n  resolution: NONE\n'
            "  ports: [{number: 9000, name: tcp, protocol: TCP}]\n",
        )
    )
    with socket.create_connection((world.mesh.addr(10), 9000), timeout=5) as sock:
        sock.sendall(b"hello\n")
        assert sock.recv(1024) == b"tcp-echo hello\n"


def test_unix_socket_endpoint(world: World) -> None:
    world.apply(
        entry(
            "uds",
            "  hosts: [uds.example]\n  resolution: STATIC\n"
            "  ports: [{number: 8080, name: http, protocol: HTTP}]\n"
            "  endpoints: [{address: unix://SOCKET}]\n",
        )
    )
    assert via(world, 10, "http://uds.example:8080/") == (200, "unix-app")


def test_export_to_decides_which_namespaces_see_an_entry(world: World) -> None:
    def exported(to: str) -> tuple[int, int]:
        world.apply(
            entry(
                "private",
                f"  hosts: [private.example]\n  exportTo: {to}\n  resolution: STATIC\n"
                "  ports: [{number: 8080, name: http, protocol: HTTP}]\n"
                '  endpoints: [{address: "{net}.31"}]\n',
            )
        )
        url = "http://private.example:8080/"
        return via(world, 10, url)[0], via(world, 12, url)[0]

    assert exported('["*"]') == (200, 200)
    assert exported('["."]') == (200, 404)  # no virtual host in namespace other
    assert exported("[other]") == (404, 200)
    assert exported('["~"]') == (404, 404)


def test_subject_alt_names_are_checked_on_originated_tls(world: World) -> None:
    def with_sans(sans: str) -> int:
        world.apply(
            entry(
                "san",
                "  hosts: [san.example.com]\n  resolution: STATIC\n"
                "  ports: [{number: 8443, name: http, protocol: HTTP, targetPort: SAN_PORT}]\n"
                '  endpoints: [{address: "{net}.62"}]\n'
                f"  subjectAltNames: {sans}\n",
            )
            + """\
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: san, namespace: default}
spec:
  host: san.example.com
  trafficPolicy: {tls: {mode: SIMPLE, caCertificates: CA_FILE}}
"""
        )
        return via(world, 10, "http://san.example.com:8443/")[0]

    assert with_sans("[san.example.com]") == 200
    assert with_sans("[other.example.com]") == 503  # the upstream's certificate lacks it


def test_outbound_traffic_policy_allow_any_forwards_unknown_hosts(world: World) -> None:
    world.apply("")
    outside = f"http://{world.mesh.addr(61)}:8080/"
    assert via(world, 13, outside) == (200, "outside")  # sleep-any: ALLOW_ANY
    assert via(world, 10, outside)[0] == 404  # sleep: REGISTRY_ONLY, pocketmesh's default
    assert via(world, 13, f"http://localhost:{world.local_port}/") == (200, "localhost-app")


def test_a_port_without_protocol_is_sniffed(world: World) -> None:
    world.apply(
        entry(
            "dual",
            "  hosts: [dual.default.svc.cluster.local]\n  resolution: STATIC\n"
            "  location: MESH_INTERNAL\n"
            "  ports: [{number: 7070, name: dual}]\n"
            '  endpoints: [{address: "{net}.41"}]\n',
        )
        + """\
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: dual, namespace: default}
spec:
  hosts: [dual]
  http:
  - headers: {response: {set: {x-routed: http}}}
    route: [{destination: {host: dual}}]
"""
    )
    # Through the HTTP proxy: HTTP, with the VirtualService's rule.
    reply = request(f"{world.mesh.addr(10)}:15001", "http://dual:7070/a")
    assert (reply.status, reply.app, reply.headers.get("x-routed")) == (200, "dual", "http")
    # On the port's own listener: HTTP is routed as HTTP (the rule applies) ...
    with socket.create_connection((world.mesh.addr(10), 7070), timeout=5) as sock:
        sock.sendall(b"GET /b HTTP/1.1\r\nHost: anything\r\nConnection: close\r\n\r\n")
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 200") and b"x-routed: http" in answer, answer
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["path"] == "/b"
    # ... and anything else is proxied as TCP.
    with socket.create_connection((world.mesh.addr(10), 7070), timeout=5) as sock:
        sock.sendall(b"\x16hello, not http\n")
        assert _read_all(sock) == b"dual tcp \x16hello, not http\n"


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_sidecar_egress_ports_are_listeners_of_their_own(world: World) -> None:
    world.apply(
        entry(
            "private",
            "  hosts: [private.example]\n  resolution: STATIC\n"
            "  ports: [{number: 8080, name: http, protocol: HTTP}]\n"
            '  endpoints: [{address: "{net}.31"}]\n',
        )
        + entry(
            "echo",
            "  hosts: [echo.example]\n  resolution: STATIC\n"
            "  ports: [{number: 9000, name: tcp, protocol: TCP}]\n"
            '  endpoints: [{address: "{net}.51"}]\n',
        )
    )
    listener = f"{world.mesh.addr(14)}:8080"
    # A plain request (not the proxy form), routed by Host; the port is the default.
    for host in ("private.example", "private.example:8080"):
        reply = direct(listener, "/", headers={"Host": host})
        assert (reply.status, reply.data.get("app")) == (200, "by-address"), host
    assert direct(listener, "/", headers={"Host": "elsewhere.example"}).status == 404
    with socket.create_connection((world.mesh.addr(14), 9000), timeout=5) as sock:
        sock.sendall(b"hello\n")
        assert sock.recv(1024) == b"tcp-echo hello\n"
