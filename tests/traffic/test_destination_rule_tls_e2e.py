"""DestinationRule TLS origination through real Envoy, against a real TLS upstream.

productpage's sidecar calls `secure.example.com`, a MESH_EXTERNAL ServiceEntry whose
endpoint is a Python `ssl` server started here. That server requires a client
certificate (MUTUAL cases) signed by the client CA, and records the first bytes of
every connection before any TLS: every connection the sidecar opens must start
with a TLS handshake record, never with plaintext HTTP.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.traffic.apps import request
from tests.traffic.gateway_clients import revoke
from tests.traffic.mesh import CLIENT, NET, Mesh
from tests.traffic.tls_upstream import TLS_HANDSHAKE, Pki, TlsUpstream

HOST = "secure.example.com"
MUTUAL_ADDRESS = f"{NET}.60"
SIMPLE_ADDRESS = f"{NET}.61"


@dataclass
class Upstreams:
    pki: Path
    server_ca: Path
    client_cert: tuple[Path, Path]
    other_ca: Path
    other_client: tuple[Path, Path]
    mutual: TlsUpstream
    simple: TlsUpstream
    servers: Pki  # the upstreams' CA, for CRLs
    server_cert: Path


@pytest.fixture(scope="module")
def upstreams(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstreams]:
    root = tmp_path_factory.mktemp("pki")
    servers = Pki(root, "server")
    clients = Pki(root, "client")
    other = Pki(root, "other")
    server_cert = servers.issue(HOST, dns=(HOST,))
    mutual = TlsUpstream(
        MUTUAL_ADDRESS, server_cert, mutual=True, client_ca=clients.ca_file
    ).start()
    simple = TlsUpstream(SIMPLE_ADDRESS, server_cert).start()
    try:
        yield Upstreams(
            root,
            servers.ca_file,
            clients.issue("sidecar-client", client=True),
            other.ca_file,
            other.issue("stranger", client=True),
            mutual,
            simple,
            servers,
            server_cert[0],
        )
    finally:
        mutual.stop()
        simple.stop()


def service(upstream: TlsUpstream) -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: secure}}
spec:
  hosts: [{HOST}]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: 8443, name: http, protocol: HTTP}}]
  endpoints: [{{address: {upstream.host}, ports: {{http: {upstream.port}}}}}]
"""


def rule(tls: str) -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: secure}}
spec:
  host: {HOST}
  trafficPolicy:
    tls: {tls}
