"""Secret (Kubernetes core v1, type kubernetes.io/tls): a Gateway's TLS certificate and key.

`kubectl create secret tls NAME --cert=... --key=... --dry-run=client -o yaml` prints
one; Gateway servers name it with `tls.credentialName`. Both halves are checked here
(PEM that parses, a key that matches the certificate) so Envoy never rejects them.
Secrets have no `spec`: their parser reads the whole document.
"""

from __future__ import annotations

import base64
import binascii

from ..fields import Shape, no_effect, restricted, shape, supported
from ..model import ObjectMeta
from ..model_traffic import TLSCredential
from ..pem import certificates_problem, key_pair_problems
from ..schema import DocChecker, Located, child_path
from ..yaml_lines import YamlMap

TLS_TYPE = "kubernetes.io/tls"
KEYS = ("tls.crt", "tls.key")
CA_KEY = "ca.crt"  # optional: roots a DestinationRule naming this Secret trusts
# A Secret has no spec: these are its top-level fields besides apiVersion/kind/metadata.
SPEC: Shape = shape(
    type=restricted("kubernetes.io/tls only"),
    data=supported("base64 PEM: tls.crt, tls.key, and ca.crt (optional)"),
    stringData=supported("the same, as plain text"),
    immutable=no_effect("pocketmesh reads Secrets from files; it never edits them"),
)


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
    for key in sorted(given - {*KEYS, CA_KEY}):
        _, item = values.get(key, ("", doc))
        ck.warn(item, f"key {key!r} is not read by pocketmesh (tls.crt, tls.key, ca.crt are)")
    if len(ck.errors) > before:
        return None
    cert_pem, cert_at = values["tls.crt"]
    key_pem, key_at = values["tls.key"]
    chain_problem, key_problem = key_pair_problems(cert_pem, key_pem)
    if chain_problem is not None:
        ck.error(cert_at, chain_problem)
    if key_problem is not None:
        if key_problem.startswith("does not match"):
            key_problem = "does not match the first certificate of tls.crt"
        ck.error(key_at, key_problem)
    ca_pem = ""
    if CA_KEY in values:
        ca_pem, ca_at = values[CA_KEY]
        if (problem := certificates_problem(ca_pem)) is not None:
            ck.error(ca_at, problem)
    if len(ck.errors) > before:
        return None
    return TLSCredential(meta, cert_pem, key_pem, ca_pem)
