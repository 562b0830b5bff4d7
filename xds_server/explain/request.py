"""The request `explain` follows: what an app (or a client of a gateway) sends.

`HOST[:PORT][/PATH]` is the authority and path as the app sends them through its
sidecar's HTTP proxy (`curl -x <workload>:15001 http://HOST[:PORT]/PATH`); Envoy
matches virtual hosts on the authority exactly as written, port included or not.
Headers (`-H 'end-user: jason'`) and the method take part in route matches.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit


class BadRequest(ValueError):
    """A destination or header the user gave that cannot be a request."""


@dataclass(frozen=True, slots=True)
class Request:
    host: str  # as written, lower-cased (Envoy lower-cases the authority to match)
    port: int | None = None  # None: the authority carries no port
    path: str = "/"  # with the query string, as on the wire
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = field(default=())  # lower-cased names, in order
    scheme: str = "http"

    @property
    def authority(self) -> str:
        """The Host Envoy matches: a `Host:` header if given, else the destination's."""
        for name, value in self.headers:
            if name in ("host", ":authority"):
                return value.lower()
        return self.host if self.port is None else f"{self.host}:{self.port}"

    @property
    def path_only(self) -> str:
        """The path without query and fragment (what Envoy's path matchers see)."""
        cut = min((i for i in (self.path.find("?"), self.path.find("#")) if i >= 0), default=-1)
        return self.path if cut < 0 else self.path[:cut]

    def header_map(self) -> dict[str, list[str]]:
        """Every header as Envoy holds it: pseudo-headers included, names lower-case."""
        out: dict[str, list[str]] = {
            ":authority": [self.authority],
            ":path": [self.path],
            ":method": [self.method],
            ":scheme": [self.scheme],
        }
        for name, value in self.headers:
            if name in ("host", ":authority"):
                continue  # already the authority
            if name.startswith(":"):
                out[name] = [value]
            else:
                out.setdefault(name, []).append(value)
        return out

    def to_json(self) -> dict[str, object]:
        return {
            "target": self.host if self.port is None else f"{self.host}:{self.port}",
            "authority": self.authority,
            "host": self.host,
            "port": self.port,
            "path": self.path,
            "method": self.method,
            "scheme": self.scheme,
            "headers": [list(h) for h in self.headers],
        }


def parse_destination(
    spec: str,
    *,
    headers: Iterable[str] = (),
    method: str = "GET",
    scheme: str = "",
) -> Request:
    """`reviews`, `reviews:9080/items?x=1`, `http://httpbin.example.com:8080/status/418`."""
    text = spec.strip()
    if not text:
        raise BadRequest("the destination is empty: give HOST[:PORT][/PATH]")
    given_scheme = ""
    if "://" in text:
        given_scheme, _, text = text.partition("://")
        given_scheme = given_scheme.lower()
        if given_scheme not in ("http", "https", "tcp", "tls"):
            raise BadRequest(f"{spec!r}: scheme {given_scheme!r} (http, https, tcp or tls)")
    cut = min((i for i in (text.find("/"), text.find("?")) if i >= 0), default=len(text))
    authority, path = text[:cut], text[cut:] or "/"
    if not path.startswith("/"):
        path = "/" + path
    try:
        parts = urlsplit(f"//{authority}")
        host, port = parts.hostname, parts.port
    except ValueError as err:
        raise BadRequest(f"{spec!r}: {err}") from None
    if not host or parts.username is not None:
        raise BadRequest(f"{spec!r}: no host: give HOST[:PORT][/PATH]")
    return Request(
        host=host.lower(),
        port=port,
        path=path,
        method=method.upper() or "GET",
        headers=tuple(parse_header(h) for h in headers),
        scheme=scheme or given_scheme or "http",
    )


def parse_header(text: str) -> tuple[str, str]:
    """`end-user: jason` (curl's -H); a value may be empty."""
    name, colon, value = text.partition(":")
    if text.startswith(":"):  # a pseudo-header, `:authority: x`
        name2, colon, value = text[1:].partition(":")
        name = ":" + name2
    name = name.strip().lower()
    if not colon or not name or name == ":":
        raise BadRequest(f"header {text!r}: write it as 'NAME: VALUE'")
    return name, value.strip()
