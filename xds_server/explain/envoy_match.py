"""Envoy's own matching rules, replayed on a request: virtual hosts, routes, filter chains.

Each rule follows Envoy 1.40's source (`source/common/router/config_impl.cc`,
`source/common/http/header_utility.cc`, `source/common/common/matchers.cc`), so the
answer is the route Envoy picks, and every condition says how the request fared:

- virtual host: the authority lower-cased, port included (`ignore_port_in_host_matching`
  unset): an exact domain, else the longest suffix wildcard (`*.foo.com`, which needs at
  least one more character), else the longest prefix wildcard (`foo.*`), else `*`;
- route: the first whose every condition holds; path matchers see the path without
  query and fragment (`PathMatcher`), `case_sensitive: false` folds case (not regexes);
  a header matcher on an absent header fails, even inverted, except `present_match`;
  a repeated header matches when one of its values does; query parameters are not
  URL-decoded and the first value counts; a regex must match the whole value (RE2, run
  here as Python's `re`);
- filter chain: SNI (exact, then the longest `*.` wildcard, then chains without names),
  then the transport protocol (`tls` / `raw_buffer`).

What cannot be decided from the request alone (another filter's dynamic metadata, a
runtime fraction, a TLS context) is reported as undecided (`ok` None), never guessed. A
JWT claim match is decided from the request's bearer token as if it verified (a token
that does not verify is refused before routing; explain does not check signatures).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.type.matcher.v3 import metadata_pb2, string_pb2, value_pb2

from xds_server.explain.request import Request

Verdict = bool | None  # None: cannot be decided from the request
HCM_FILTER = "envoy.filters.network.http_connection_manager"


@dataclass(frozen=True, slots=True)
class Check:
    """One condition of a match, and what the request had."""

    condition: str  # `header end-user: exact "jason"`
    ok: Verdict
    saw: str  # `end-user absent`

    def to_json(self) -> dict[str, object]:
        return {"condition": self.condition, "ok": self.ok, "request": self.saw}


def verdict(checks: Sequence[Check]) -> Verdict:
    """AND of the checks: False if any fails, None if any is undecided, else True."""
    if any(c.ok is False for c in checks):
        return False
    if any(c.ok is None for c in checks):
        return None
    return True


# --- strings -------------------------------------------------------------------------


def _regex(pattern: str, value: str) -> Verdict:
    try:
        return re.fullmatch(pattern, value) is not None
    except re.error:
        return None  # RE2 syntax Python's re does not read


def string_matches(m: string_pb2.StringMatcher, value: str) -> Verdict:
    kind = m.WhichOneof("match_pattern")
    if kind == "safe_regex":
        return _regex(m.safe_regex.regex, value)
    if kind not in ("exact", "prefix", "suffix", "contains"):
        return None  # `custom` extensions
    want: str = getattr(m, kind)
    if m.ignore_case:
        want, value = want.lower(), value.lower()
    if kind == "exact":
        return value == want
    if kind == "prefix":
        return value.startswith(want)
    if kind == "suffix":
        return value.endswith(want)
    return want in value


def describe_string(m: string_pb2.StringMatcher) -> str:
    kind = m.WhichOneof("match_pattern") or "any"
    value = m.safe_regex.regex if kind == "safe_regex" else getattr(m, kind, "")
    label = "regex" if kind == "safe_regex" else kind
    return f"{label} {_q(str(value))}" + (" (ignore case)" if m.ignore_case else "")


def _q(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --- headers -------------------------------------------------------------------------


def header_check(h: rc.HeaderMatcher, headers: Mapping[str, Sequence[str]]) -> Check:
    """Envoy's HeaderUtility::matchHeaders for one matcher."""
    name = h.name.lower()
    values = headers.get(name)
    kind = h.WhichOneof("header_match_specifier")
    what = _describe_header(h, kind)
    label = _PSEUDO.get(name, name)
    if not values and not h.treat_missing_header_as_empty:
        saw = f"{label} absent"
        if kind in (None, "present_match"):
            present = h.present_match if kind == "present_match" else True
            # (present == wanted) XOR invert, with the header absent
            return Check(what, (not present) != h.invert_match, saw)
        return Check(what, False, saw)  # absent fails, inverted or not
    # Envoy 1.40 tries each value of a repeated header (measured: `x: a` and `x: b` match
    # exact "a" and exact "b", not "a,b"); an inverted matcher inverts the result.
    found = values or [""]
    saw = f"{label} " + ", ".join(_q(v) for v in found)
    results = [_value_matches(h, kind, v) for v in found]
    result: Verdict = True if True in results else (None if None in results else False)
    if result is None:
        return Check(what, None, saw)
    return Check(what, result != h.invert_match, saw)


