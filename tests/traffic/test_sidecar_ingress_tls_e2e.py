"""A Sidecar's ingress `tls`: the sidecar ends TLS with the user's certificate, through
real Envoy.

A workload `secure` (on `<net>.70`) whose Sidecar ends TLS on port 9443 and hands plain
HTTP to an app (the package's ratings app). Clients speak TLS to the sidecar as they
would to the app: SIMPLE serves the certificate, MUTUAL also requires theirs. These
meshes run without workload identities, so the port's mTLS mode is DISABLE, which is
where Istio applies ingress tls (elsewhere pocketmesh refuses it:
tests/generators/test_sidecar_ingress_tls.py).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.harness import Envoy
from tests.traffic.gateway_clients import Refused, context, https_get
from tests.traffic.mesh import NET, Mesh
from tests.traffic.tls_upstream import Pki

ADDRESS = f"{NET}.70"
HOST = "secure.example.com"
PORT = 9443


@dataclass
class Certs:
    server_ca: Path
    server: tuple[Path, Path]
    client_ca: Path
    client: tuple[Path, Path]
    stranger: tuple[Path, Path]  # a client certificate of another CA


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    root = tmp_path_factory.mktemp("sidecar-pki")
    servers, clients, other = Pki(root, "server"), Pki(root, "client"), Pki(root, "other")
    return Certs(
        servers.ca_file,
        servers.issue(HOST, dns=(HOST,)),
        clients.ca_file,
        clients.issue("client", client=True),
        other.issue("stranger", client=True),
    )


def config(tls: str) -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: secure, namespace: default}}
spec: {{address: {ADDRESS}, labels: {{app: secure}}, serviceAccount: secure}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: secure, namespace: default}}
spec:
  workloadSelector: {{labels: {{app: secure}}}}
  ingress:
  - port: {{number: {PORT}, protocol: HTTPS, name: https}}
    defaultEndpoint: {NET}.21:9080
    tls: {tls}
"""


@pytest.fixture(scope="module")
def sidecar(mesh: Mesh, certs: Certs) -> Envoy:
    """The workload's Envoy, started once its WorkloadEntry is in the config."""
    cert, key = certs.server
    simple = f"{{mode: SIMPLE, serverCertificate: {cert}, privateKey: {key}}}"
    mesh.use(extra={"secure.yaml": config(simple)})
    return mesh.envoy("secure")


def use(mesh: Mesh, tls: str) -> None:
    generation = mesh.use(extra={"secure.yaml": config(tls)})
    mesh.wait_synced("secure.default", generation)


def test_simple_serves_the_certificate_and_hands_http_to_the_app(
    mesh: Mesh, certs: Certs, sidecar: Envoy
) -> None:
    cert, key = certs.server
    use(mesh, f"{{mode: SIMPLE, serverCertificate: {cert}, privateKey: {key}}}")
    answer = https_get(f"{ADDRESS}:{PORT}", HOST, "/hello", context(certs.server_ca))
    assert (answer.status, answer.peer_cn) == (200, HOST)
    assert answer.data["app"] == "ratings-v1" and answer.data["path"] == "/hello"
    # Plaintext to the TLS port gets no HTTP answer.
    with socket.create_connection((ADDRESS, PORT), timeout=5) as raw:
        raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            reply = raw.recv(100)
        except (ConnectionResetError, TimeoutError):
            reply = b""
    assert not reply.startswith(b"HTTP/"), reply


def test_mutual_requires_a_client_certificate_of_its_ca(
    mesh: Mesh, certs: Certs, sidecar: Envoy
) -> None:
    cert, key = certs.server
    use(
        mesh,
        f"{{mode: MUTUAL, serverCertificate: {cert}, privateKey: {key}, "
        f"caCertificates: {certs.client_ca}}}",
    )
    address = f"{ADDRESS}:{PORT}"
    answer = https_get(address, HOST, "/", context(certs.server_ca, certs.client))
    assert answer.status == 200 and answer.data["app"] == "ratings-v1"
    for client in (None, certs.stranger):
        with pytest.raises(Refused):
            https_get(address, HOST, "/", context(certs.server_ca, client))
