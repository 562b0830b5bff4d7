"""Gateway servers beyond plain HTTP, through the real ingress gateway Envoy.

Each test configures the examples' ingress gateway (`istio-ingressgateway`, on
`<net>.5`) and talks to it as a client would: TLS handshakes with or without a
client certificate (certificates made here), HTTP over the TLS it ends, raw bytes
over TLS it ends or passes through. The upstreams are the package's apps (httpbin,
tcp-echo) and a Python TLS server started here, which reports the SNI it was asked
for: a passthrough connection reaches it still encrypted, so the client sees that
server's certificate, never one the gateway holds.
"""

from __future__ import annotations

import contextlib
import ssl
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.traffic.apps import direct, tcp_send
from tests.traffic.gateway_clients import (
    Refused,
    b64,
    context,
    fingerprints,
    https_get,
    revoke,
    tls_exchange,
)
from tests.traffic.mesh import NET, Mesh
from tests.traffic.tls_upstream import Pki, TlsUpstream

GATEWAY = f"{NET}.5"
HOST = "a.example.com"
NGINX = "nginx.example.com"


@dataclass
class Certs:
    root: Path
    server_ca: Path
    server: tuple[Path, Path]  # a.example.com, signed by server_ca
    client_ca: Path
    client: tuple[Path, Path]  # CN client, SAN client.example.com
    other_client: tuple[Path, Path]  # CN stranger, signed by another CA
    revoked: tuple[Path, Path]  # signed by client_ca, then revoked in `crl`
    crl: Path
    nginx: TlsUpstream  # TLS server of its own (nginx.example.com), for passthrough
    nginx2: TlsUpstream
    servers: Pki  # the CA behind server_ca, to issue more server certificates


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Certs]:
    root = tmp_path_factory.mktemp("gateway-pki")
    servers, clients, other = Pki(root, "server"), Pki(root, "client"), Pki(root, "other")
    revoked = clients.issue("revoked", client=True)
    nginx_cert = servers.issue(NGINX, dns=(NGINX, "*.nginx.example.com"))
    nginx = TlsUpstream(f"{NET}.62", nginx_cert).start()
    nginx2 = TlsUpstream(f"{NET}.63", nginx_cert).start()
    try:
        yield Certs(
            root,
            servers.ca_file,
            servers.issue(HOST, dns=(HOST, "b.example.com")),
            clients.ca_file,
            clients.issue("client", dns=("client.example.com",), client=True),
            other.issue("stranger", client=True),
            revoked,
            revoke(clients, revoked[0], root / "client.crl"),
            nginx,
            nginx2,
            servers,
        )
    finally:
        nginx.stop()
        nginx2.stop()


