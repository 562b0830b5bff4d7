"""Citadel's exception tree: one base, one class per thing a caller may want to catch.

    CaError
    ├── InvalidSpiffeId          a string is not a SPIFFE ID (spiffe_id.py)
    ├── InvalidTtl               a requested lifetime is too short or too long
    ├── InvalidKeyType           unknown key type or too-small RSA key
    ├── CertificateParseError    bytes that should be PEM certificates/keys are not
    ├── InvalidCaCertificate     a certificate/key pair that cannot act as a signing CA
    ├── IssuanceError            the CA cannot sign this (foreign trust domain, expired CA)
    ├── CaDirError               the on-disk CA directory is missing, partial or inconsistent
    │   ├── CaDirExists          init refused: a CA is already there
    │   └── CaDirNotFound        load found no CA files
    ├── RotationError            a root-rotation step is not allowed now
    └── SvidVerificationError    a presented chain is not a valid SVID for the bundle
        ├── InvalidSvid          structure breaks the X509-SVID standard
        ├── CertificateExpired   a certificate is past its NotAfter
        ├── CertificateNotYetValid  before its NotBefore
        ├── TrustDomainMismatch  valid chain, SPIFFE ID from another trust domain
        ├── UnknownRoot          the chain leads to no root in the bundle
        └── ChainInvalid         anything else the X.509 verifier rejected

Value errors (bad input) also derive from `ValueError` so generic callers can catch them.
"""

from __future__ import annotations

__all__ = [
    "CaDirError",
    "CaDirExists",
    "CaDirNotFound",
    "CaError",
    "CertificateExpired",
    "CertificateNotYetValid",
    "CertificateParseError",
    "ChainInvalid",
    "InvalidCaCertificate",
    "InvalidKeyType",
    "InvalidSpiffeId",
    "InvalidSvid",
    "InvalidTtl",
    "IssuanceError",
    "RotationError",
    "SvidVerificationError",
    "TrustDomainMismatch",
    "UnknownRoot",
]


class CaError(Exception):
    """Base of every error raised by the `ca` package."""


class InvalidSpiffeId(CaError, ValueError):
    """A string is not a valid SPIFFE ID (or trust domain) per the SPIFFE standard."""

    def __init__(self, value: str, reason: str) -> None:
        self.value = value
        self.reason = reason
        super().__init__(f"invalid SPIFFE ID {value!r}: {reason}")


class InvalidTtl(CaError, ValueError):
    """A certificate lifetime outside the allowed range."""


class InvalidKeyType(CaError, ValueError):
    """An unsupported key type or size."""


class CertificateParseError(CaError, ValueError):
    """Bytes that should hold PEM certificates or a PEM private key could not be parsed."""


class InvalidCaCertificate(CaError, ValueError):
    """A certificate/key pair that cannot sign: not a CA, key mismatch, broken chain."""


class IssuanceError(CaError):
    """The CA refuses to sign: foreign trust domain, expired signing certificate, ..."""


class CaDirError(CaError):
    """The CA directory is unusable: partial, inconsistent, unreadable."""


class CaDirExists(CaDirError):
    """`init_ca_dir` refused to overwrite an existing CA."""


class CaDirNotFound(CaDirError):
    """No CA files (either layout) in the directory."""


class RotationError(CaError):
    """A root-rotation step was requested at a moment it is not allowed."""


class SvidVerificationError(CaError):
    """A presented certificate chain is not a valid X.509-SVID for the trust bundle."""


class InvalidSvid(SvidVerificationError):
    """The leaf breaks a MUST of the X509-SVID standard (SAN, CA flag, key usage, ...)."""


class CertificateExpired(SvidVerificationError):
    """A certificate of the chain is past its NotAfter."""


class CertificateNotYetValid(SvidVerificationError):
    """A certificate of the chain is before its NotBefore."""


class TrustDomainMismatch(SvidVerificationError):
    """The SPIFFE ID belongs to a trust domain other than the expected one."""


class UnknownRoot(SvidVerificationError):
    """The chain does not lead to any root of the trust bundle."""


class ChainInvalid(SvidVerificationError):
    """The X.509 verifier rejected the chain for another reason (signature, EKU, ...)."""
