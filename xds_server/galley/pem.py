"""Checks on PEM certificates and keys, so that Envoy never rejects what Galley accepts.

Shared by Secrets (`tls.crt`, `tls.key`, `ca.crt`) and the files a DestinationRule
names (`clientCertificate`, `privateKey`, `caCertificates`). Each check returns None
when fine, else a phrase to put after the field: "is not a PEM certificate chain: ...".
"""

from __future__ import annotations

import warnings

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.utils import CryptographyDeprecationWarning

__all__ = [
    "certificates_problem",
    "crl_problem",
    "key_pair_problems",
    "key_type",
    "private_key_problem",
]


def _load_certificates(pem: str) -> list[x509.Certificate]:
    with warnings.catch_warnings():
        # System bundles hold old roots with non-positive serials: BoringSSL takes them.
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        return x509.load_pem_x509_certificates(pem.encode())


def certificates_problem(pem: str, what: str = "certificate bundle") -> str | None:
    """None if `pem` holds one or more PEM certificates."""
    try:
        _load_certificates(pem)
    except ValueError as err:
        return f"is not a PEM {what}: {err}"
    return None


def crl_problem(pem: str) -> str | None:
    """None if `pem` holds one or more PEM certificate revocation lists."""
    blocks = [b for b in pem.split("-----END X509 CRL-----") if "-----BEGIN X509 CRL-----" in b]
    if not blocks:
        return "is not a PEM certificate revocation list (no BEGIN X509 CRL block)"
    for block in blocks:
        try:
            x509.load_pem_x509_crl((block + "-----END X509 CRL-----\n").encode())
        except ValueError as err:
            return f"is not a PEM certificate revocation list: {err}"
    return None


def key_type(chain_pem: str) -> str:
    """What kind of key the chain's first certificate holds: Envoy serves one of each."""
    public = _load_certificates(chain_pem)[0].public_key()
    if isinstance(public, ec.EllipticCurvePublicKey):
        return f"ECDSA {public.curve.name}"
    return "RSA" if isinstance(public, rsa.RSAPublicKey) else type(public).__name__


def private_key_problem(pem: str) -> str | None:
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError) as err:
        return f"is not an unencrypted PEM private key: {err}"
    return _key_problem(key)


def key_pair_problems(chain_pem: str, key_pem: str) -> tuple[str | None, str | None]:
    """(problem with the chain, problem with the key): the chain must parse, the key
    must parse, be a kind Envoy serves, and match the chain's first certificate."""
    try:
        certs = _load_certificates(chain_pem)
    except ValueError as err:
        return f"is not a PEM certificate chain: {err}", None
    try:
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except (ValueError, TypeError) as err:
        return None, f"is not an unencrypted PEM private key: {err}"
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    public = key.public_key().public_bytes(serialization.Encoding.DER, spki)
    leaf = certs[0].public_key().public_bytes(serialization.Encoding.DER, spki)
    if public != leaf:
        return None, "does not match the first certificate of the chain"
    return None, _key_problem(key)


def _key_problem(key: object) -> str | None:
    """Envoy serves RSA keys of 2048 bits or more and ECDSA on P-256 or P-384."""
    if isinstance(key, rsa.RSAPrivateKey):
        return None if key.key_size >= 2048 else "is an RSA key under 2048 bits"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.name in ("secp256r1", "secp384r1"):
            return None
        return f"uses curve {key.curve.name}: Envoy takes P-256 or P-384"
    return "must be an RSA or ECDSA key"