def gateway(servers: str, name: str = "gw") -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: {name}, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
{servers}
"""


def httpbin_route(hosts: str = f"[{HOST}]", gateways: str = "[istio-system/gw]") -> str:
    return f"""\
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: httpbin-ingress, namespace: default}}
spec:
  hosts: {hosts}
  gateways: {gateways}
  http:
  - route: [{{destination: {{host: httpbin, subset: v1}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: httpbin, namespace: default}}
spec:
  host: httpbin
  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]
"""


def use(mesh: Mesh, text: str) -> None:
    mesh.envoy("istio-ingressgateway", "istio-system")
    mesh.use(extra={"gateway.yaml": text})


def refused(call: object) -> None:
    with pytest.raises(Refused):
        call()  # type: ignore[operator]


# --- HTTPS that the gateway ends ------------------------------------------------------


def test_mutual_with_files_requires_a_client_certificate(mesh: Mesh, certs: Certs) -> None:
    """Istio's Secure Gateways (mutual): curl with the client certificate is answered,
    without one, or with one of another CA, the handshake fails."""
    cert, key = certs.server
    use(
        mesh,
        gateway(f"""\
  - port: {{number: 8443, name: https, protocol: HTTPS}}
    hosts: [{HOST}]
    tls: {{mode: MUTUAL, serverCertificate: {cert}, privateKey: {key},
           caCertificates: {certs.client_ca}}}""")
        + httpbin_route(),
    )
    address = f"{GATEWAY}:8443"
    answer = https_get(address, HOST, "/status", context(certs.server_ca, certs.client))
    assert answer.status == 200 and answer.data["app"] == "httpbin-v1"
    assert answer.peer_cn == HOST  # the certificate of the file the Gateway names
    refused(lambda: https_get(address, HOST, "/", context(certs.server_ca)))
    refused(lambda: https_get(address, HOST, "/", context(certs.server_ca, certs.other_client)))


def test_mutual_with_a_secret_and_its_cacert_secret(mesh: Mesh, certs: Certs) -> None:
    """credentialName: the certificate from one Secret, the client CA from `<name>-cacert`
    (Istio's convention), else from the Secret's own ca.crt."""
    cert, key = certs.server
    secrets = f"""\
---
apiVersion: v1
kind: Secret
metadata: {{name: a-credential, namespace: istio-system}}
type: kubernetes.io/tls
data: {{tls.crt: {b64(cert)}, tls.key: {b64(key)}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: a-credential-cacert, namespace: istio-system}}
data: {{ca.crt: {b64(certs.client_ca)}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: generic, namespace: istio-system}}
type: Opaque
data: {{cert: {b64(cert)}, key: {b64(key)}, cacert: {b64(certs.client_ca)}}}
"""
    servers = """\
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: [a.example.com]
    tls: {mode: MUTUAL, credentialName: a-credential}
  - port: {number: 9443, name: https-generic, protocol: HTTPS}
    hosts: [a.example.com]
    tls: {mode: MUTUAL, credentialName: generic}"""
    use(mesh, gateway(servers) + httpbin_route() + secrets)
    for port in (8443, 9443):
        address = f"{GATEWAY}:{port}"
        answer = https_get(address, HOST, "/", context(certs.server_ca, certs.client))
        assert answer.status == 200 and answer.data["app"] == "httpbin-v1", port
        refused(lambda a=address: https_get(a, HOST, "/", context(certs.server_ca)))  # type: ignore[misc]


def test_optional_mutual_checks_only_a_certificate_that_is_sent(mesh: Mesh, certs: Certs) -> None:
    cert, key = certs.server
    use(
        mesh,
        gateway(f"""\
  - port: {{number: 8443, name: https, protocol: HTTPS}}
    hosts: [{HOST}]
    tls: {{mode: OPTIONAL_MUTUAL, serverCertificate: {cert}, privateKey: {key},
           caCertificates: {certs.client_ca}}}""")
        + httpbin_route(),
    )
    address = f"{GATEWAY}:8443"
    assert https_get(address, HOST, "/", context(certs.server_ca)).status == 200
    assert https_get(address, HOST, "/", context(certs.server_ca, certs.client)).status == 200
    refused(lambda: https_get(address, HOST, "/", context(certs.server_ca, certs.other_client)))


def test_client_checks_crl_san_hash_and_spki(mesh: Mesh, certs: Certs) -> None:
    """caCrl refuses a revoked certificate; subjectAltNames, verifyCertificateHash and
    verifyCertificateSpki each admit only the certificates they name."""
    cert, key = certs.server
    digest, spki = fingerprints(certs.client[0])
    other_digest, _ = fingerprints(certs.revoked[0])
    base = (
        f"serverCertificate: {cert}, privateKey: {key}, caCertificates: {certs.client_ca}, "
        "mode: MUTUAL"
    )
    servers = f"""\
  - port: {{number: 8443, name: crl, protocol: HTTPS}}
    hosts: [{HOST}]
    tls: {{{base}, caCrl: {certs.crl}}}
  - port: {{number: 8444, name: san, protocol: HTTPS}}
    hosts: [{HOST}]
    tls: {{{base}, subjectAltNames: [client.example.com]}}
  - port: {{number: 8445, name: other-san, protocol: HTTPS}}
    hosts: [{HOST}]
    tls: {{{base}, subjectAltNames: [nobody.example.com]}}
  - port: {{number: 8446, name: hash, protocol: HTTPS}}
    hosts: [{HOST}]
    tls: {{{base}, verifyCertificateHash: ["{digest}"]}}
  - port: {{number: 8447, name: other-hash, protocol: HTTPS}}
    hosts: [{HOST}]
    tls: {{{base}, verifyCertificateHash: ["{other_digest}"]}}
  - port: {{number: 8448, name: spki, protocol: HTTPS}}
    hosts: [{HOST}]
    tls: {{{base}, verifyCertificateSpki: ["{spki}"]}}"""
    use(mesh, gateway(servers) + httpbin_route())
    good, revoked = context(certs.server_ca, certs.client), context(certs.server_ca, certs.revoked)

    def status(port: int, ctx: ssl.SSLContext) -> int:
        return https_get(f"{GATEWAY}:{port}", HOST, "/", ctx).status

    assert status(8443, good) == 200
    refused(lambda: status(8443, revoked))
    assert status(8444, good) == 200
    refused(lambda: status(8445, good))
    assert status(8446, good) == 200
    refused(lambda: status(8447, good))
    assert status(8448, good) == 200
    refused(lambda: status(8448, revoked))


def test_protocol_versions_and_cipher_suites(mesh: Mesh, certs: Certs) -> None:
    cert, key = certs.server
    files = f"serverCertificate: {cert}, privateKey: {key}"
    cipher = "ECDHE-ECDSA-AES256-GCM-SHA384"
    servers = f"""\
  - port: {{number: 8443, name: tls13, protocol: HTTPS}}
    hosts: [{HOST}]
    tls: {{mode: SIMPLE, {files}, minProtocolVersion: TLSV1_3}}
  - port: {{number: 8444, name: tls12, protocol: HTTPS}}
    hosts: [{HOST}]
    tls: {{mode: SIMPLE, {files}, maxProtocolVersion: TLSV1_2, cipherSuites: [{cipher}]}}"""
    use(mesh, gateway(servers) + httpbin_route())
    v12, v13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3
    answer = https_get(f"{GATEWAY}:8443", HOST, "/", context(certs.server_ca))
    assert answer.status == 200 and answer.version == "TLSv1.3"
    refused(
        lambda: https_get(f"{GATEWAY}:8443", HOST, "/", context(certs.server_ca, max_version=v12))
    )
    answer = https_get(f"{GATEWAY}:8444", HOST, "/", context(certs.server_ca))
    assert answer.status == 200 and answer.version == "TLSv1.2" and answer.cipher == cipher
    refused(
        lambda: https_get(f"{GATEWAY}:8444", HOST, "/", context(certs.server_ca, min_version=v13))
    )
    other = context(certs.server_ca, max_version=v12, ciphers="ECDHE-ECDSA-AES128-GCM-SHA256")
    refused(lambda: https_get(f"{GATEWAY}:8444", HOST, "/", other))


def test_https_servers_keep_their_hosts_apart(mesh: Mesh, certs: Certs) -> None:
    """Each HTTPS server has its own routes (Istio's https.<port>.<name>.<gw>.<ns>): a
    connection that passed one server's checks cannot ask for another server's host."""
    cert, key = certs.server
    files = f"serverCertificate: {cert}, privateKey: {key}"
    servers = f"""\
  - port: {{number: 8443, name: open, protocol: HTTPS}}
    hosts: [b.example.com]
    tls: {{mode: SIMPLE, {files}}}
  - port: {{number: 8443, name: locked, protocol: HTTPS}}
    hosts: [{HOST}]
    tls: {{mode: MUTUAL, {files}, caCertificates: {certs.client_ca}}}"""
    use(mesh, gateway(servers) + httpbin_route("[a.example.com, b.example.com]"))
    open_server = context(certs.server_ca)
    assert https_get(f"{GATEWAY}:8443", "b.example.com", "/", open_server).status == 200
    refused(lambda: https_get(f"{GATEWAY}:8443", HOST, "/", open_server))
    # SNI b.example.com (no client certificate needed), Host a.example.com: not routed.
    answer = https_get(f"{GATEWAY}:8443", "b.example.com", "/", open_server)
    assert answer.status == 200
    host_a = https_get_host(f"{GATEWAY}:8443", "b.example.com", HOST, open_server)
    assert host_a == 404


def https_get_host(address: str, sni: str, host: str, ctx: ssl.SSLContext) -> int:
    import http.client
    import socket

    name, port = address.rsplit(":", 1)
    raw = socket.create_connection((name, int(port)), timeout=5)
    conn = http.client.HTTPConnection(sni, timeout=5)
    conn.sock = ctx.wrap_socket(raw, server_hostname=sni)
    try:
        conn.request("GET", "/", headers={"Host": host})
        return conn.getresponse().status
    finally:
        conn.close()


# --- TLS passthrough by SNI -------------------------------------------------------


def nginx_service(certs: Certs) -> str:
    return f"""\
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: my-nginx, namespace: default}}
spec:
  hosts: [my-nginx.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 443, name: https, protocol: HTTPS}}]
  endpoints:
  - {{address: {certs.nginx.host}, ports: {{https: {certs.nginx.port}}}, labels: {{version: v1}}}}
  - {{address: {certs.nginx2.host}, ports: {{https: {certs.nginx2.port}}}, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: my-nginx, namespace: default}}