"""


def call(mesh: Mesh, upstream: TlsUpstream, tls: str, extra: str = "") -> int:
    """Route to `upstream` with this `tls`; one request; what the app got back."""
    upstream.reset()
    mesh.use(extra={"secure.yaml": service(upstream) + "---\n" + rule(tls) + extra})
    return request(CLIENT, f"http://{HOST}:8443/").status


def assert_only_tls(upstream: TlsUpstream) -> None:
    seen = upstream.seen()
    assert seen, "the sidecar never connected"
    for connection in seen:
        assert connection.first_bytes[:1] == bytes([TLS_HANDSHAKE]), connection


def test_mutual_with_the_right_certificates_succeeds(mesh: Mesh, upstreams: Upstreams) -> None:
    cert, key = upstreams.client_cert
    tls = (
        f"{{mode: MUTUAL, clientCertificate: {cert}, privateKey: {key}, "
        f"caCertificates: {upstreams.server_ca}}}"
    )
    upstreams.mutual.reset()
    mesh.use(extra={"secure.yaml": service(upstreams.mutual) + "---\n" + rule(tls)})
    reply = request(CLIENT, f"http://{HOST}:8443/")
    assert reply.status == 200, reply.body
    # The upstream checked our client certificate; the SNI came from the request's host.
    assert reply.data == {"client": "sidecar-client", "sni": HOST}
    assert_only_tls(upstreams.mutual)


def test_mutual_refuses_a_server_of_another_ca(mesh: Mesh, upstreams: Upstreams) -> None:
    cert, key = upstreams.client_cert
    tls = (
        f"{{mode: MUTUAL, clientCertificate: {cert}, privateKey: {key}, "
        f"caCertificates: {upstreams.other_ca}}}"
    )
    assert call(mesh, upstreams.mutual, tls) == 503
    assert_only_tls(upstreams.mutual)
    assert all(c.requests == 0 for c in upstreams.mutual.seen())


def test_mutual_refuses_a_server_without_the_subject_alt_name(
    mesh: Mesh, upstreams: Upstreams
) -> None:
    cert, key = upstreams.client_cert
    base = (
        f"mode: MUTUAL, clientCertificate: {cert}, privateKey: {key}, "
        f"caCertificates: {upstreams.server_ca}"
    )
    assert call(mesh, upstreams.mutual, f"{{{base}, subjectAltNames: [other.example.com]}}") == 503
    assert_only_tls(upstreams.mutual)
    assert all(c.requests == 0 for c in upstreams.mutual.seen())
    # The same with the name the server's certificate has, and an explicit SNI.
    tls = f"{{{base}, subjectAltNames: [{HOST}], sni: custom.sni.test}}"
    assert call(mesh, upstreams.mutual, tls) == 200
    assert [c.sni for c in upstreams.mutual.seen()] == ["custom.sni.test"]


def test_the_upstream_refuses_a_client_certificate_of_another_ca(
    mesh: Mesh, upstreams: Upstreams
) -> None:
    cert, key = upstreams.other_client
    tls = (
        f"{{mode: MUTUAL, clientCertificate: {cert}, privateKey: {key}, "
        f"caCertificates: {upstreams.server_ca}}}"
    )
    assert call(mesh, upstreams.mutual, tls) == 503
    assert_only_tls(upstreams.mutual)
    # And SIMPLE (no client certificate at all) to a server that requires one.
    assert (
        call(mesh, upstreams.mutual, f"{{mode: SIMPLE, caCertificates: {upstreams.server_ca}}}")
        == 503
    )
    assert_only_tls(upstreams.mutual)


def test_simple_verifies_the_server(mesh: Mesh, upstreams: Upstreams) -> None:
    reply_status = call(
        mesh, upstreams.simple, f"{{mode: SIMPLE, caCertificates: {upstreams.server_ca}}}"
    )
    assert reply_status == 200
    assert_only_tls(upstreams.simple)
    # No caCertificates: the system roots, which do not know this test CA (as Istio).
    assert call(mesh, upstreams.simple, "{mode: SIMPLE}") == 503
    assert_only_tls(upstreams.simple)
    # insecureSkipVerify: encrypted, not verified.
    assert call(mesh, upstreams.simple, "{mode: SIMPLE, insecureSkipVerify: true}") == 200
    assert_only_tls(upstreams.simple)


def test_simple_refuses_a_server_the_crl_revokes(mesh: Mesh, upstreams: Upstreams) -> None:
    base = f"mode: SIMPLE, caCertificates: {upstreams.server_ca}"
    revoked = revoke(upstreams.servers, upstreams.server_cert, upstreams.pki / "revoked.crl")
    assert call(mesh, upstreams.simple, f"{{{base}, caCrl: {revoked}}}") == 503
    assert_only_tls(upstreams.simple)
    assert all(c.requests == 0 for c in upstreams.simple.seen())
    # A CRL of the same CA that revokes another certificate: the server is trusted.
    other, _ = upstreams.servers.issue("retired.example.com", dns=("retired.example.com",))
    unrelated = revoke(upstreams.servers, other, upstreams.pki / "unrelated.crl")
    assert call(mesh, upstreams.simple, f"{{{base}, caCrl: {unrelated}}}") == 200
    assert_only_tls(upstreams.simple)


def test_credential_name_takes_a_secret_document(mesh: Mesh, upstreams: Upstreams) -> None:
    cert, key = upstreams.client_cert

    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    secret = f"""\
---
apiVersion: v1
kind: Secret
metadata: {{name: secure-client, namespace: default}}
type: kubernetes.io/tls
data:
  tls.crt: {b64(cert)}
  tls.key: {b64(key)}
  ca.crt: {b64(upstreams.server_ca)}
"""
    tls = "{mode: MUTUAL, credentialName: secure-client}"
    assert call(mesh, upstreams.mutual, tls, secret) == 200
    assert_only_tls(upstreams.mutual)
    # The Secret's ca.crl is its CRL: one that revokes the server's certificate.
    crl = revoke(upstreams.servers, upstreams.server_cert, upstreams.pki / "secret.crl")
    assert call(mesh, upstreams.mutual, tls, secret + f"  ca.crl: {b64(crl)}\n") == 503
    assert_only_tls(upstreams.mutual)


def test_the_plaintext_check_is_not_vacuous(mesh: Mesh, upstreams: Upstreams) -> None:
    """DISABLE does send plaintext: the upstream sees an HTTP request line, no TLS."""
    assert call(mesh, upstreams.simple, "{mode: DISABLE}") == 503
    seen = upstreams.simple.seen()
    assert seen and all(c.first_bytes.startswith(b"GET") for c in seen), seen
