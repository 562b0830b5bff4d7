"""Pieces the traffic kinds share: durations, percentages, string matches, hosts."""

from __future__ import annotations

import os
import re

from ..fields import Shape, shape, supported
from ..model_traffic import PemFile, StringMatch
from ..names import wildcard_host_problem
from ..schema import DocChecker, Located

# Istio's protobuf Duration spelling, as Envoy and `istioctl validate` accept it.
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|m|s|ms|us|µs|ns)\Z")
_UNIT_MS = {"h": 3_600_000, "m": 60_000, "s": 1000, "ms": 1, "us": 0.001, "µs": 0.001, "ns": 1e-6}
MAX_DURATION_MS = 315_576_000_000_000  # protobuf Duration's 10 000 years
STRING_MATCH_KINDS = ("exact", "prefix", "regex")
STRING_MATCH: Shape = shape(
    exact=supported(), prefix=supported(), regex=supported("RE2, matching the whole value")
)
PERCENTAGE: Shape = shape(value=supported("a double from 0 to 100"))
# Constructs RE2 (Envoy's regex engine) rejects though Python's `re` accepts them.
_NOT_RE2 = re.compile(r"\(\?<?[=!]|\\[1-9]|\(\?P=|\(\?>|\\[zZ]\b(?!\Z)|\(\?\(")
_HEADER_NAME = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+\Z")


def duration_ms(ck: DocChecker, at: Located, *, minimum_ms: int = 1) -> int | None:
    """`1.5s`, `100ms`, `2m`: whole milliseconds, at least `minimum_ms`."""
    text = ck.string(at)
    if text is None:
        return None
    found = _DURATION.match(text.strip())
    if found is None:
        ck.error(at, f"{text!r} must be a duration like '10s', '0.5s' or '100ms'")
        return None
    value = float(found.group(1)) * _UNIT_MS[found.group(2)]
    if value < minimum_ms or value != int(value):
        ck.error(at, f"{text!r} must be a whole number of milliseconds, at least {minimum_ms}ms")
        return None
    if value > MAX_DURATION_MS:
        ck.error(at, f"{text!r} is too long")
        return None
    return int(value)


def percentage(ck: DocChecker, at: Located) -> float | None:
    """Istio's `Percent {value: double}` in [0, 100]."""
    fields = ck.fields(at, PERCENTAGE)
    if fields is None or (value_at := fields.get("value")) is None:
        return None if fields is None else 0.0
    value = value_at.value
    if isinstance(value, bool) or not isinstance(value, int | float):
        ck.error(value_at, "expected number")
        return None
    if not 0 <= value <= 100:
        ck.error(value_at, f"{value} must be between 0 and 100")
        return None
    return float(value)


def boolean(ck: DocChecker, at: Located) -> bool | None:
    if not isinstance(at.value, bool):
        ck.error(at, f"expected boolean, got {type(at.value).__name__}")
        return None
    return at.value


def regex_problem(value: str) -> str | None:
    try:
        re.compile(value)
    except re.error as err:
        return f"is not a valid regular expression: {err}"
    if _NOT_RE2.search(value):
        return "uses a construct RE2 (Envoy's regex engine) does not support"
    return None


def string_match(ck: DocChecker, at: Located, *, allow_present: bool = False) -> StringMatch | None:
    """`{exact|prefix|regex: str}`: exactly one; `{}` means "present" where allowed."""
    fields = ck.fields(at, STRING_MATCH)
    if fields is None:
        return None
    if not fields:
        if not allow_present:
            ck.error(at, "must set one of exact, prefix, regex")
        return None
    if len(fields) > 1:
        ck.error(at, f"must set only one of exact, prefix, regex, not {', '.join(sorted(fields))}")
        return None
    kind, value_at = next(iter(fields.items()))
    value = ck.string(value_at, regex_problem if kind == "regex" else None)
    if value is None:
        return None
    return StringMatch(kind, value)


def header_name_problem(value: str) -> str | None:
    if not _HEADER_NAME.match(value):
        return "must be a lower-case HTTP header name"
    return None


def host_problem(value: str) -> str | None:
    """A VirtualService or DestinationRule host: a DNS name, `*.suffix` or `*`."""
    if "/" in value:
        return "must be a host name without a namespace or port"
    return wildcard_host_problem(value)


def pem_file(ck: DocChecker, at: Located) -> PemFile | None:
    """A file path a document names; relative to the directory of that document.

    Only the path is kept here: the loader reads the file (`galley.tls_files`).
    """
    path = ck.string(at, _path_problem)
    if path is None:
        return None
    if not os.path.isabs(path):
        path = os.path.join(os.path.dirname(os.path.abspath(ck.file)), path)
    return PemFile(os.path.normpath(path))


def _path_problem(value: str) -> str | None:
    return "must be a file path" if not value.strip() or "\0" in value else None