spec:
  host: my-nginx
  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]
"""


def test_passthrough_routes_by_sni_without_ending_tls(mesh: Mesh, certs: Certs) -> None:
    """Istio's "Ingress Gateway without TLS Termination": the gateway reads the SNI and
    forwards the encrypted bytes; nginx's own certificate answers the handshake."""
    servers = f"""\
  - port: {{number: 8443, name: tls, protocol: TLS}}
    hosts: [{NGINX}, "*.nginx.example.com"]
    tls: {{mode: PASSTHROUGH}}"""
    route = f"""\
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: nginx, namespace: default}}
spec:
  hosts: [{NGINX}, "*.nginx.example.com"]
  gateways: [istio-system/gw]
  tls:
  - match: [{{port: 8443, sniHosts: [{NGINX}]}}]
    route: [{{destination: {{host: my-nginx, subset: v1, port: {{number: 443}}}}}}]
  - match: [{{sniHosts: [split.nginx.example.com]}}]
    route:
    - {{destination: {{host: my-nginx, subset: v1}}, weight: 50}}
    - {{destination: {{host: my-nginx, subset: v2}}, weight: 50}}
"""
    use(mesh, gateway(servers) + route + nginx_service(certs))
    certs.nginx.reset()
    address = f"{GATEWAY}:8443"
    answer = https_get(address, NGINX, "/", context(certs.server_ca))
    assert answer.status == 200 and answer.data == {"sni": NGINX, "client": ""}
    assert answer.peer_cn == NGINX  # nginx's certificate: the gateway ended no TLS
    seen = certs.nginx.seen()
    assert seen and all(c.first_bytes[:1] == b"\x16" for c in seen)  # a ClientHello
    # A name no route lists gets no filter chain: the connection is closed.
    refused(lambda: https_get(address, "other.nginx.example.com", "/", context(certs.server_ca)))
    # Weighted destinations, per connection.
    certs.nginx.reset()
    certs.nginx2.reset()
    split = "split.nginx.example.com"
    for _ in range(40):
        assert https_get(address, split, "/", context(certs.server_ca)).data["sni"] == split
    counts = Counter({"v1": len(certs.nginx.seen()), "v2": len(certs.nginx2.seen())})
    assert counts["v1"] + counts["v2"] == 40 and counts["v1"] >= 5 and counts["v2"] >= 5, counts