def _value_matches(h: rc.HeaderMatcher, kind: str | None, value: str) -> Verdict:
    if kind in (None, "present_match"):
        return h.present_match if kind == "present_match" else True
    if kind == "exact_match":
        return not h.exact_match or value == h.exact_match
    if kind == "safe_regex_match":
        return _regex(h.safe_regex_match.regex, value)
    if kind == "range_match":
        try:
            number = int(value)
        except ValueError:
            return False
        return h.range_match.start <= number < h.range_match.end
    if kind == "prefix_match":
        return value.startswith(h.prefix_match)
    if kind == "suffix_match":
        return value.endswith(h.suffix_match)
    if kind == "contains_match":
        return h.contains_match in value
    return string_matches(h.string_match, value)


_PSEUDO = {":method": "method", ":authority": "authority", ":scheme": "scheme", ":path": "path"}


def _describe_header(h: rc.HeaderMatcher, kind: str | None) -> str:
    name = h.name.lower()
    label = _PSEUDO.get(name, f"header {name}")
    if kind in (None, "present_match"):
        present = h.present_match if kind == "present_match" else True
        return f"{label} present" if present != h.invert_match else f"{label} absent"
    if kind == "string_match":
        test = describe_string(h.string_match)
    elif kind == "safe_regex_match":
        test = f"regex {_q(h.safe_regex_match.regex)}"
    elif kind == "range_match":
        test = f"in [{h.range_match.start}, {h.range_match.end})"
    else:
        test = f"{kind.removesuffix('_match')} {_q(str(getattr(h, kind)))}"
    return f"{label}: {'not ' if h.invert_match else ''}{test}"


# --- routes --------------------------------------------------------------------------


def route_checks(match: rc.RouteMatch, request: Request) -> list[Check]:
    """Every condition of a RouteMatch (Envoy's RouteEntryImplBase::matchRoute and the
    path specifier), each with its verdict."""
    checks: list[Check] = [_path_check(match, request)]
    if match.HasField("runtime_fraction"):
        checks.append(Check("runtime fraction", None, "decided per request at random"))
    headers = request.header_map()
    if match.HasField("grpc"):
        ctype = ",".join(headers.get("content-type", []))
        ok = ctype.startswith("application/grpc")
        checks.append(Check("gRPC request", ok, f"content-type {_q(ctype)}"))
    for h in match.headers:
        checks.append(header_check(h, headers))
    if match.query_parameters:
        params = query_params(request.path)
        for q in match.query_parameters:
            checks.append(_query_check(q, params))
    if match.HasField("tls_context"):
        checks.append(Check("TLS context (client certificate)", None, "not known here"))
    for meta in match.dynamic_metadata:
        checks.append(_metadata_check(meta, request))
    if match.filter_state:
        checks.append(Check("filter state", None, "set by a filter while the request runs"))
    return checks


JWT_AUTHN = "envoy.filters.http.jwt_authn"
_MISSING = object()


def _metadata_check(meta: metadata_pb2.MetadataMatcher, request: Request) -> Check:
    """A match on dynamic metadata. jwt_authn's (a VirtualService match on
    `@request.auth.claims`) is decided from the request's bearer token, as if jwt_authn
    verified it: explain does not check signatures (a token that fails is a 401 before
    any route); any other filter's metadata cannot be known here."""
    keys = [seg.key for seg in meta.path]
    if meta.filter != JWT_AUTHN or not keys:
        what = f"dynamic metadata {meta.filter}.{'.'.join(keys)}"
        return Check(what, None, "set by a filter while the request runs")
    claim = ".".join(keys[1:])
    what = f"JWT claim {claim}: {'not ' if meta.invert else ''}{_describe_value(meta.value)}"
    token = bearer_claims(request)
    if token is None:
        found = _value_matches_json(meta.value, _MISSING)
        ok = None if found is None else found != meta.invert
        return Check(what, ok, "no bearer token: no claims")
    if token is _MISSING:
        return Check(what, None, "a bearer token that is not a readable JWT")
    value: Any = token
    for key in keys[1:]:
        value = value.get(key, _MISSING) if isinstance(value, dict) else _MISSING
    found = _value_matches_json(meta.value, value)
    saw = "claim absent" if value is _MISSING else f"claim {json.dumps(value)}"
    saw += " (if the token verifies: explain does not check its signature)"
    return Check(what, None if found is None else found != meta.invert, saw)


