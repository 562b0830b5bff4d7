"""Clients and certificates for the gateway TLS tests: real sockets, real handshakes.

`https_get` speaks TLS to a gateway (with or without a client certificate, with the
versions and ciphers a test picks) and sends one HTTP request; `tls_exchange` sends a
line over TLS and reads the answer (TLS-ended TCP, passthrough). A refused client
sees an exception (`Refused`), whichever way the server said no: a TLS alert, a reset,
a closed connection.
"""

from __future__ import annotations

import base64
import datetime
import http.client
import json
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from tests.traffic.tls_upstream import Pki

REFUSALS = (ssl.SSLError, ConnectionError, http.client.HTTPException, TimeoutError, OSError)


class Refused(AssertionError):
    """The server refused the client (handshake or first read)."""


@dataclass
class Answer:
    status: int
    data: dict[str, Any]
    peer_cn: str  # the server certificate's common name the client saw
    version: str
    cipher: str


def context(
    ca: Path,
    cert: tuple[Path, Path] | None = None,
    *,
    min_version: ssl.TLSVersion | None = None,
    max_version: ssl.TLSVersion | None = None,
    ciphers: str = "",
) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        ctx.load_cert_chain(*map(str, cert))
    if min_version is not None:
        ctx.minimum_version = min_version
    if max_version is not None:
        ctx.maximum_version = max_version
    if ciphers:
        ctx.set_ciphers(ciphers)
    return ctx


def _connect(address: str, sni: str, ctx: ssl.SSLContext, timeout: float) -> ssl.SSLSocket:
    host, port = address.rsplit(":", 1)
    raw = socket.create_connection((host, int(port)), timeout=timeout)
    try:
        return ctx.wrap_socket(raw, server_hostname=sni)
    except BaseException:
        raw.close()
        raise


def _peer_cn(tls: ssl.SSLSocket) -> str:
    der = tls.getpeercert(binary_form=True)
    if not der:
        return ""
    names = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(
        x509.NameOID.COMMON_NAME
    )
    return str(names[0].value) if names else ""


def https_get(
    address: str, sni: str, path: str, ctx: ssl.SSLContext, *, timeout: float = 5
) -> Answer:
    """GET `path` over TLS to `address`, naming `sni`; Refused if the server says no."""
    try:
        tls = _connect(address, sni, ctx, timeout)
    except REFUSALS as err:
        raise Refused(f"handshake with {address} ({sni}) refused: {err!r}") from err
    version, cipher = tls.version() or "", (tls.cipher() or ("",))[0]
    peer = _peer_cn(tls)
    conn = http.client.HTTPConnection(sni, timeout=timeout)
    conn.sock = tls
    try:
        conn.request("GET", path, headers={"Host": sni})
        resp = conn.getresponse()
        body = resp.read().decode(errors="replace")
    except REFUSALS as err:
        raise Refused(f"request to {address} ({sni}) refused: {err!r}") from err
    finally:
        conn.close()
    try:
        data = json.loads(body)
    except ValueError:
        data = {"body": body}
    return Answer(resp.status, data if isinstance(data, dict) else {}, peer, version, cipher)


def tls_exchange(address: str, sni: str, line: str, ctx: ssl.SSLContext, timeout: float = 5) -> str:
    """Send `line` over TLS, read until the server closes; Refused if it says no."""
    try:
        tls = _connect(address, sni, ctx, timeout)
    except REFUSALS as err:
        raise Refused(f"handshake with {address} ({sni}) refused: {err!r}") from err
    with tls:
        try:
            tls.sendall(line.encode())
            chunks = []
            while data := tls.recv(1024):
                chunks.append(data)
        except REFUSALS as err:
            raise Refused(f"exchange with {address} ({sni}) refused: {err!r}") from err
    if not chunks:
        raise Refused(f"{address} ({sni}) closed without answering")
    return b"".join(chunks).decode()


def revoke(pki: Pki, cert_file: Path, crl_file: Path) -> Path:
    """Write a CRL of `pki`'s CA that revokes the certificate in `cert_file`."""
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    now = datetime.datetime.now(datetime.UTC)
    revoked = (
        x509.RevokedCertificateBuilder()
        .serial_number(cert.serial_number)
        .revocation_date(now - datetime.timedelta(minutes=1))
        .build()
    )
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(pki.cert.subject)
        .last_update(now - datetime.timedelta(minutes=5))
        .next_update(now + datetime.timedelta(days=1))
        .add_revoked_certificate(revoked)
        .sign(pki.key, hashes.SHA256())
    )
    crl_file.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    return crl_file


def fingerprints(cert_file: Path) -> tuple[str, str]:
    """(hex SHA-256 of the certificate, base64 SHA-256 of its public key)."""
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    digest = cert.fingerprint(hashes.SHA256()).hex()
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    sha = hashes.Hash(hashes.SHA256())
    sha.update(spki)
    return digest, base64.b64encode(sha.finalize()).decode()


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()
