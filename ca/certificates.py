"""Small X.509 helpers shared by the other modules: PEM lists, names, SANs, fingerprints."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization

from ca.errors import CertificateParseError

__all__ = [
    "certificates_to_pem",
    "fingerprint_sha256",
    "is_self_signed",
    "key_id_hex",
    "load_pem_certificates",
    "not_after",
    "not_before",
    "uri_sans",
]

_PEM_CERT_MARKER = b"-----BEGIN CERTIFICATE-----"


def load_pem_certificates(data: bytes | str, *, source: str = "input") -> list[x509.Certificate]:
    """Every certificate in a PEM blob, in order. Raises `CertificateParseError` if none."""
    raw = data.encode() if isinstance(data, str) else data
    if _PEM_CERT_MARKER not in raw:
        raise CertificateParseError(f"{source}: no PEM certificate found")
    try:
        return x509.load_pem_x509_certificates(raw)
    except ValueError as exc:
        raise CertificateParseError(f"{source}: malformed PEM certificate ({exc})") from exc


def certificates_to_pem(certs: Iterable[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def fingerprint_sha256(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def not_before(cert: x509.Certificate) -> datetime:
    return cert.not_valid_before_utc


def not_after(cert: x509.Certificate) -> datetime:
    return cert.not_valid_after_utc


def is_self_signed(cert: x509.Certificate) -> bool:
    """Issuer equals subject and the certificate's own key verifies its signature."""
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def key_id_hex(cert: x509.Certificate) -> str:
    """The Subject Key Identifier as hex (derived from the public key if absent).

    Stable across re-issues of a certificate with the same key, so it names a root's
    files on disk.
    """
    try:
        ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return ski.digest.hex()
    except x509.ExtensionNotFound:
        return x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest.hex()


def uri_sans(cert: x509.Certificate) -> Sequence[str]:
    """The URI entries of the subjectAltName extension ([] if there is none)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return san.get_values_for_type(x509.UniformResourceIdentifier)
