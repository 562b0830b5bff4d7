"""SPIFFE IDs: the one place where their syntax is checked.

Rules from the SPIFFE ID standard (SPIFFE-ID.md), all enforced here:

* scheme is exactly ``spiffe`` (lowercase), followed by ``://``;
* the trust domain is non-empty, at most 255 bytes, of ``[a-z0-9._-]`` only — so no
  uppercase, no port (``:``), no userinfo (``@``), no percent-encoding;
* the path is empty or ``/``-separated segments of ``[a-zA-Z0-9._-]``, none empty,
  none ``.`` or ``..``, and no trailing ``/``;
* no query (``?``) and no fragment (``#``);
* the whole ID is at most 2048 bytes (the standard's interoperability limit).

Istio's workload identities have the shape ``spiffe://<td>/ns/<namespace>/sa/<account>``;
`SpiffeId.for_workload` builds one and `namespace`/`service_account` read it back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ca.errors import InvalidSpiffeId

__all__ = [
    "MAX_SPIFFE_ID_BYTES",
    "MAX_TRUST_DOMAIN_BYTES",
    "SCHEME_PREFIX",
    "SpiffeId",
    "validate_trust_domain",
]

SCHEME_PREFIX = "spiffe://"
MAX_TRUST_DOMAIN_BYTES = 255
MAX_SPIFFE_ID_BYTES = 2048

_TRUST_DOMAIN_RE = re.compile(r"[a-z0-9._-]+")
_SEGMENT_RE = re.compile(r"[a-zA-Z0-9._-]+")


def _fail(value: str, reason: str) -> InvalidSpiffeId:
    return InvalidSpiffeId(value, reason)


def _check_trust_domain(trust_domain: str, original: str) -> None:
    if not trust_domain:
        raise _fail(original, "trust domain is empty")
    if _TRUST_DOMAIN_RE.fullmatch(trust_domain):
        if len(trust_domain) > MAX_TRUST_DOMAIN_BYTES:
            raise _fail(
                original,
                f"trust domain is {len(trust_domain)} bytes, more than {MAX_TRUST_DOMAIN_BYTES}",
            )
        return
    if "@" in trust_domain:
        raise _fail(original, "userinfo ('user@') is not allowed in a SPIFFE ID")
    if ":" in trust_domain:
        raise _fail(original, "a port is not allowed in the trust domain")
    if "%" in trust_domain:
        raise _fail(original, "percent-encoding is not allowed in the trust domain")
    if trust_domain.lower() != trust_domain and _TRUST_DOMAIN_RE.fullmatch(trust_domain.lower()):
        raise _fail(original, "trust domain must be lowercase")
    bad = sorted({c for c in trust_domain if not _TRUST_DOMAIN_RE.fullmatch(c)})
    raise _fail(
        original,
        f"trust domain may contain only a-z, 0-9, '.', '-', '_' (found {''.join(bad)!r})",
    )


def _check_path(path: str, original: str) -> None:
    if not path:
        return
    if not path.startswith("/"):
        raise _fail(original, "path must start with '/'")
    if path.endswith("/"):
        raise _fail(original, "trailing '/' is not allowed")
    for segment in path[1:].split("/"):
        if not segment:
            raise _fail(original, "path contains an empty segment ('//')")
        if segment in (".", ".."):
            raise _fail(original, f"path segment {segment!r} is not allowed")
        if not _SEGMENT_RE.fullmatch(segment):
            if "%" in segment:
                raise _fail(original, "percent-encoding is not allowed in the path")
            bad = sorted({c for c in segment if not _SEGMENT_RE.fullmatch(c)})
            raise _fail(
                original,
                f"path segments may contain only a-z, A-Z, 0-9, '.', '-', '_' "
                f"(found {''.join(bad)!r} in {segment!r})",
            )


def validate_trust_domain(trust_domain: str) -> str:
    """Return `trust_domain` if it is a valid SPIFFE trust domain name, else raise.

    Raises:
        InvalidSpiffeId: with the reason.
    """
    _check_trust_domain(trust_domain, SCHEME_PREFIX + trust_domain)
    return trust_domain


@dataclass(frozen=True, slots=True)
class SpiffeId:
    """A validated SPIFFE ID. Constructing one checks it; it cannot hold an invalid value.

    `path` is ``""`` for the ID of the trust domain itself, else it starts with ``/``.
    """

    trust_domain: str
    path: str = ""

    def __post_init__(self) -> None:
        original = SCHEME_PREFIX + self.trust_domain + self.path
        _check_trust_domain(self.trust_domain, original)
        _check_path(self.path, original)
        if len(original.encode()) > MAX_SPIFFE_ID_BYTES:
            raise _fail(original, f"longer than {MAX_SPIFFE_ID_BYTES} bytes")

    @classmethod
    def parse(cls, value: str) -> SpiffeId:
        """Parse ``spiffe://<trust-domain>[/<path>]``.

        Raises:
            InvalidSpiffeId: naming the first rule broken.
        """
        if not isinstance(value, str):
            raise _fail(repr(value), f"expected a string, got {type(value).__name__}")
        if not value:
            raise _fail(value, "empty string")
        if "#" in value:
            raise _fail(value, "a fragment ('#') is not allowed")
        if "?" in value:
            raise _fail(value, "a query ('?') is not allowed")
        if not value.startswith(SCHEME_PREFIX):
            if value[: len(SCHEME_PREFIX)].lower() == SCHEME_PREFIX:
                raise _fail(value, "scheme must be lowercase 'spiffe://'")
            if "://" in value:
                raise _fail(value, f"scheme must be 'spiffe', not {value.split('://')[0]!r}")
            raise _fail(value, "missing the 'spiffe://' scheme")
        if len(value.encode()) > MAX_SPIFFE_ID_BYTES:
            raise _fail(value, f"longer than {MAX_SPIFFE_ID_BYTES} bytes")
        rest = value[len(SCHEME_PREFIX) :]
        slash = rest.find("/")
        trust_domain, path = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
        _check_trust_domain(trust_domain, value)
        _check_path(path, value)
        return cls(trust_domain, path)

    @classmethod
    def for_workload(cls, trust_domain: str, namespace: str, service_account: str) -> SpiffeId:
        """Istio's workload identity ``spiffe://<td>/ns/<namespace>/sa/<service_account>``."""
        for label, part in (("namespace", namespace), ("service account", service_account)):
            if not part or "/" in part:
                raise _fail(
                    f"{SCHEME_PREFIX}{trust_domain}/ns/{namespace}/sa/{service_account}",
                    f"{label} must be one non-empty path segment, got {part!r}",
                )
        return cls(trust_domain, f"/ns/{namespace}/sa/{service_account}")

    @classmethod
    def for_trust_domain(cls, trust_domain: str) -> SpiffeId:
        """The ID of the trust domain itself (``spiffe://<td>``, empty path)."""
        return cls(trust_domain, "")

    @property
    def uri(self) -> str:
        return SCHEME_PREFIX + self.trust_domain + self.path

    def __str__(self) -> str:
        return self.uri

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.path[1:].split("/")) if self.path else ()

    @property
    def is_istio_workload(self) -> bool:
        """True for the shape ``/ns/<namespace>/sa/<service_account>``."""
        s = self.segments
        return len(s) == 4 and s[0] == "ns" and s[2] == "sa"

    @property
    def namespace(self) -> str | None:
        """The Istio namespace, or None when the path is not ``/ns/<ns>/sa/<sa>``."""
        return self.segments[1] if self.is_istio_workload else None

    @property
    def service_account(self) -> str | None:
        """The Istio service account, or None when the path is not ``/ns/<ns>/sa/<sa>``."""
        return self.segments[3] if self.is_istio_workload else None

    def member_of(self, trust_domain: str) -> bool:
        return self.trust_domain == trust_domain
