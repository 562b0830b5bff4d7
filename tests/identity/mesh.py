"""A small mesh for the identity tests: productpage and ratings call reviews.

Every workload has its own service account, so every SPIFFE ID differs. The
apps listen on 127.0.0.1 free ports; each sidecar forwards its inbound port to
its app (Sidecar ingress), as on a machine without iptables.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import socket
import socketserver
import textwrap
import threading
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc
from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest, DiscoveryResponse

from tests.e2e.harness import ControlPlaneThread, EchoApp, Envoy, free_port, get, via_proxy
from xds_server import xds_types
from xds_server.bootstrap import BootstrapOptions, sidecar_bootstrap
from xds_server.galley.loader import load_paths
from xds_server.identity.auth import TOKEN_METADATA

TD = "cluster.local"
APPS = ("productpage", "reviews", "ratings")


def spiffe(sa: str, ns: str = "default") -> str:
    return f"spiffe://{TD}/ns/{ns}/sa/{sa}"


def write_mesh(config: Path, net: str, ports: dict[str, int]) -> None:
    docs = []
    for i, app in enumerate(APPS):
        docs.append(
            textwrap.dedent(f"""\
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata: {{name: {app}, namespace: default}}
            spec:
              hosts: [{app}.default.svc.cluster.local]
              location: MESH_INTERNAL
              resolution: STATIC
              ports: [{{number: 9080, name: http, protocol: HTTP}}]
              workloadSelector: {{labels: {{app: {app}}}}}
            ---
            apiVersion: networking.istio.io/v1
            kind: WorkloadEntry
            metadata: {{name: {app}, namespace: default}}
            spec: {{address: {net}.{10 + i}, labels: {{app: {app}}}, serviceAccount: {app}}}
            ---
            apiVersion: networking.istio.io/v1
            kind: Sidecar
            metadata: {{name: {app}, namespace: default}}
            spec:
              workloadSelector: {{labels: {{app: {app}}}}}
              ingress:
              - port: {{number: 9080, protocol: HTTP, name: http}}
                defaultEndpoint: 127.0.0.1:{ports[app]}
            """)
        )
    (config / "mesh.yaml").write_text("---\n".join(docs))


def write_mesh_and_start_apps(config: Path, net: str) -> list[EchoApp]:
    """`write_mesh` with each app on a free port of 127.0.0.1, and the echo apps the
    sidecars forward to, started (the caller stops them: `running`)."""
    ports = {app: free_port() for app in APPS}
    write_mesh(config, net, ports)
    return [EchoApp(app, "127.0.0.1", port).start() for app, port in ports.items()]


class TcpEcho:
    """Echoes the first bytes of each TCP connection back."""

    def __init__(self, host: str, port: int) -> None:
        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data = self.request.recv(100)
                if data:
                    self.request.sendall(data)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server((host, port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> TcpEcho:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# db: a TCP service on <net>.13:3306, its sidecar forwarding to a TcpEcho.
DB = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: db, namespace: default}}
spec:
  hosts: [db.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 3306, name: tcp, protocol: TCP}}]
  workloadSelector: {{labels: {{app: db}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: db, namespace: default}}
spec: {{address: {net}.13, labels: {{app: db}}, serviceAccount: db}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: db, namespace: default}}
spec:
  workloadSelector: {{labels: {{app: db}}}}
  ingress:
  - port: {{number: 3306, protocol: TCP, name: tcp}}
    defaultEndpoint: 127.0.0.1:{port}
"""


def add_db(config: Path, net: str) -> TcpEcho:
    """`db.yaml` in `config`, and the TCP echo its sidecar forwards to, started."""
    port = free_port()
    (config / "db.yaml").write_text(DB.format(net=net, port=port))
    return TcpEcho("127.0.0.1", port).start()


def start_sidecar(
    plane: ControlPlaneThread, config: Path, workdir: Path, name: str, *, delta: bool = False
) -> Envoy:
    loaded = load_paths([config]).config
    assert loaded is not None
    workload = loaded.workload(name)
    assert workload is not None
    identity = plane.plane.identity
    assert identity is not None
    options = BootstrapOptions(
        xds_address=plane.xds_address,
        delta=delta,
        admin_port=free_port(workload.address),
        token=identity.tokens.token(workload.proxy_id),
    )
    return Envoy(sidecar_bootstrap(workload, options), workdir, workload.proxy_id)


