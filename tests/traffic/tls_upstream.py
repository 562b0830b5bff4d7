"""A TLS upstream for the DestinationRule TLS tests: a real Python `ssl` server.

It records what arrives on every connection before any TLS is spoken (the first
bytes, peeked), so a test can prove the proxy never sent plaintext; then it does
the handshake (requiring and checking a client certificate when `mutual`), and
answers each HTTP request with JSON: the SNI it was asked for and the client
certificate's common name. Binds 127/8 only; `stop()` closes everything.
"""

from __future__ import annotations

import datetime
import http.server
import json
import socket
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TLS_HANDSHAKE = 0x16  # the first byte of a TLS record carrying a ClientHello


@dataclass
class Pki:
    """PEM files of one CA and the certificates it signed, under `root`."""

    root: Path
    name: str
    key: ec.EllipticCurvePrivateKey = field(init=False)
    cert: x509.Certificate = field(init=False)

    def __post_init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = _name(f"{self.name} CA")
        self.cert = (
            _builder(subject, subject, self.key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )
        self.root.mkdir(parents=True, exist_ok=True)
        self.ca_file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    @property
    def ca_file(self) -> Path:
        return self.root / f"{self.name}-ca.crt"

    def issue(
        self, common_name: str, *, dns: tuple[str, ...] = (), client: bool = False
    ) -> tuple[Path, Path]:
        """(certificate file, key file) for `common_name`, with DNS SANs."""
        key = ec.generate_private_key(ec.SECP256R1())
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = (
            _builder(_name(common_name), self.cert.subject, key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if dns:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(d) for d in dns]), critical=False
            )
        cert = builder.sign(self.key, hashes.SHA256())
        cert_file = self.root / f"{common_name}.crt"
        key_file = self.root / f"{common_name}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return cert_file, key_file


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: x509.Name, issuer: x509.Name, public: Any) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


@dataclass
class Connection:
    first_bytes: bytes = b""
    sni: str | None = None
    handshake_error: str = ""
    requests: int = 0


class TlsUpstream:
    """An HTTPS server on `host:port`; with `mutual`, it requires a client certificate
    signed by `client_ca`."""

    def __init__(
        self,
        host: str,
        cert: tuple[Path, Path],
        *,
        mutual: bool = False,
        client_ca: Path | None = None,
    ) -> None:
        self.host = host
        self.connections: list[Connection] = []
        self._lock = threading.Lock()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*cert)
        if mutual:
            assert client_ca is not None
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cafile=str(client_ca))
        context.sni_callback = self._sni
        self._context = context
        self._listener = socket.create_server((host, 0))
        self.port = int(self._listener.getsockname()[1])
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._stopped = threading.Event()

    def start(self) -> TlsUpstream:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._listener.close()
        self._thread.join(5)

    def reset(self) -> None:
        with self._lock:
            self.connections.clear()

    def seen(self) -> list[Connection]:
        with self._lock:
            return list(self.connections)

    def _sni(self, ssl_socket: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        record = getattr(ssl_socket, "_pocketmesh_record", None)
        if isinstance(record, Connection):
            record.sni = name

    def _serve(self) -> None:
        while not self._stopped.is_set():
            try:
                raw, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(raw,), daemon=True).start()

    def _handle(self, raw: socket.socket) -> None:
        record = Connection()
        with self._lock:
            self.connections.append(record)
        raw.settimeout(5)
        try:
            record.first_bytes = raw.recv(8, socket.MSG_PEEK)
            tls = self._context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
            tls._pocketmesh_record = record  # type: ignore[attr-defined]  # for _sni
            tls.do_handshake()
        except (OSError, ssl.SSLError) as err:
            record.handshake_error = str(err)
            raw.close()
            return
        peer = tls.getpeercert()
        client = ""
        for rdn in (peer or {}).get("subject", ()):
            for key, value in rdn:
                if key == "commonName":
                    client = value

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                record.requests += 1
                body = json.dumps({"sni": record.sni, "client": client}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                del args

        try:
            Handler(tls, (self.host, 0), None)  # type: ignore[arg-type]
        except OSError:
            pass
        finally:
            tls.close()
