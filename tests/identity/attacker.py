"""A local attacker: run as another user (`nobody`) against a running mesh, it tries
every route to a workload's key or token we know of and reports what it got.

It is given no secret, only what any local user can see (addresses, pids, paths);
the test scans what it reports for the secrets. Run as a script:

    python tests/identity/attacker.py < plan.json > loot.json

plan: {"paths": [...], "pids": [...], "admins": ["HOST:PORT"], "read_only_admin": bool,
       "debug": "HOST:PORT", "xds": "HOST:PORT", "workloads": {"node id": "address"}}
loot: {"uid", "read": {path: text}, "denied": {path: error}, "admin": {"GET url": [status,
       body]}, "debug": {...}, "xds": {"node/attempt": "what happened"}}
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import socket
import ssl
import sys
import tempfile
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

READS = [
    "/", "/help", "/ready", "/server_info", "/config_dump", "/config_dump?include_eds",
    "/config_dump?resource=dynamic_active_secrets", "/config_dump?resource=static_clusters",
    "/config_dump?mask=bootstrap", "/certs", "/stats", "/stats?format=json",
    "/stats/prometheus", "/clusters", "/clusters?format=json", "/listeners", "/runtime",
    "/memory", "/init_dump",
]  # fmt: skip
# Everything that changes, stops or drains a sidecar, and the same through path tricks.
WRITES = [
    "/quitquitquit", "/logging?level=trace", "/logging?paths=admin:trace",
    "/runtime_modify?envoy.reloadable_features.x=false", "/drain_listeners",
    "/drain_listeners?inboundonly", "/healthcheck/fail", "/reset_counters", "/reopen_logs",
    "/cpuprofiler?enable=y", "/heapprofiler?enable=y", "/heap_dump",
    "/stats/recentlookups/enable", "/stats/recentlookups/clear", "/tap",
    "/ready/../quitquitquit", "/%71uitquitquit", "//quitquitquit", "/Quitquitquit",
    "/stats/../quitquitquit", "/ready%2F..%2Fquitquitquit", "/ready?/../../quitquitquit",
]  # fmt: skip
TOKEN = re.compile(r'"key": "x-pocketmesh-token",\s*"value": "([0-9a-f]{64})"')
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes.fromhex("000000040000000000")


def fetch(address: str, path: str, method: str = "GET") -> list[Any]:
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return [resp.status, resp.read().decode(errors="replace")]
    except (OSError, http.client.HTTPException) as err:
        return [0, f"{type(err).__name__}: {err}"]
    finally:
        conn.close()


def read_everything(paths: list[str], loot: dict[str, Any]) -> None:
    for top in paths:
        for path in [top, *walk(top, loot)]:
            if os.path.isdir(path):
                continue
            try:
                loot["read"][path] = Path(path).read_text(errors="replace")
            except OSError as err:
                loot["denied"][path] = f"{type(err).__name__}: {err.strerror}"


def walk(top: str, loot: dict[str, Any]) -> list[str]:
    found = []
    for root, dirs, files in os.walk(top, onerror=lambda e: loot["denied"].update(
            {e.filename: f"{type(e).__name__}: {e.strerror}"})):  # fmt: skip
        found += [os.path.join(root, name) for name in files + dirs]
    return found


def proc(pids: list[int], loot: dict[str, Any]) -> None:
    for pid in pids:
        for name in ("environ", "cmdline", "maps", "mem", "fd/0", "cwd/."):
            path = f"/proc/{pid}/{name}"
            try:
                if name == "mem":
                    with open(path, "rb") as f:
                        loot["read"][path] = f.read(4096).hex()
                elif name.endswith("/."):
                    loot["read"][path] = repr(os.listdir(path))
                else:
                    loot["read"][path] = Path(path).read_bytes().decode(errors="replace")
            except OSError as err:
                loot["denied"][path] = f"{type(err).__name__}: {err.strerror}"
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                loot["read"][f"/proc/{pid}/fd/{fd}"] = os.readlink(f"/proc/{pid}/fd/{fd}")


def admins(addresses: list[str], writes: bool, loot: dict[str, Any]) -> None:
    for address in addresses:
        for path in READS:
            loot["admin"][f"GET {address}{path}"] = fetch(address, path)
        for path in WRITES if writes else ():
            loot["admin"][f"POST {address}{path}"] = fetch(address, path, "POST")


def debug(address: str, nodes: list[str], loot: dict[str, Any]) -> None:
    paths = ["/", "/ready", "/metrics", "/debug/config", "/debug/syncz", "/debug/ca", "/ui/state"]
    for node in nodes:
        dump = f"/debug/config_dump?proxy={node}"
        paths += [dump, f"{dump}&type=secret"]
    for path in paths:
        loot["debug"][f"GET {path}"] = fetch(address, path)


class Relay:
    """Listens on 127.0.0.1 and dials `target` from `source`: a client through it
    connects as if from the workload's address (any local user may bind any 127.x)."""

    def __init__(self, source: str, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.target, self.source = (host, int(port)), source
        self.server = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.server.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.server.accept()
                upstream = socket.create_connection(self.target, 5, (self.source, 0))
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.server.close()


def ask_plaintext(xds: str, node: str, source: str, token: str | None) -> str:
    """An SDS request over plaintext gRPC from the workload's address, with a guessed
    token (or none): what came back."""
    import grpc
    from envoy.service.discovery.v3 import ads_pb2_grpc
    from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest

    request = DiscoveryRequest(
        type_url="type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
        resource_names=["default", "ROOTCA"],
    )
    request.node.id = node
    metadata = [("x-pocketmesh-token", token)] if token is not None else []
    relay = Relay(source, xds)
    try:
        with grpc.insecure_channel(relay.address) as channel:
            stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
            stream = stub.StreamAggregatedResources(iter([request]), timeout=5, metadata=metadata)
            response = next(stream)
            return f"RESPONSE with {len(response.resources)} resources: {response}"
    except grpc.RpcError as err:
        return f"refused: {err.code()} {err.details()}"  # type: ignore[attr-defined]
    except Exception as err:
        return f"refused: {type(err).__name__}: {err}"
    finally:
        relay.close()


def self_signed_claiming(node: str) -> tuple[str, str]:
    """A client certificate naming `node` the way a credential does, signed by itself."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pocketmesh xDS client CA")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.UniformResourceIdentifier(f"urn:pocketmesh:xds-client:{node}")]), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), pem.decode()


def tls_probe(xds: str, source: str, cert: tuple[str, str] | None = None) -> str:
    """A TLS handshake with the xDS port from `source` (the server not verified: the
    attacker has nothing to verify it by), then HTTP/2's preface: "accepted" if the
    server answers with HTTP/2 frames, else how the server ended it."""
    host, port = xds.rsplit(":", 1)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    if cert is not None:
        with tempfile.TemporaryDirectory() as tmp:
            chain, key = Path(tmp, "c.pem"), Path(tmp, "k.pem")
            chain.write_text(cert[0])
            key.write_text(cert[1])
            context.load_cert_chain(chain, key)
    try:
        raw = socket.create_connection((host, int(port)), 5, (source, 0))
        with raw, context.wrap_socket(raw) as tls:
            tls.sendall(H2_PREFACE)
            data = tls.recv(64)
            return f"accepted: {data.hex()}" if data else "refused: closed by the server"
    except (OSError, ssl.SSLError) as err:
        return f"refused: {type(err).__name__}: {err}"


def impostors(xds: str, workloads: dict[str, str], loot: dict[str, Any]) -> None:
    # Any token an admin showed (a plaintext bootstrap's gRPC metadata), tried for every
    # workload: the whole attack this suite exists for.
    shown = {t for _, body in loot["admin"].values() for t in TOKEN.findall(body)}
    for node, address in workloads.items():
        tries = [("no-token", None), ("guessed-token", "0" * 64)]
        tries += [(f"token-{token[:8]}-from-an-admin", token) for token in sorted(shown)]
        for name, token in tries:
            loot["xds"][f"{node}/plaintext-{name}"] = ask_plaintext(xds, node, address, token)
        loot["xds"][f"{node}/tls-no-certificate"] = tls_probe(xds, address)
        claim = self_signed_claiming(node)
        loot["xds"][f"{node}/tls-self-signed-certificate"] = tls_probe(xds, address, claim)


def main() -> None:
    plan = json.load(sys.stdin)
    loot: dict[str, Any] = {
        "uid": os.getuid(), "read": {}, "denied": {}, "admin": {}, "debug": {}, "xds": {},
    }  # fmt: skip
    read_everything(plan["paths"], loot)
    proc(plan["pids"], loot)
    admins(plan["admins"], plan["read_only_admin"], loot)
    debug(plan["debug"], list(plan["workloads"]), loot)
    impostors(plan["xds"], plan["workloads"], loot)
    json.dump(loot, sys.stdout)


if __name__ == "__main__":
    main()