def bearer_claims(request: Request) -> Any:
    """The payload of the request's `Authorization: Bearer` JWT, unverified; None without
    one, _MISSING if it cannot be read."""
    auth = next((v for k, v in request.headers if k == "authorization"), "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    parts = token.strip().split(".")
    if len(parts) != 3:
        return _MISSING
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return _MISSING
    return payload if isinstance(payload, dict) else _MISSING


def _value_matches_json(m: value_pb2.ValueMatcher, value: Any) -> Verdict:
    kind = m.WhichOneof("match_pattern")
    if kind == "null_match":
        return value is _MISSING or value is None
    if kind == "present_match":
        return value is not _MISSING and value is not None
    if kind == "string_match":
        return isinstance(value, str) and string_matches(m.string_match, value) is True
    if kind == "bool_match":
        return isinstance(value, bool) and value == m.bool_match
    if kind == "double_match":
        if not isinstance(value, int | float) or isinstance(value, bool):
            return False
        d = m.double_match
        if d.HasField("range"):
            return d.range.start <= value < d.range.end
        return bool(value == d.exact)
    if kind == "list_match":
        if not isinstance(value, list):
            return False
        results = [_value_matches_json(m.list_match.one_of, item) for item in value]
        return True if True in results else (None if None in results else False)
    if kind == "or_match":
        results = [_value_matches_json(x, value) for x in m.or_match.value_matchers]
        return True if True in results else (None if None in results else False)
    return None


def _describe_value(m: value_pb2.ValueMatcher) -> str:
    kind = m.WhichOneof("match_pattern")
    if kind == "string_match":
        return describe_string(m.string_match)
    if kind == "list_match":
        return f"a list holding {_describe_value(m.list_match.one_of)}"
    if kind == "or_match":
        return " or ".join(_describe_value(x) for x in m.or_match.value_matchers)
    return str(kind)


def _path_check(match: rc.RouteMatch, request: Request) -> Check:
    kind = match.WhichOneof("path_specifier")
    path = request.path_only
    saw = f"path {_q(path)}"
    fold = match.HasField("case_sensitive") and not match.case_sensitive.value
    suffix = " (ignore case)" if fold else ""
    a = path.lower() if fold else path
    if kind == "prefix":
        want = match.prefix.lower() if fold else match.prefix
        return Check(f"path prefix {_q(match.prefix)}{suffix}", a.startswith(want), saw)
    if kind == "path":
        want = match.path.lower() if fold else match.path
        return Check(f"path exact {_q(match.path)}{suffix}", a == want, saw)
    if kind == "path_separated_prefix":
        want = match.path_separated_prefix.lower() if fold else match.path_separated_prefix
        ok = a == want or a.startswith(want + "/")
        return Check(f"path segment prefix {_q(match.path_separated_prefix)}{suffix}", ok, saw)
    if kind == "safe_regex":
        regex = match.safe_regex.regex
        return Check(f"path regex {_q(regex)}", _regex(regex, path), saw)
    if kind == "connect_matcher":
        return Check("CONNECT request", request.method == "CONNECT", f"method {request.method}")
    return Check(f"path {kind}", None, saw)  # path_match_policy extensions


def query_params(path: str) -> dict[str, str]:
    """Envoy's QueryParamsMulti::parseQueryString, first value of each: not decoded."""
    _, mark, query = path.partition("?")
    query = query.partition("#")[0]
    found: dict[str, str] = {}
    if not mark:
        return found
    for part in query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        found.setdefault(name, value)
    return found


def _query_check(q: rc.QueryParameterMatcher, params: Mapping[str, str]) -> Check:
    value = params.get(q.name)
    saw = f"?{q.name} absent" if value is None else f"?{q.name}={value}"
    if q.HasField("string_match"):
        what = f"query ?{q.name}: {describe_string(q.string_match)}"
        ok = False if value is None else string_matches(q.string_match, value)
        return Check(what, ok, saw)
    return Check(f"query ?{q.name} present", value is not None, saw)


# --- virtual hosts -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VirtualHostChoice:
    vhost: rc.VirtualHost | None
    domain: str = ""  # the domain that matched, as configured
    how: str = ""  # exact, suffix wildcard, prefix wildcard, catch-all
    host: str = ""  # the authority Envoy matched: lower-cased

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.vhost.name if self.vhost is not None else None,
            "domain": self.domain,
            "how": self.how,
            "authority": self.host,
        }


