"""The trust bundle: the set of root certificates a workload should trust right now.

During a root rotation it holds both the old and the new root, so certificates from
either verify. Its PEM (`pem`) is what the secrets generator ships as ``ROOTCA``;
`version` is a content hash for change detection.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator

from cryptography import x509
from cryptography.x509.verification import Store

from ca.certificates import certificates_to_pem, fingerprint_sha256, load_pem_certificates
from ca.roots import trust_domain_of

__all__ = ["TrustBundle"]


class TrustBundle:
    """An immutable, ordered, duplicate-free set of trusted root certificates."""

    __slots__ = ("_pem", "_roots", "_store", "_version")

    def __init__(self, roots: Iterable[x509.Certificate]) -> None:
        unique: list[x509.Certificate] = []
        for cert in roots:
            if cert not in unique:
                unique.append(cert)
        if not unique:
            raise ValueError("a trust bundle needs at least one root certificate")
        self._roots = tuple(unique)
        self._pem = certificates_to_pem(self._roots)
        self._version = hashlib.sha256(self._pem).hexdigest()[:16]
        self._store: Store | None = None

    @classmethod
    def from_pem(cls, data: bytes | str, *, source: str = "trust bundle") -> TrustBundle:
        return cls(load_pem_certificates(data, source=source))

    @property
    def roots(self) -> tuple[x509.Certificate, ...]:
        return self._roots

    @property
    def pem(self) -> bytes:
        """All roots, concatenated PEM, in bundle order."""
        return self._pem

    @property
    def version(self) -> str:
        """A short content hash: equal bundles have equal versions."""
        return self._version

    @property
    def fingerprints(self) -> tuple[str, ...]:
        return tuple(fingerprint_sha256(c) for c in self._roots)

    @property
    def trust_domains(self) -> frozenset[str]:
        """Trust domains named by the roots' ``spiffe://<td>`` URI SANs (may be empty)."""
        return frozenset(td for c in self._roots if (td := trust_domain_of(c)) is not None)

    def store(self) -> Store:
        """A `cryptography.x509.verification.Store` of these roots (built once)."""
        if self._store is None:
            self._store = Store(list(self._roots))
        return self._store

    def __contains__(self, cert: object) -> bool:
        return cert in self._roots

    def __iter__(self) -> Iterator[x509.Certificate]:
        return iter(self._roots)

    def __len__(self) -> int:
        return len(self._roots)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TrustBundle) and self._pem == other._pem

    def __hash__(self) -> int:
        return hash(self._pem)

    def __repr__(self) -> str:
        subjects = ", ".join(c.subject.rfc4514_string() for c in self._roots)
        return f"TrustBundle({len(self._roots)} roots, version={self._version}: {subjects})"
