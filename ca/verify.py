"""Verifying presented certificate chains against a trust bundle.

The chain itself is checked by `cryptography.x509.verification` (web-PKI rules:
signatures, validity, basic constraints, EKU, AKI/SKI path building). Around it we
add the SPIFFE parts and clear reasons: the leaf must be a well-formed X.509-SVID
(`ca.svid.spiffe_id_of_svid`), its SPIFFE ID must be in the expected trust domain, and
failures say *which* certificate expired or that the root is simply not in the bundle.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.verification import PolicyBuilder, VerificationError

from ca.bundle import TrustBundle
from ca.certificates import key_id_hex, load_pem_certificates, uri_sans
from ca.clock import Clock, ensure_utc, utc_now
from ca.errors import (
    CertificateExpired,
    CertificateNotYetValid,
    CertificateParseError,
    ChainInvalid,
    InvalidSvid,
    TrustDomainMismatch,
    UnknownRoot,
)
from ca.spiffe_id import SpiffeId
from ca.svid import spiffe_id_of_svid

__all__ = ["Usage", "as_bundle", "verify_chain", "verify_svid"]

Usage = Literal["client", "server"]


def as_bundle(bundle: TrustBundle | bytes | str) -> TrustBundle:
    return bundle if isinstance(bundle, TrustBundle) else TrustBundle.from_pem(bundle)


def _describe(cert: x509.Certificate, position: int) -> str:
    role = "leaf" if position == 0 else f"intermediate #{position}"
    name = cert.subject.rfc4514_string() or next(iter(uri_sans(cert)), "<empty subject>")
    return f"{role} {name}"


def _check_validity(chain: Sequence[x509.Certificate], now: datetime) -> None:
    for i, cert in enumerate(chain):
        if now > cert.not_valid_after_utc:
            raise CertificateExpired(
                f"{_describe(cert, i)} expired at {cert.not_valid_after_utc.isoformat()} "
                f"(now {now.isoformat()})"
            )
        if now < cert.not_valid_before_utc:
            raise CertificateNotYetValid(
                f"{_describe(cert, i)} is not valid before "
                f"{cert.not_valid_before_utc.isoformat()} (now {now.isoformat()})"
            )


def _signed_by_bundle(chain: Sequence[x509.Certificate], bundle: TrustBundle) -> bool:
    for cert in chain:
        for root in bundle:
            try:
                cert.verify_directly_issued_by(root)
                return True
            except (InvalidSignature, ValueError, TypeError):
                continue
    return False


def verify_chain(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    bundle: TrustBundle,
    now: datetime,
    *,
    usage: Usage = "client",
    server_name: x509.verification.Subject | None = None,
) -> list[x509.Certificate]:
    """Verify `leaf` (+ `intermediates`) up to a root of `bundle`; return the built chain.

    `usage` picks the verifier: "client" needs EKU clientAuth, "server" needs serverAuth
    and a `server_name` (a `x509.DNSName` or `x509.IPAddress`) that the leaf must match.

    Raises:
        CertificateExpired / CertificateNotYetValid: a certificate outside its validity.
        UnknownRoot: no certificate of the chain is signed by a root of the bundle.
        ChainInvalid: anything else the X.509 verifier rejects (its message included).
    """
    now = ensure_utc(now)
    chain = [leaf, *intermediates]
    _check_validity(chain, now)
    builder = PolicyBuilder().store(bundle.store()).time(now)
    try:
        if usage == "server":
            if server_name is None:
                raise ChainInvalid("server verification needs a server name to match")
            return builder.build_server_verifier(server_name).verify(leaf, list(intermediates))
        return builder.build_client_verifier().verify(leaf, list(intermediates)).chain
    except VerificationError as exc:
        if not _signed_by_bundle(chain, bundle):
            top = chain[-1]
            raise UnknownRoot(
                f"the chain does not lead to any root in the trust bundle: "
                f"{_describe(top, len(chain) - 1)} was issued by "
                f"{top.issuer.rfc4514_string()!r}, which is not one of the bundle's "
                f"{len(bundle)} root(s) (key ids "
                f"{', '.join(key_id_hex(r)[:16] for r in bundle)})"
            ) from exc
        raise ChainInvalid(f"certificate chain rejected: {exc}") from exc


def verify_svid(
    chain_pem: bytes | str,
    trust_bundle_pem: TrustBundle | bytes | str,
    now: datetime | None = None,
    *,
    trust_domain: str | None = None,
    clock: Clock = utc_now,
) -> SpiffeId:
    """Verify a presented X.509-SVID chain (leaf first) and return its SPIFFE ID.

    The expected trust domain is `trust_domain` if given, else the one named by the
    bundle's roots (their ``spiffe://<td>`` URI SAN) when they agree on exactly one;
    otherwise any trust domain is accepted. `now` defaults to `clock()`.

    Raises:
        CertificateParseError: the bundle is not PEM certificates.
        InvalidSvid: the chain is not PEM, or the leaf breaks an X509-SVID rule.
        TrustDomainMismatch: the SPIFFE ID is from another trust domain.
        CertificateExpired / CertificateNotYetValid / UnknownRoot / ChainInvalid:
            see `verify_chain`.
    """
    bundle = as_bundle(trust_bundle_pem)
    try:
        chain = load_pem_certificates(chain_pem, source="presented chain")
    except CertificateParseError as exc:
        raise InvalidSvid(str(exc)) from exc
    spiffe_id = spiffe_id_of_svid(chain[0])
    expected = trust_domain
    if expected is None and len(bundle.trust_domains) == 1:
        (expected,) = bundle.trust_domains
    if expected is not None and spiffe_id.trust_domain != expected:
        raise TrustDomainMismatch(
            f"{spiffe_id} is in trust domain {spiffe_id.trust_domain!r}, expected {expected!r}"
        )
    verify_chain(chain[0], chain[1:], bundle, now if now is not None else clock())
    return spiffe_id
