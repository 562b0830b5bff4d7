"""RequestAuthentication: which JWTs a workload verifies (Envoy's jwt_authn filter).

A request with a token that fails verification is refused (401); a request without
one passes with no request principal, unless an AuthorizationPolicy requires one, as
in Istio. Checked as Istio's validation checks it (ValidateRequestAuthentication),
and the inline `jwks` as Envoy reads it (`galley.jwks`); `jwksUri` is read and
checked by the loader (`galley.jwks_load`), which may fetch it.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Mapping

from ..fields import Shape, each, not_yet, obj, shape, supported
from ..jwks import has_private_keys, jwks_problems, public_jwks
from ..model import ObjectMeta
from ..model_security import ClaimToHeader, JwtHeader, JwtRule, RequestAuthentication
from ..schema import DocChecker, Located
from .peer_authentication import MATCH_LABELS, parse_match_labels
from .traffic_common import boolean, duration_ms

JWT_HEADER: Shape = shape(
    name=supported("the header the token is read from"),
    prefix=supported("stripped before the token, e.g. 'Bearer '"),
)
CLAIM_TO_HEADER: Shape = shape(header=supported(), claim=supported("nested: a.b.c"))
JWT_RULE: Shape = shape(
    issuer=supported("tokens with another iss are refused"),
    audiences=supported("any of them; empty: any audience"),
    jwksUri=supported(
        "http(s) URL the control plane fetches (refreshed every 20 min) and sends inline, "
        "or a file: URL (relative to the YAML file's folder) read on every load"
    ),
    jwks=supported("inline JSON Web Key Set, checked as Envoy reads it"),
    fromHeaders=each(JWT_HEADER, "default: Authorization: Bearer, and ?access_token="),
    fromParams=supported(),
    fromCookies=supported(),
    outputPayloadToHeader=supported("the verified payload, base64url, to the app"),
    outputClaimToHeaders=each(CLAIM_TO_HEADER),
    forwardOriginalToken=supported("default false: the token is removed before the app"),
    timeout=supported("how long fetching jwksUri may take (default 5s)"),
    spaceDelimitedClaims=supported("claims split on spaces for matching (scope, permission too)"),
)
SPEC: Shape = shape(
    selector=obj(MATCH_LABELS),
    jwtRules=each(JWT_RULE),
    targetRef=not_yet("Gateway API and waypoint attachment"),
    targetRefs=not_yet("Gateway API and waypoint attachment"),
)

_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+\Z")
_CLAIM_HEADER = re.compile(r"[-_A-Za-z0-9]+\Z")  # Istio's ClaimToHeader pattern
DEFAULT_TIMEOUT_MS = 5000


def _header_problem(value: str) -> str | None:
    return None if _TOKEN.match(value) else "must be an HTTP header name"


def _not_empty(value: str) -> str | None:
    return "must not be empty" if not value else None


def jwks_uri_problem(value: str) -> str | None:
    parts = urllib.parse.urlsplit(value)
    if parts.scheme in ("http", "https"):
        return None if parts.hostname else "must name a host"
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            return "must be a file:/// path on this machine"
        return None if parts.path else "must name a file"
    return "must be an http://, https:// or file: URL"


def jwks_file_path(uri: str, base: str) -> str:
    """The file a `file:` jwksUri names; a relative path is read from `base`, the folder
    of the document naming it."""
    path = urllib.parse.unquote(urllib.parse.urlsplit(uri).path)
    if os.path.isabs(path):
        return os.path.normpath(path)
    return os.path.normpath(os.path.join(base, path))


def check_jwks(ck: DocChecker, at: Located, text: str) -> str | None:
    """The key set Envoy is sent (public members only), or None after errors at `at`."""
    problems = jwks_problems(text)
    for problem in problems:
        ck.error(at, problem)
    if problems:
        return None
    if has_private_keys(text):
        ck.warn(at, "holds private key material: only the public keys are sent to Envoy")
    return public_jwks(text)


def parse_request_authentication(
    ck: DocChecker, meta: ObjectMeta, spec: Located | None
) -> RequestAuthentication | None:
    before = len(ck.errors)
    selector: Mapping[str, str] | None = None
    rules: list[JwtRule] = []
    if spec is not None:
        fields = ck.fields(spec, SPEC)
        if fields is None:
            return None
        if (at := fields.get("selector")) is not None:
            selector = parse_match_labels(ck, at)
        if (at := fields.get("jwtRules")) is not None:
            for item in ck.items(at) or ():
                rule = _jwt_rule(ck, item)
                if rule is not None:
                    rules.append(rule)
    if len(ck.errors) > before:
        return None
    return RequestAuthentication(meta=meta, selector=selector, jwt_rules=tuple(rules))


def _strings(ck: DocChecker, fields: dict[str, Located], key: str) -> tuple[str, ...]:
    at = fields.get(key)
    if at is None:
        return ()
    return tuple(v for v, _ in ck.strings(at, _not_empty) or ())


def _jwt_rule(ck: DocChecker, at: Located) -> JwtRule | None:
    fields = ck.fields(at, JWT_RULE)
    if fields is None:
        return None
    issuer = ""
    if (issuer_at := fields.get("issuer")) is not None:
        issuer = ck.string(issuer_at) or ""
    jwks_uri = ""
    if (uri_at := fields.get("jwksUri")) is not None:
        jwks_uri = ck.string(uri_at, jwks_uri_problem) or ""
    if not issuer and not jwks_uri and "jwksUri" not in fields:
        ck.error(at, "needs an issuer or a jwksUri (as in Istio)", path=f"{at.path}.issuer")
    jwks = ""
    if (jwks_at := fields.get("jwks")) is not None:
        text = ck.string(jwks_at)
        if text is not None:
            jwks = check_jwks(ck, jwks_at, text) or ""
        if uri_at is not None:
            ck.warn(uri_at, "is not read: jwks is set, and it wins (as in Istio)")
    headers: list[JwtHeader] = []
    for item in _items(ck, fields, "fromHeaders"):
        entry = ck.fields(item, JWT_HEADER)
        if entry is None:
            continue
        name_at = ck.required(entry, "name", item)
        name = ck.string(name_at, _header_problem) if name_at is not None else None
        prefix = ""
        if (prefix_at := entry.get("prefix")) is not None:
            prefix = ck.string(prefix_at) or ""
        if name:
            headers.append(JwtHeader(name.lower(), prefix))
    claims: list[ClaimToHeader] = []
    seen: set[str] = set()
    for item in _items(ck, fields, "outputClaimToHeaders"):
        entry = ck.fields(item, CLAIM_TO_HEADER)
        if entry is None:
            continue
        header_at = ck.required(entry, "header", item)
        claim_at = ck.required(entry, "claim", item)
        header = ck.string(header_at, _claim_header_problem) if header_at is not None else None
        claim = ck.string(claim_at, _not_empty) if claim_at is not None else None
        if header and header.lower() in seen and header_at is not None:
            ck.error(header_at, f"header {header!r} is already written by another claim")
        if header and claim:
            seen.add(header.lower())
            claims.append(ClaimToHeader(header.lower(), claim))
    payload_header = ""
    if (payload_at := fields.get("outputPayloadToHeader")) is not None:
        payload_header = (ck.string(payload_at, _header_problem) or "").lower()
    forward = False
    if (forward_at := fields.get("forwardOriginalToken")) is not None:
        forward = bool(boolean(ck, forward_at))
    timeout = DEFAULT_TIMEOUT_MS
    if (timeout_at := fields.get("timeout")) is not None:
        timeout = duration_ms(ck, timeout_at) or DEFAULT_TIMEOUT_MS
    return JwtRule(
        issuer=issuer,
        audiences=_strings(ck, fields, "audiences"),
        jwks=jwks,
        jwks_uri="" if jwks else jwks_uri,
        from_headers=tuple(headers),
        from_params=_strings(ck, fields, "fromParams"),
        from_cookies=_strings(ck, fields, "fromCookies"),
        output_payload_to_header=payload_header,
        output_claim_to_headers=tuple(claims),
        forward_original_token=forward,
        timeout_ms=timeout,
        space_delimited_claims=_strings(ck, fields, "spaceDelimitedClaims"),
        path=at.path,
        base=os.path.dirname(os.path.abspath(ck.file)),
    )


def _claim_header_problem(value: str) -> str | None:
    return None if _CLAIM_HEADER.match(value) else "must be letters, digits, '-' and '_'"


def _items(ck: DocChecker, fields: dict[str, Located], key: str) -> list[Located]:
    at = fields.get(key)
    return [] if at is None else ck.items(at) or []
