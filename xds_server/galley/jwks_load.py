"""The key sets RequestAuthentications name by `jwksUri`, read on every load.

A `file:` URL is read like the certificates a DestinationRule names: a missing or bad
file is an error at `jwksUri`. An http(s) URL is fetched by the control plane (its
`JwksFetcher` keeps what it fetched, refreshing it) and sent to the proxies inline,
as istiod does. A URL that cannot be fetched does not stop the config: the issuer's
tokens are refused (401) until it can be, as in Istio (fail closed), and a warning
says so; a key set that is not valid JSON Web Keys is an error. A rule with neither
`jwks` nor `jwksUri` gets its keys by OpenID discovery when its issuer is an http(s)
URL.
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from collections.abc import Sequence

from .documents import ParsedDoc
from .errors import ERROR, WARNING, ConfigError
from .jwks import MAX_JWKS_BYTES, JwksFetcher, has_private_keys, jwks_problems, public_jwks
from .kinds.request_authentication import jwks_file_path
from .model_security import JwtRule, RequestAuthentication

__all__ = ["load_jwks"]


@dataclasses.dataclass
class _Findings:
    doc: ParsedDoc
    errors: list[ConfigError]
    warnings: list[ConfigError]

    def add(self, field: str, message: str, severity: str = ERROR) -> None:
        doc = self.doc
        assert doc.meta is not None
        line = doc.lines.get(field) or doc.lines.get(field.rpartition(".")[0], 0)
        line = line or doc.meta.source.line
        found = ConfigError(doc.file, line, doc.kind, doc.meta.key, field, message, severity)
        (self.errors if severity == ERROR else self.warnings).append(found)


def load_jwks(
    docs: Sequence[ParsedDoc], fetcher: JwksFetcher | None = None
) -> tuple[list[ParsedDoc], list[ConfigError], list[ConfigError]]:
    """`docs` with each rule's key set filled in; (docs, errors, warnings)."""
    out: list[ParsedDoc] = []
    errors: list[ConfigError] = []
    warnings: list[ConfigError] = []
    for doc in docs:
        policy = doc.resource
        if not isinstance(policy, RequestAuthentication) or all(r.jwks for r in policy.jwt_rules):
            out.append(doc)
            continue
        fetcher = fetcher or JwksFetcher()
        findings = _Findings(doc, [], [])
        rules = tuple(_resolve(rule, fetcher, findings) for rule in policy.jwt_rules)
        errors += findings.errors
        warnings += findings.warnings
        if findings.errors:
            out.append(dataclasses.replace(doc, resource=None))
        else:
            resolved = dataclasses.replace(policy, jwt_rules=rules)
            out.append(dataclasses.replace(doc, resource=resolved))
    return out, errors, warnings


def _resolve(rule: JwtRule, fetcher: JwksFetcher, findings: _Findings) -> JwtRule:
    if rule.jwks:
        return rule
    field = f"{rule.path}.jwksUri"
    timeout = rule.timeout_ms / 1000
    refused = f"tokens from issuer {rule.issuer!r} are refused (401) until it succeeds"
    uri = rule.jwks_uri
    if uri and urllib.parse.urlsplit(uri).scheme == "file":
        return _from_file(rule, field, findings)
    if uri:
        fetched = fetcher.fetch(uri, timeout)
        source = f"fetched from {uri}"
    elif urllib.parse.urlsplit(rule.issuer).scheme in ("http", "https"):
        field = f"{rule.path}.issuer"
        found, fetched = fetcher.discover(rule.issuer, timeout)
        source = f"found by OpenID discovery at {found}"
    else:
        findings.add(
            f"{rule.path}.issuer",
            "has no jwks or jwksUri, and the issuer is not an http(s) URL to discover "
            f"them from: every token from {rule.issuer!r} is refused (401)",
            WARNING,
        )
        return dataclasses.replace(rule, jwks_missing="no key set")
    if fetched.text is None:
        findings.add(field, f"cannot fetch the key set: {fetched.problem}; {refused}", WARNING)
        return dataclasses.replace(rule, jwks_missing=fetched.problem or "not fetched")
    if fetched.stale:
        findings.add(
            field,
            f"cannot fetch the key set again ({fetched.problem}): using the copy fetched earlier",
            WARNING,
        )
    problems = jwks_problems(fetched.text)
    for problem in problems:
        findings.add(field, f"the key set {source} {problem}")
    if problems:
        return rule
    return dataclasses.replace(rule, jwks=public_jwks(fetched.text))


def _from_file(rule: JwtRule, field: str, findings: _Findings) -> JwtRule:
    path = jwks_file_path(rule.jwks_uri, rule.base)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_JWKS_BYTES + 1)
        if len(data) > MAX_JWKS_BYTES:
            raise ValueError(f"larger than {MAX_JWKS_BYTES} bytes")
        text = data.decode("utf-8-sig")
    except (OSError, UnicodeDecodeError, ValueError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        findings.add(field, f"cannot read {path}: {reason}")
        return rule
    problems = jwks_problems(text)
    for problem in problems:
        findings.add(field, f"{path} {problem}")
    if problems:
        return rule
    if has_private_keys(text):
        findings.add(
            field, f"{path} holds private key material: only public keys are sent", WARNING
        )
    return dataclasses.replace(rule, jwks=public_jwks(text))