def test_https_passthrough_beside_a_server_that_ends_tls(mesh: Mesh, certs: Certs) -> None:
    """One port, two servers told apart by SNI: one ends TLS, one passes it through."""
    cert, key = certs.server
    servers = f"""\
  - port: {{number: 8443, name: https-pass, protocol: HTTPS}}
    hosts: [{NGINX}]
    tls: {{mode: PASSTHROUGH}}
  - port: {{number: 8443, name: https, protocol: HTTPS}}
    hosts: [{HOST}]
    tls: {{mode: SIMPLE, serverCertificate: {cert}, privateKey: {key}}}"""
    route = f"""\
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: nginx, namespace: default}}
spec:
  hosts: [{NGINX}]
  gateways: [istio-system/gw]
  tls:
  - match: [{{sniHosts: [{NGINX}]}}]
    route: [{{destination: {{host: my-nginx, subset: v1}}}}]
"""
    use(mesh, gateway(servers) + route + nginx_service(certs) + httpbin_route())
    address = f"{GATEWAY}:8443"
    passed = https_get(address, NGINX, "/", context(certs.server_ca))
    assert passed.data == {"sni": NGINX, "client": ""} and passed.peer_cn == NGINX
    ended = https_get(address, HOST, "/", context(certs.server_ca))
    assert ended.data["app"] == "httpbin-v1" and ended.peer_cn == HOST


