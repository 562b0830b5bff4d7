"""Private keys: generation, PEM in and out, naming, and the hash to sign with.

Only the key types that both Envoy (BoringSSL) and `cryptography`'s web-PKI verifier
accept: ECDSA on P-256/P-384/P-521 and RSA of at least 2048 bits. New keys are
ECDSA P-256 ("ec", the default) or RSA ("rsa", 2048 bits unless told otherwise).
Private keys are written as unencrypted PKCS#8 PEM, the form the `spiffe` library
and Envoy both read.
"""

from __future__ import annotations

from typing import Literal, TypeAlias

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ca.errors import CertificateParseError, InvalidKeyType

__all__ = [
    "DEFAULT_RSA_BITS",
    "KEY_TYPES",
    "MIN_RSA_BITS",
    "KeyType",
    "PrivateKey",
    "PublicKey",
    "SignatureHash",
    "describe_public_key",
    "generate_private_key",
    "key_type_of",
    "load_private_key_pem",
    "private_key_to_pem",
    "signature_hash",
]

KeyType: TypeAlias = Literal["ec", "rsa"]
KEY_TYPES: tuple[KeyType, ...] = ("ec", "rsa")
PrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey: TypeAlias = ec.EllipticCurvePublicKey | rsa.RSAPublicKey
SignatureHash: TypeAlias = hashes.SHA256 | hashes.SHA384 | hashes.SHA512

DEFAULT_RSA_BITS = 2048
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 8192

_CURVE_NAMES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
_P256 = ec.SECP256R1()


def _check_rsa_bits(bits: int) -> None:
    if bits < MIN_RSA_BITS or bits > MAX_RSA_BITS or bits % 256:
        raise InvalidKeyType(
            f"RSA key size must be a multiple of 256 from {MIN_RSA_BITS} to {MAX_RSA_BITS}, "
            f"not {bits}"
        )


def generate_private_key(key_type: KeyType = "ec", rsa_bits: int = DEFAULT_RSA_BITS) -> PrivateKey:
    """A new ECDSA P-256 key ("ec") or RSA key of `rsa_bits` bits ("rsa")."""
    if key_type == "ec":
        return ec.generate_private_key(_P256)
    if key_type == "rsa":
        _check_rsa_bits(rsa_bits)
        return rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
    raise InvalidKeyType(f"key type must be one of {', '.join(KEY_TYPES)}, not {key_type!r}")


def private_key_to_pem(key: PrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM (``-----BEGIN PRIVATE KEY-----``)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_private_key_pem(data: bytes, *, source: str = "private key") -> PrivateKey:
    """Load an unencrypted PEM private key (PKCS#8, SEC1 or PKCS#1) of a supported type.

    Raises:
        CertificateParseError: not a PEM key, or encrypted.
        InvalidKeyType: a key type we cannot sign with (Ed25519, DSA, small RSA, ...).
    """
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise CertificateParseError(
            f"{source}: not an unencrypted PEM private key ({exc})"
        ) from exc
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.name not in _CURVE_NAMES:
            raise InvalidKeyType(f"{source}: unsupported EC curve {key.curve.name}")
        return key
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise InvalidKeyType(
                f"{source}: RSA key of {key.key_size} bits; need >= {MIN_RSA_BITS}"
            )
        return key
    raise InvalidKeyType(f"{source}: unsupported key type {type(key).__name__}")


def key_type_of(key: PrivateKey | PublicKey) -> KeyType:
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return "ec"
    return "rsa"


def describe_public_key(key: object) -> str:
    """Human name of a public key: ``EC P-256``, ``RSA 2048``, or the class name."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {_CURVE_NAMES.get(key.curve.name, key.curve.name)}"
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    return type(key).__name__.removeprefix("_").replace("PublicKey", "") or "unknown"


def signature_hash(key: PrivateKey) -> SignatureHash:
    """The digest to sign with: matched to the curve for EC, SHA-256 for RSA."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.key_size > 384:
            return hashes.SHA512()
        if key.curve.key_size > 256:
            return hashes.SHA384()
    return hashes.SHA256()
