"""Secret (Kubernetes core v1, type kubernetes.io/tls): a Gateway's TLS certificate and key.

`kubectl create secret tls NAME --cert=... --key=... --dry-run=client -o yaml` prints
one; Gateway servers name it with `tls.credentialName`. Both halves are checked here
(PEM that parses, a key that matches the certificate) so Envoy never rejects them.
Secrets have no `spec`: their parser reads the whole document.
"""

from __future__ import annotations

import base64
import binascii

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ..model import ObjectMeta
from ..model_traffic import TLSCredential
from ..schema import DocChecker, Located, child_path
from ..yaml_lines import YamlMap

SECRET_FIELDS = frozenset({"type", "data", "stringData", "immutable"})
TLS_TYPE = "kubernetes.io/tls"
KEYS = ("tls.crt", "tls.key")


def parse_secret(ck: DocChecker, meta: ObjectMeta, doc: Located | None) -> TLSCredential | None:
    if doc is None or not isinstance(doc.value, YamlMap):
        return None
    before = len(ck.errors)
    root: YamlMap = doc.value

    def at(key: str) -> Located | None:
        if root.get(key) is None:
            return None
        return Located(root[key], key, root.key_lines.get(key, doc.line))

    type_at = at("type")
    if type_at is None or ck.string(type_at) != TLS_TYPE:
        ck.error(type_at or doc, f"pocketmesh reads Secrets of type {TLS_TYPE} only", path="type")
        return None
    values: dict[str, tuple[str, Located]] = {}
    given: set[str] = set()  # keys present, decodable or not
    if (data_at := at("data")) is not None:
        for key, value in (ck.string_map(data_at) or {}).items():
            given.add(key)
            path = child_path("data", key)
            item = Located(value, path, ck.lines.get(path, data_at.line))
            try:
                values[key] = (base64.b64decode(value, validate=True).decode(), item)
            except (binascii.Error, UnicodeDecodeError):
                ck.error(item, "must be base64-encoded PEM")
    if (string_at := at("stringData")) is not None:
        for key, value in (ck.string_map(string_at) or {}).items():
            given.add(key)
            path = child_path("stringData", key)
            values[key] = (value, Located(value, path, ck.lines.get(path, string_at.line)))
    for key in KEYS:
        if key not in given:
            ck.error(doc, f"needs {key} in data or stringData", path="data")
    if len(ck.errors) > before:
        return None
    cert_pem, cert_at = values["tls.crt"]
    key_pem, key_at = values["tls.key"]
    try:
        certs = x509.load_pem_x509_certificates(cert_pem.encode())
    except ValueError as err:
        ck.error(cert_at, f"is not a PEM certificate chain: {err}")
        return None
    try:
        private_key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except (ValueError, TypeError) as err:
        ck.error(key_at, f"is not an unencrypted PEM private key: {err}")
        return None
    public = private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    leaf = (
        certs[0]
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    if public != leaf:
        ck.error(key_at, "does not match the first certificate of tls.crt")
        return None
    if (problem := _key_problem(private_key)) is not None:
        ck.error(key_at, problem)
        return None
    return TLSCredential(meta, cert_pem, key_pem)


def _key_problem(key: object) -> str | None:
    """Envoy serves RSA keys of 2048 bits or more and ECDSA on P-256 or P-384."""
    if isinstance(key, rsa.RSAPrivateKey):
        return None if key.key_size >= 2048 else "is an RSA key under 2048 bits"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.name in ("secp256r1", "secp384r1"):
            return None
        return f"uses curve {key.curve.name}: Envoy takes P-256 or P-384"
    return "must be an RSA or ECDSA key"