# --- TCP and TLS-ended TCP -----------------------------------------------------------


def tcp_route(port: int, weights: tuple[int, int] = (100, 0)) -> str:
    return f"""\
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: tcp-echo-ingress, namespace: default}}
spec:
  hosts: ["*"]
  gateways: [istio-system/gw]
  tcp:
  - match: [{{port: {port}}}]
    route:
    - {{destination: {{host: tcp-echo, subset: v1, port: {{number: 9000}}}}, weight: {weights[0]}}}
    - {{destination: {{host: tcp-echo, subset: v2, port: {{number: 9000}}}}, weight: {weights[1]}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: tcp-echo, namespace: default}}
spec:
  host: tcp-echo
  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]
"""


def test_tcp_server_routes_to_tcp_echo(mesh: Mesh) -> None:
    """Istio's TCP ingress: a TCP server on 31400, a tcp route to tcp-echo (weighted)."""
    servers = """\
  - port: {number: 31400, name: tcp, protocol: TCP}
    hosts: ["*"]"""
    use(mesh, gateway(servers) + tcp_route(31400, (80, 20)))
    seen = Counter(tcp_send(f"{GATEWAY}:31400", "hello\n").split(" ")[0] for _ in range(100))
    assert set(seen) == {"tcp-echo-v1", "tcp-echo-v2"}, seen
    assert 60 <= seen["tcp-echo-v1"] <= 95, seen  # 80 %: over four sd either way
    assert tcp_send(f"{GATEWAY}:31400", "hello\n").endswith(" hello\n")


def test_tls_server_ends_tls_then_proxies_tcp(mesh: Mesh, certs: Certs) -> None:
    cert, key = certs.server
    servers = f"""\
  - port: {{number: 31443, name: tls, protocol: TLS}}
    hosts: [{HOST}]
    tls: {{mode: MUTUAL, serverCertificate: {cert}, privateKey: {key},
           caCertificates: {certs.client_ca}}}"""
    use(mesh, gateway(servers) + tcp_route(31443))
    address = f"{GATEWAY}:31443"
    answer = tls_exchange(address, HOST, "hello\n", context(certs.server_ca, certs.client))
    assert answer == "tcp-echo-v1 hello\n"
    refused(lambda: tls_exchange(address, HOST, "hello\n", context(certs.server_ca)))
    # Plain TCP to a port that ends TLS never reaches tcp-echo: reset, or closed unanswered.
    with contextlib.suppress(ConnectionResetError):
        assert tcp_send(address, "hello\n") == ""


# --- VirtualServices on gateways: merged, delegated ------------------------------------


def test_virtual_services_for_one_host_merge_on_a_gateway(mesh: Mesh) -> None:
    """Two VirtualServices for one host, bound to one gateway: the routes of both, the
    catch-all last whatever the order (Istio's SortVHostRoutes)."""
    servers = f"""\
  - port: {{number: 8080, name: http, protocol: HTTP}}
    hosts: [{HOST}]"""
    services = f"""\
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: a-everything, namespace: default}}
spec:
  hosts: [{HOST}]
  gateways: [istio-system/gw]
  http:
  - route: [{{destination: {{host: httpbin, subset: v1}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: b-headers, namespace: default}}
spec:
  hosts: [{HOST}]
  gateways: [istio-system/gw]
  http:
  - match: [{{uri: {{prefix: /headers}}}}]
    route: [{{destination: {{host: httpbin, subset: v2}}}}]
"""
    use(mesh, gateway(servers) + services + httpbin_route("[unused.example.com]"))
    host = {"Host": HOST}
    assert direct(f"{GATEWAY}:8080", "/headers", headers=host).data["app"] == "httpbin-v2"
    assert direct(f"{GATEWAY}:8080", "/status", headers=host).data["app"] == "httpbin-v1"