def reviews_via(
    proxy: str, path: str = "/", headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, bytes, dict[str, str]]:
    """A request to reviews through a sidecar's outbound proxy (`host:port`): the status,
    the body and the response headers (names in lower case)."""
    host, port = proxy.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request(
            method,
            f"http://reviews:9080{path}",
            headers={"Host": "reviews:9080", **(headers or {})},
        )
        resp = conn.getresponse()
        return resp.status, resp.read(), {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def call(proxy: str, url: str) -> tuple[int, dict[str, Any]]:
    """GET through a sidecar's outbound proxy; the echo app's JSON (or {})."""
    status, body = via_proxy(proxy, url)
    try:
        return status, json.loads(body)
    except ValueError:
        return status, {"raw": body}


def direct(url: str) -> tuple[int, dict[str, Any]]:
    status, body = get(url, timeout=2)
    try:
        return status, json.loads(body)
    except ValueError:
        return status, {"raw": body}


def xfcc(reply: dict[str, Any]) -> str:
    return str(reply.get("headers", {}).get("x-forwarded-client-cert", ""))


def envoy_certificate_chain(envoy: Envoy) -> bytes:
    """The `default` secret's chain as Envoy holds it (config_dump redacts the key)."""
    dump = json.loads(get(envoy.admin + "/config_dump?resource=dynamic_active_secrets")[1])
    for entry in dump.get("configs", []):
        secret = entry.get("secret", {})
        if entry.get("name") == "default":
            chain = secret["tls_certificate"]["certificate_chain"]["inline_bytes"]
            return base64.b64decode(chain)
    raise AssertionError(f"envoy {envoy.name} holds no 'default' secret: {dump}")


def envoy_serials(envoy: Envoy) -> set[int]:
    """Serial numbers of the certificates Envoy currently uses (admin /certs)."""
    certs = json.loads(get(envoy.admin + "/certs")[1])
    serials = set()
    for entry in certs.get("certificates", []):
        for cert in entry.get("cert_chain", []):
            serials.add(int(cert["serial_number"], 16))
    return serials


def verify_with_cryptography(chain_pem: bytes, bundle_pem: bytes, when: Any) -> list[str]:
    """Verify a client chain against the roots with cryptography's verifier; its URI SANs."""
    certs = x509.load_pem_x509_certificates(chain_pem)
    roots = x509.load_pem_x509_certificates(bundle_pem)
    verifier = PolicyBuilder().store(Store(roots)).time(when).build_client_verifier()
    verified = verifier.verify(certs[0], certs[1:])
    assert verified.subjects is not None
    return [
        str(s.value) for s in verified.subjects if isinstance(s, x509.UniformResourceIdentifier)
    ]


class SourceRelay:
    """A TCP relay on 127.0.0.1 that dials `target` from `source` (an address of this
    machine): a gRPC client through it connects as if it ran on that address, as a
    sidecar's xDS connection does (its bootstrap binds it to the workload's address)."""

    def __init__(self, source: str, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self._target = (host, int(port))
        self._source = source
        self._server = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._server.getsockname()[1]}"
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._closed = False
        self._accept = threading.Thread(target=self._serve, daemon=True)
        self._accept.start()

    def _serve(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._target, 5, (self._source, 0))
            self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                thread = threading.Thread(target=self._pipe, args=(a, b), daemon=True)
                thread.start()
                self._threads.append(thread)

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def stop(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)  # wakes the accept()
        self._server.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a recv() in another thread
            with contextlib.suppress(OSError):
                sock.close()
        for thread in self._threads:
            thread.join(2)
        self._accept.join(2)

    def __enter__(self) -> SourceRelay:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def ask_secrets(
    plane: ControlPlaneThread,
    node_id: str,
    token: str | None,
    *,
    source: str = "127.0.0.1",
    names: tuple[str, ...] = ("default", "ROOTCA"),
) -> DiscoveryResponse:
    """The first answer to an SDS request over ADS, sent from `source`."""
    request = DiscoveryRequest(type_url=xds_types.SECRET, resource_names=list(names))
    request.node.id = node_id
    metadata = [(TOKEN_METADATA, token)] if token is not None else []
    with (
        SourceRelay(source, plane.xds_address) as relay,
        grpc.insecure_channel(relay.address) as channel,
    ):
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        stream = stub.StreamAggregatedResources(iter([request]), timeout=5, metadata=metadata)
        return next(stream)


def secrets_of(response: DiscoveryResponse) -> dict[str, secret_pb2.Secret]:
    out = {}
    for packed in response.resources:
        secret = secret_pb2.Secret()
        packed.Unpack(secret)
        out[secret.name] = secret
    return out


class SdsStream:
    """A proxy's SDS over ADS, kept open: every response it gets is ACKed and kept."""

    def __init__(self, plane: ControlPlaneThread, node_id: str, source: str) -> None:
        import queue

        self._requests: queue.Queue[DiscoveryRequest | None] = queue.Queue()
        self.responses: queue.Queue[DiscoveryResponse] = queue.Queue()
        self.relay = SourceRelay(source, plane.xds_address)
        self.channel = grpc.insecure_channel(self.relay.address)
        token = plane.plane.identity.tokens.token(node_id)
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel)
        self.call = stub.StreamAggregatedResources(
            iter(self._requests.get, None), metadata=[(TOKEN_METADATA, token)]
        )
        first = DiscoveryRequest(type_url=xds_types.SECRET, resource_names=["default", "ROOTCA"])
        first.node.id = node_id
        self._requests.put(first)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        with contextlib.suppress(grpc.RpcError):
            for response in self.call:
                self.responses.put(response)
                self._requests.put(
                    DiscoveryRequest(
                        type_url=response.type_url,
                        resource_names=["default", "ROOTCA"],
                        version_info=response.version_info,
                        response_nonce=response.nonce,
                    )
                )

    def next_secrets(self, timeout: float = 10) -> dict[str, secret_pb2.Secret]:
        return secrets_of(self.responses.get(timeout=timeout))

    def stop(self) -> None:
        self._requests.put(None)
        self.call.cancel()
        self.channel.close()
        self.relay.stop()


def leaf_of(secrets: dict[str, secret_pb2.Secret]) -> x509.Certificate:
    chain = secrets["default"].tls_certificate.certificate_chain.inline_bytes
    return x509.load_pem_x509_certificates(chain)[0]


def svid_uris(secrets: dict[str, secret_pb2.Secret]) -> list[str]:
    """The URI SANs of the workload certificate (`default`) an SDS answer holds."""
    san = leaf_of(secrets).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return list(san.value.get_values_for_type(x509.UniformResourceIdentifier))


def roots_of(secrets: dict[str, secret_pb2.Secret]) -> list[x509.Certificate]:
    pem = secrets["ROOTCA"].validation_context.trusted_ca.inline_bytes
    return x509.load_pem_x509_certificates(pem)
