"""The requests an example's `pocketmesh.io/try` line (and `up`'s Open line) make, hop by
hop, as `explain` questions and as real requests.

A try line is a shell command; each `curl` in it is one entry request:

- `curl -x http://A:15001 http://HOST:PORT/PATH`: the workload at A calls HOST through
  its sidecar's HTTP proxy;
- `curl telnet://A:PORT`: the workload at A connects to a TCP service (its own address);
- `curl --resolve H:P:A https://H:P/PATH`: a client calls the gateway at A over TLS;
- `curl [-H 'Host: H'] http://A:P/PATH`: a client calls the proxy at A directly (a
  gateway, or a sidecar's inbound port).

An app that answers then calls what its `pocketmesh.io/calls` annotation says, through its
own sidecar, forwarding the headers Bookinfo forwards (`demo_app.PROPAGATED`): those are
the next hops, from every workload the explanation says the request may reach.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from xds_server.demo_app import PROPAGATED
from xds_server.galley.model import MeshConfig
from xds_server.runner.plan import MeshPlan

PROBE = "x-explain-probe"
_SEPARATORS = {";", "|", "||", "&&", "&", "do", "done", "then", "fi"}
_WITH_VALUE = {
    "-H", "--header", "-x", "--proxy", "-X", "--request", "--resolve", "-o", "--output",
    "-w", "--write-out", "--cacert", "-m", "--max-time", "-d", "--data", "-A", "-e", "-u",
    "--cert", "-E", "--key",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Hop:
    """One request as it leaves (or first meets) a proxy."""

    caller: str  # node id of the proxy that routes it
    destination: str  # what `explain` is asked: HOST[:PORT][/PATH] or a URL
    headers: tuple[str, ...] = ()  # "name: value"
    method: str = "GET"
    # How to send it for real: proxy (through caller's :15001), direct, tls, tcp.
    send: str = "proxy"
    address: str = ""  # where to connect: the proxy, the listener
    url: str = ""  # for `proxy`: the absolute URL; else the path
    server_name: str = ""  # for `tls`: the SNI
    via: str = ""  # where it came from, for failure messages
    client_cert: tuple[str, str] = ("", "")  # for `tls`: curl's --cert and --key files

    @property
    def header_map(self) -> dict[str, str]:
        return {
            h.split(":", 1)[0].strip().lower(): h.split(":", 1)[1].strip() for h in self.headers
        }

    def with_probe(self, n: int) -> Hop:
        if self.send == "tcp":
            return self
        headers = tuple(h for h in self.headers if not h.lower().startswith(PROBE + ":"))
        return Hop(self.caller, self.destination, (*headers, f"{PROBE}: {n}"),
                   self.method, self.send, self.address, self.url, self.server_name,
                   self.via, self.client_cert)  # fmt: skip


@dataclass
class Curl:
    url: str = ""
    proxy: str = ""
    headers: list[str] = field(default_factory=list)
    method: str = "GET"
    resolve: str = ""
    cert: str = ""
    key: str = ""


def curls(line: str) -> Iterator[Curl]:
    """Each `curl` invocation of a shell line."""
    try:
        tokens = shlex.split(line.replace(";", " ; ").replace("|", " | ").replace("&", " & "))
    except ValueError:
        return
    i = 0
    while i < len(tokens):
        if tokens[i] != "curl":
            i += 1
            continue
        curl = Curl()
        i += 1
        while i < len(tokens) and tokens[i] not in _SEPARATORS:
            token = tokens[i]
            value = tokens[i + 1] if i + 1 < len(tokens) else ""
            if token in _WITH_VALUE:
                if token in ("-H", "--header"):
                    curl.headers.append(value)
                elif token in ("-x", "--proxy"):
                    curl.proxy = value
                elif token in ("-X", "--request"):
                    curl.method = value
                elif token == "--resolve":
                    curl.resolve = value
                elif token in ("--cert", "-E"):
                    curl.cert = value
                elif token == "--key":
                    curl.key = value
                i += 2
                continue
            if "://" in token and not curl.url:
                curl.url = token
            i += 1
        if curl.url:
            yield curl


def entry_hops(line: str, config: MeshConfig) -> list[Hop]:
    """The entry requests of a try (or Open) line."""
    by_address = {we.address: we.proxy_id for we in config.workload_entries}
    hops = []
    for curl in curls(line):
        scheme, _, rest = curl.url.partition("://")
        authority, slash, path = rest.partition("/")
        path = slash + path if slash else "/"
        if curl.proxy:
            proxy = curl.proxy.split("://", 1)[-1].rstrip("/")
            caller = by_address[proxy.rsplit(":", 1)[0]]
            hops.append(Hop(caller, rest, tuple(curl.headers), curl.method, "proxy", proxy,
                            curl.url, via=line))  # fmt: skip
        elif scheme == "telnet":
            caller = by_address[authority.rsplit(":", 1)[0]]
            hops.append(Hop(caller, authority, send="tcp", address=authority, via=line))
        elif scheme == "https" and curl.resolve:
            name, port, address = curl.resolve.split(":")
            hops.append(Hop(by_address[address], curl.url, tuple(curl.headers), curl.method,
                            "tls", f"{address}:{port}", path, name, via=line,
                            client_cert=(curl.cert, curl.key)))  # fmt: skip
        elif scheme == "http":
            address = authority.rsplit(":", 1)[0]
            hops.append(Hop(by_address[address], rest, tuple(curl.headers), curl.method,
                            "direct", authority, path, via=line))  # fmt: skip
    return hops


def next_hops(hop: Hop, answer: dict[str, Any], plan: MeshPlan) -> list[Hop]:
    """What the apps the request reaches call next, with the headers they forward."""
    destination = answer["destination"]
    if destination.get("outcome", {}).get("result") not in ("routed", None):
        return []
    if destination.get("way") == "inbound":
        reached = [hop.caller]
    else:
        reached = [
            ep["workload"]
            for c in destination.get("clusters", [])
            for ep in c.get("endpoints", [])
            if ep.get("workload") and ep.get("accepts") is not False
            and (ep.get("authorization") or {}).get("allowed") is not False
        ]  # fmt: skip
    forwarded = tuple(
        f"{k}: {v}" for k, v in hop.header_map.items() if k in PROPAGATED and k != PROBE
    )
    out = []
    for node in dict.fromkeys(reached):
        app = plan.app_of(node)
        if app is None or app.protocol != "http":
            continue
        for url in app.calls:
            rest = url.split("://", 1)[1]
            out.append(Hop(node, rest, forwarded, "GET", "proxy", app.proxy, url,
                           via=f"{app.name}'s call to {url}"))  # fmt: skip
    return out