def test_delegate_routes_are_narrowed_by_the_root(mesh: Mesh) -> None:
    """A root bound to the gateway delegates /api to a VirtualService without hosts; its
    routes apply only within /api, and unset fields come from the root's route."""
    servers = f"""\
  - port: {{number: 8080, name: http, protocol: HTTP}}
    hosts: [{HOST}]"""
    services = f"""\
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: root, namespace: default}}
spec:
  hosts: [{HOST}]
  gateways: [istio-system/gw]
  http:
  - match: [{{uri: {{prefix: /api}}}}]
    headers: {{response: {{set: {{x-from: root}}}}}}
    delegate: {{name: api, namespace: team}}
  - route: [{{destination: {{host: httpbin.default.svc.cluster.local, subset: v1}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: api, namespace: team}}
spec:
  http:
  - match: [{{uri: {{prefix: /api/v2}}}}]
    route: [{{destination: {{host: httpbin.default.svc.cluster.local, subset: v2}}}}]
  - match: [{{uri: {{prefix: /other}}}}]
    route: [{{destination: {{host: httpbin.default.svc.cluster.local, subset: v2}}}}]
"""
    use(mesh, gateway(servers) + services + httpbin_route("[unused.example.com]"))
    host = {"Host": HOST}
    v2 = direct(f"{GATEWAY}:8080", "/api/v2/x", headers=host)
    assert v2.data["app"] == "httpbin-v2" and v2.headers["x-from"] == "root"
    # /api/v1 is within the root's /api, but no delegate route matches: the root's
    # next rule answers. /other fits nowhere in /api: that delegate route is dropped.
    assert direct(f"{GATEWAY}:8080", "/api/v1", headers=host).data["app"] == "httpbin-v1"
    assert direct(f"{GATEWAY}:8080", "/other", headers=host).data["app"] == "httpbin-v1"


# --- tls[] on sidecars ---------------------------------------------------------------


def test_sidecar_routes_tls_by_sni(mesh: Mesh, certs: Certs) -> None:
    """An app speaks TLS to `<its sidecar>:9443` (no iptables): the sidecar routes by SNI
    to the destination its `tls[]` rules name, without ending TLS; a name no rule for
    this client lists gets no filter chain, so the connection is closed."""
    config = f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: nginx, namespace: default}}
spec:
  hosts: [{NGINX}]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: 9443, name: tls, protocol: TLS}}]
  endpoints:
  - {{address: {certs.nginx.host}, ports: {{tls: {certs.nginx.port}}}, labels: {{version: v1}}}}
  - {{address: {certs.nginx2.host}, ports: {{tls: {certs.nginx2.port}}}, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: nginx, namespace: default}}
spec:
  host: {NGINX}
  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: nginx, namespace: default}}
spec:
  hosts: [{NGINX}, "*.nginx.example.com"]
  tls:
  - match: [{{sniHosts: [{NGINX}], port: 9443}}]
    route: [{{destination: {{host: {NGINX}, subset: v1}}}}]
  - match: [{{sniHosts: [v2.nginx.example.com], sourceLabels: {{app: productpage}}}}]
    route: [{{destination: {{host: {NGINX}, subset: v2}}}}]
