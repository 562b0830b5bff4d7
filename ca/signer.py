"""`Signer`: the key material one CA generation signs with, checked once, reused per issue.

A signer is a CA certificate, its private key, the intermediates above it (if any) and
the trust anchors (roots) the chain ends in. For pocketmesh's own self-signed root the
certificate *is* the anchor and there are no intermediates; for an Istio ``cacerts``
plug-in the certificate is an intermediate signed by an external root.

Everything an issue needs and that does not change per certificate — the issuer name,
the Authority Key Identifier, the digest, the PEM of the intermediates, the NotAfter
cap — is computed here once, so issuing does no parsing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from ca.certificates import certificates_to_pem, is_self_signed, key_id_hex
from ca.errors import InvalidCaCertificate
from ca.keys import PrivateKey, SignatureHash, signature_hash

__all__ = ["Signer"]


def _check_is_ca(cert: x509.Certificate, what: str) -> None:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise InvalidCaCertificate(f"{what} has no basicConstraints: not a CA") from None
    if not bc.ca:
        raise InvalidCaCertificate(f"{what} has basicConstraints CA=false: not a CA")
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return  # key usage absent means "any"; RFC 5280 allows it
    if not ku.key_cert_sign:
        raise InvalidCaCertificate(f"{what} key usage lacks keyCertSign")


def _check_issued_by(child: x509.Certificate, parent: x509.Certificate, what: str) -> None:
    try:
        child.verify_directly_issued_by(parent)
    except (InvalidSignature, ValueError, TypeError) as exc:
        raise InvalidCaCertificate(
            f"{what}: {child.subject.rfc4514_string()!r} is not signed by "
            f"{parent.subject.rfc4514_string()!r} ({exc or type(exc).__name__})"
        ) from exc


class Signer:
    """A validated CA certificate + key, with the chain to its trust anchors."""

    __slots__ = (
        "_aki",
        "_anchors",
        "_certificate",
        "_hash",
        "_intermediates",
        "_intermediates_pem",
        "_key_id",
        "_not_after",
        "_private_key",
        "_root",
    )

    def __init__(
        self,
        certificate: x509.Certificate,
        private_key: PrivateKey,
        *,
        chain: Sequence[x509.Certificate] = (),
        anchors: Sequence[x509.Certificate] | None = None,
    ) -> None:
        """Check and wrap a signing certificate.

        Args:
            certificate: the CA certificate whose key signs.
            private_key: its private key.
            chain: certificates above `certificate`, nearest first; copies of
                `certificate` and of any anchor are dropped (so Istio's ``cert-chain.pem``,
                which repeats both, can be passed as is).
            anchors: the trusted roots; defaults to `certificate` itself, which must then
                be self-signed.

        Raises:
            InvalidCaCertificate: not a CA, key does not match, or the chain is broken.
        """
        _check_is_ca(certificate, "signing certificate")
        if certificate.public_key() != private_key.public_key():
            raise InvalidCaCertificate("private key does not match the signing certificate")
        if anchors is None:
            if not is_self_signed(certificate):
                raise InvalidCaCertificate(
                    "signing certificate is not self-signed, so its root must be given"
                )
            anchors = (certificate,)
        if not anchors:
            raise InvalidCaCertificate("no trust anchor (root certificate) given")
        for root in anchors:
            _check_is_ca(root, f"root {root.subject.rfc4514_string()!r}")
        anchor_set = set(anchors)
        path: list[x509.Certificate] = []
        if certificate not in anchor_set:
            path.append(certificate)
            path.extend(c for c in chain if c != certificate and c not in anchor_set)
        for i, cert in enumerate(path[1:], start=1):
            _check_is_ca(cert, f"intermediate {cert.subject.rfc4514_string()!r}")
            _check_issued_by(path[i - 1], cert, "certificate chain")
        root_of_path = certificate
        if path:
            top = path[-1]
            for root in anchors:
                try:
                    top.verify_directly_issued_by(root)
                    root_of_path = root
                    break
                except (InvalidSignature, ValueError, TypeError):
                    continue
            else:
                raise InvalidCaCertificate(
                    f"certificate chain: {top.subject.rfc4514_string()!r} (issuer "
                    f"{top.issuer.rfc4514_string()!r}) is not signed by any given root"
                )

        self._certificate = certificate
        self._private_key = private_key
        self._anchors: tuple[x509.Certificate, ...] = tuple(anchors)
        self._root = root_of_path
        self._intermediates: tuple[x509.Certificate, ...] = tuple(path)
        self._intermediates_pem = certificates_to_pem(path)
        self._hash = signature_hash(private_key)
        self._key_id = key_id_hex(certificate)
        self._aki = x509.AuthorityKeyIdentifier(
            key_identifier=bytes.fromhex(self._key_id),
            authority_cert_issuer=None,
            authority_cert_serial_number=None,
        )
        self._not_after = min(c.not_valid_after_utc for c in (*path, *self._anchors))

    @property
    def certificate(self) -> x509.Certificate:
        return self._certificate

    @property
    def private_key(self) -> PrivateKey:
        return self._private_key

    @property
    def anchors(self) -> tuple[x509.Certificate, ...]:
        """The roots this signer chains to (its own certificate for a self-signed root)."""
        return self._anchors

    @property
    def root(self) -> x509.Certificate:
        """The root certificate this signer's leaves chain to."""
        return self._root

    @property
    def intermediates(self) -> tuple[x509.Certificate, ...]:
        """What goes after a leaf in a presented chain: signer first, up to but not
        including the root. Empty when the signer is the root itself."""
        return self._intermediates

    @property
    def intermediates_pem(self) -> bytes:
        return self._intermediates_pem

    @property
    def is_self_signed_root(self) -> bool:
        return not self._intermediates

    @property
    def subject(self) -> x509.Name:
        return self._certificate.subject

    @property
    def key_id(self) -> str:
        """Hex Subject Key Identifier of the signing certificate."""
        return self._key_id

    @property
    def authority_key_identifier(self) -> x509.AuthorityKeyIdentifier:
        return self._aki

    @property
    def hash_algorithm(self) -> SignatureHash:
        return self._hash

    @property
    def not_before(self) -> datetime:
        return self._certificate.not_valid_before_utc

    @property
    def not_after(self) -> datetime:
        """The earliest NotAfter on the path to the root: no leaf may outlive it."""
        return self._not_after

    def __repr__(self) -> str:
        return (
            f"Signer(subject={self.subject.rfc4514_string()!r}, key_id={self._key_id[:16]}, "
            f"intermediates={len(self._intermediates)}, not_after={self._not_after.isoformat()})"
        )