def select_virtual_host(config: route_pb2.RouteConfiguration, authority: str) -> VirtualHostChoice:
    """Envoy's RouteMatcher::findVirtualHost."""
    host = authority.lower()
    if config.ignore_port_in_host_matching:
        host = strip_port(host)
    exact: dict[str, tuple[rc.VirtualHost, str]] = {}
    suffixes: dict[str, tuple[rc.VirtualHost, str]] = {}
    prefixes: dict[str, tuple[rc.VirtualHost, str]] = {}
    default: tuple[rc.VirtualHost, str] | None = None
    for vhost in config.virtual_hosts:
        for domain in vhost.domains:
            d = domain.lower()
            if d == "*":
                default = default or (vhost, domain)
            elif d.startswith("*"):
                suffixes.setdefault(d[1:], (vhost, domain))
            elif d.endswith("*"):
                prefixes.setdefault(d[:-1], (vhost, domain))
            else:
                exact.setdefault(d, (vhost, domain))
    if host in exact:
        return VirtualHostChoice(*exact[host], "exact", host)
    for wild, how in ((suffixes, "suffix wildcard"), (prefixes, "prefix wildcard")):
        # Longest wildcard first; `*.foo.com` needs at least one character more.
        for key in sorted(wild, key=len, reverse=True):
            if len(key) >= len(host):
                continue
            part = host[len(host) - len(key) :] if how.startswith("suffix") else host[: len(key)]
            if part == key:
                return VirtualHostChoice(*wild[key], how, host)
    if default is not None:
        return VirtualHostChoice(*default, "catch-all", host)
    return VirtualHostChoice(None, "", "", host)


def strip_port(host: str) -> str:
    """Envoy's getPortStart: the last `:` not inside an IPv6 `[...]`."""
    colon = host.rfind(":")
    if colon < 0 or host.rfind("]") > colon:
        return host
    return host[:colon]


# --- filter chains -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChainChoice:
    chain: listener_components_pb2.FilterChain | None
    why: str


def select_filter_chain(
    listener: listener_pb2.Listener, *, server_name: str, tls: bool
) -> ChainChoice:
    """The filter chain a connection gets: by SNI (exact, then the longest `*.` wildcard,
    then chains without server names), then by transport protocol."""
    chains = list(listener.filter_chains)
    name = server_name.lower() if tls else ""
    candidates = _by_server_name(chains, name)
    transport = "tls" if tls else "raw_buffer"
    exact = [c for c in candidates if c.filter_chain_match.transport_protocol == transport]
    chosen = exact or [c for c in candidates if not c.filter_chain_match.transport_protocol]
    if chosen:
        names = list(chosen[0].filter_chain_match.server_names)
        how = f"SNI {name!r} matches {names}" if names else "no SNI condition"
        return ChainChoice(chosen[0], f"{how}, transport {transport}")
    if listener.HasField("default_filter_chain"):
        return ChainChoice(listener.default_filter_chain, "the default filter chain")
    wanted = f"SNI {name!r} over TLS" if tls else "plaintext"
    return ChainChoice(None, f"no filter chain takes {wanted}: Envoy closes the connection")


def transport_mismatch(chain: listener_components_pb2.FilterChain, *, tls: bool) -> str:
    """Why the chosen chain cannot talk to the client ('' when it can): chain selection
    does not look at the transport socket; the handshake (or its absence) fails later."""
    ends_tls = chain.HasField("transport_socket")
    if ends_tls and not tls:
        return (
            "the filter chain expects TLS and the client sends plaintext: the connection is reset"
        )
    speaks_http = any(f.name == HCM_FILTER for f in chain.filters)
    if tls and not ends_tls and speaks_http:
        return "the filter chain expects plaintext and the client speaks TLS: the request fails"
    return ""  # or TLS passed through, unterminated, by a TCP proxy


def _by_server_name(
    chains: list[listener_components_pb2.FilterChain], name: str
) -> list[listener_components_pb2.FilterChain]:
    if name:
        exact = [c for c in chains if name in c.filter_chain_match.server_names]
        if exact:
            return exact
        labels = name.split(".")
        for i in range(1, len(labels)):
            wildcard = "*." + ".".join(labels[i:])
            found = [c for c in chains if wildcard in c.filter_chain_match.server_names]
            if found:
                return found
    return [c for c in chains if not c.filter_chain_match.server_names]