"""
    mesh.envoy("sleep")
    mesh.use(extra={"nginx.yaml": config})
    ca = context(certs.server_ca)
    productpage, sleep = f"{NET}.10:9443", f"{NET}.15:9443"
    certs.nginx.reset()
    certs.nginx2.reset()
    answer = https_get(productpage, NGINX, "/", ca)
    assert answer.data == {"sni": NGINX, "client": ""} and answer.peer_cn == NGINX
    assert [c.sni for c in certs.nginx.seen()] == [NGINX]
    v2 = "v2.nginx.example.com"
    assert https_get(productpage, v2, "/", ca).data["sni"] == v2
    assert [c.sni for c in certs.nginx2.seen()] == [v2]
    # sleep's labels do not match the second rule: no chain for that name on its sidecar.
    assert https_get(sleep, NGINX, "/", ca).data["sni"] == NGINX
    refused(lambda: https_get(sleep, v2, "/", ca))
    refused(lambda: https_get(productpage, "x.nginx.example.com", "/", ca))


def test_redirect_prefix_rewrite_and_request_port(mesh: Mesh) -> None:
    """The API reference's foo-redirect: /foo/bar goes to foo.example.com/bar; derivePort
    FROM_REQUEST_PORT keeps the port the request came in on."""
    servers = """\
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: [example.com]"""
    service = """\
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: foo-redirect, namespace: default}
spec:
  hosts: [example.com]
  gateways: [istio-system/gw]
  http:
  - match: [{uri: {prefix: /foo/}}]
    redirect: {authority: foo.example.com, prefixRewrite: /, derivePort: FROM_REQUEST_PORT}
"""
    use(mesh, gateway(servers) + service)
    reply = direct(f"{GATEWAY}:8080", "/foo/bar", headers={"Host": "example.com"})
    assert reply.status == 301
    assert reply.headers["location"] == "http://foo.example.com:8080/bar"


# --- files change; bad ones change nothing ----------------------------------------------


def test_certificate_files_are_reread_and_a_bad_one_keeps_the_last_good_config(
    mesh: Mesh, certs: Certs, tmp_path: Path
) -> None:
    """A renewed certificate file is served after the next load; a missing key file is
    an error at the field naming it, and the gateway keeps serving the last good one."""
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    first = certs.servers.issue("first", dns=(HOST,))
    cert.write_bytes(first[0].read_bytes())
    key.write_bytes(first[1].read_bytes())
    servers = f"""\
  - port: {{number: 8443, name: https, protocol: HTTPS}}
    hosts: [{HOST}]
    tls: {{mode: SIMPLE, serverCertificate: {cert}, privateKey: {key}}}"""
    use(mesh, gateway(servers) + httpbin_route())
    address = f"{GATEWAY}:8443"
    assert https_get(address, HOST, "/", context(certs.server_ca)).peer_cn == "first"
    renewed = certs.servers.issue("renewed", dns=(HOST,))
    cert.write_bytes(renewed[0].read_bytes())
    key.write_bytes(renewed[1].read_bytes())
    use(mesh, gateway(servers) + httpbin_route())
    assert https_get(address, HOST, "/", context(certs.server_ca)).peer_cn == "renewed"
    key.unlink()
    plane = mesh.plane
    assert plane.call(plane.plane.reload) is False
    errors = [str(e) for e in plane.plane.config_status.errors]
    assert any(
        e.endswith(f"spec.servers[0].tls.privateKey: cannot read {key}: No such file or directory")
        and "Gateway istio-system/gw" in e
        for e in errors
    ), errors
    answer = https_get(address, HOST, "/", context(certs.server_ca))
    assert answer.status == 200 and answer.peer_cn == "renewed"


def test_https_redirect_needs_no_virtual_service(mesh: Mesh) -> None:
    """Istio: every host of an httpsRedirect server answers 301, routed or not."""
    servers = """\
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: [a.example.com, plain.example.com]
    tls: {httpsRedirect: true}"""
    use(mesh, gateway(servers) + httpbin_route())  # routes a.example.com only
    for host in ("a.example.com", "plain.example.com"):
        reply = direct(f"{GATEWAY}:8080", "/status/200", headers={"Host": host})
        assert reply.status == 301, (host, reply.status)
        assert reply.headers["location"] == f"https://{host}/status/200"
    assert direct(f"{GATEWAY}:8080", "/", headers={"Host": "other.example.com"}).status == 404
