"""Secret (Kubernetes core v1): the certificates a `credentialName` names.

`kubectl create secret tls NAME --cert=... --key=...` makes a `kubernetes.io/tls`
Secret; Istio's tasks also make `generic` (Opaque) ones, with a client CA for mutual
TLS (`--from-file=ca.crt=...`), or a CA alone in `<name>-cacert`. Istio reads
`tls.crt`/`tls.key` or `cert`/`key`, `ca.crt` or `cacert`, and `ca.crl` or `crl`;
so does pocketmesh. Every value is checked (PEM that parses, a key that matches its
certificate) so Envoy never rejects it. Secrets have no `spec`: their parser reads
the whole document.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable

from ..fields import Shape, no_effect, restricted, shape, supported
from ..model import ObjectMeta
from ..model_traffic import TLSCredential
from ..pem import certificates_problem, crl_problem, key_pair_problems
from ..schema import DocChecker, Located, child_path
from ..yaml_lines import YamlMap

TLS_TYPE = "kubernetes.io/tls"
OPAQUE = "Opaque"
TYPES = (TLS_TYPE, OPAQUE)
KEYS = ("tls.crt", "tls.key")  # what a kubernetes.io/tls Secret must have
CA_KEY = "ca.crt"
CA_KEYS = ("ca.crt", "cacert")
CRL_KEYS = ("ca.crl", "crl")
KNOWN = frozenset({*KEYS, "cert", "key", *CA_KEYS, *CRL_KEYS})
# A Secret has no spec: these are its top-level fields besides apiVersion/kind/metadata.
SPEC: Shape = shape(
    type=restricted("kubernetes.io/tls, or Opaque (Istio's generic Secrets)"),
    data=supported(
        "base64 PEM: tls.crt/tls.key (or cert/key), ca.crt (or cacert), ca.crl (or crl)"
    ),
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
    kind = ck.string(type_at) if type_at is not None else OPAQUE  # Kubernetes' default
    if kind not in TYPES:
        ck.error(
            type_at or doc,
            f"pocketmesh reads Secrets of type {TLS_TYPE} or {OPAQUE} only",
            path="type",
        )
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
    if kind == TLS_TYPE:
        for key in KEYS:
            if key not in given:
                ck.error(doc, f"needs {key} in data or stringData", path="data")
    for key in sorted(given - KNOWN):
        _, item = values.get(key, ("", doc))
        ck.warn(
            item, f"key {key!r} is not read by pocketmesh (it reads {', '.join(sorted(KNOWN))})"
        )
    if len(ck.errors) > before:
        return None
    cert_pem = key_pem = ""
    # Istio reads cert/key first, then tls.crt/tls.key: a pair only when both are set.
    for cert_name, key_name in (("cert", "key"), ("tls.crt", "tls.key")):
        if cert_name in values and key_name in values:
            if not cert_pem:
                cert_pem, key_pem = _key_pair(ck, values, cert_name, key_name)
        elif cert_name in values or key_name in values:
            has, missing = (cert_name, key_name) if cert_name in values else (key_name, cert_name)
            ck.error(values[has][1], f"{has} needs {missing} beside it")
    ca_pem = _one(ck, values, CA_KEYS, certificates_problem)
    crl_pem = _one(ck, values, CRL_KEYS, crl_problem)
    if not cert_pem and not ca_pem and len(ck.errors) == before:
        ck.error(
            data_at or string_at or doc,
            "holds neither a certificate and key (tls.crt/tls.key or cert/key) nor a CA "
            "(ca.crt or cacert)",
            path="data",
        )
    if len(ck.errors) > before:
        return None
    return TLSCredential(meta, cert_pem, key_pem, ca_pem, crl_pem)


def _key_pair(
    ck: DocChecker, values: dict[str, tuple[str, Located]], cert_name: str, key_name: str
) -> tuple[str, str]:
    (cert_pem, cert_at), (key_pem, key_at) = values[cert_name], values[key_name]
    chain_problem, key_problem = key_pair_problems(cert_pem, key_pem)
    if chain_problem is not None:
        ck.error(cert_at, chain_problem)
    if key_problem is not None:
        if key_problem.startswith("does not match"):
            key_problem = f"does not match the first certificate of {cert_name}"
        ck.error(key_at, key_problem)
    return cert_pem, key_pem


def _one(
    ck: DocChecker,
    values: dict[str, tuple[str, Located]],
    names: tuple[str, str],
    problem_of: Callable[[str], str | None],
) -> str:
    """One part under either of Istio's names (the generic one first, as Istio reads)."""
    for name in reversed(names):
        if name in values:
            pem, where = values[name]
            problem = problem_of(pem)
            if problem is not None:
                ck.error(where, problem)
            return pem
    return ""
