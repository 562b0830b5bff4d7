"""The demo app: a tiny JSON service for building a bookinfo-like chain through sidecars.

Every answer names the service and version that produced it, the caller identity
its sidecar vouched for (from `x-forwarded-client-cert`), and the request headers.
With `calls`, it first asks other services through its sidecar's HTTP proxy
(`<workload address>:15001`) and nests their answers: productpage → reviews → ratings.

A few of httpbin's paths, as Istio's tasks use them: `/status/CODE` answers with
that status, `/delay/SECONDS` answers after a while (at most 10 s). Each request is
logged (method, path, Host), so a mirrored copy shows in the app's log as in the
task. `GET /_pocketmesh/identity` names the process (workload, pid) without calling
upstreams: `pocketmesh up` proves with it that the app on a port is its own.

`--protocol tcp` is Istio's tcp-echo instead: each connection gets back
`<workload> <first line>`; a first line of `pocketmesh-identity` gets the identity.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

log = logging.getLogger("pocketmesh.demo_app")

XFCC = "x-forwarded-client-cert"
# Headers a mesh app forwards so one request can be followed across hops (as bookinfo does).
PROPAGATED = (
    "x-request-id",
    "traceparent",
    "tracestate",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "end-user",
)
UPSTREAM_TIMEOUT = 5.0
IDENTITY_PATH = "/_pocketmesh/identity"
TCP_IDENTITY = b"pocketmesh-identity"
MAX_DELAY = 10.0


@dataclass(frozen=True, slots=True)
class Settings:
    service: str
    version: str = "v1"
    workload: str = ""
    listen: str = "127.0.0.1:9080"
    proxy: str | None = None  # host:port of the sidecar's outbound HTTP proxy
    calls: tuple[str, ...] = field(default=())  # upstream URLs, e.g. http://reviews:9080/
    protocol: str = "http"  # or "tcp": an echo server

    def identity(self) -> dict[str, Any]:
        return {
            "workload": self.workload or self.service,
            "service": self.service,
            "version": self.version,
            "pid": os.getpid(),
        }


def parse_xfcc(value: str) -> dict[str, str] | None:
    """The element of `x-forwarded-client-cert` added by the nearest hop.

    Envoy appends one comma-separated element per hop, each `Key=value;Key=value`,
    with values quoted when they hold `,`, `;` or `=`. Keys are case-insensitive;
    we return them lower-cased (`by`, `uri`, `hash`, `subject`, `dns`, ...).
    """
    elements = _split(value, ",")
    if not elements:
        return None
    caller: dict[str, str] = {}
    for pair in _split(elements[-1], ";"):
        key, sep, raw = pair.partition("=")
        if not sep:
            continue
        raw = raw.strip()
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':
            raw = raw[1:-1].replace('\\"', '"')
        caller[key.strip().lower()] = raw
    return caller or None


def _split(text: str, sep: str) -> list[str]:
    """Split on `sep` outside double quotes; drop empty parts."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for ch in text:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == sep and not quoted:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    parts.append("".join(current).strip())
    return [p for p in parts if p]


class DemoApp:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None

    async def start(self) -> int:
        """Listen; returns the bound port (useful with port 0). Raises OSError if the
        address is taken, with nothing left open."""
        app = web.Application()
        app.router.add_route("GET", IDENTITY_PATH, self._identity)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        host, port = self.settings.listen.rsplit(":", 1)
        site = web.TCPSite(self._runner, host.strip("[]"), int(port))
        try:
            await site.start()
        except BaseException:
            await self.stop()
            raise
        # Only once bound: a failed bind leaves no client session to warn about.
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=UPSTREAM_TIMEOUT))
        server = site._server
        assert server is not None
        return int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _identity(self, _: web.Request) -> web.Response:
        return web.json_response(self.settings.identity())

    async def _handle(self, request: web.Request) -> web.Response:
        s = self.settings
        log.info("%s %s (Host: %s)", request.method, request.path_qs, request.host)
        status = 200
        parts = request.path.strip("/").split("/")
        if len(parts) == 2 and parts[0] == "status" and parts[1].isdigit():
            status = int(parts[1])
        elif len(parts) == 2 and parts[0] == "delay":
            try:
                await asyncio.sleep(min(float(parts[1]), MAX_DELAY))
            except ValueError:
                status = 400
        forwarded = {k: v for k in PROPAGATED if (v := request.headers.get(k)) is not None}
        upstreams = await asyncio.gather(*(self._call(url, forwarded) for url in s.calls))
        xfcc = request.headers.get(XFCC)
        body = {
            "app": s.service,
            "version": s.version,
            "workload": s.workload,
            "path": request.path_qs,
            "caller": parse_xfcc(xfcc) if xfcc else None,
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "upstreams": list(upstreams),
        }
        return web.json_response(body, status=status)

    async def _call(self, url: str, headers: dict[str, str]) -> dict[str, Any]:
        assert self._session is not None
        proxy = f"http://{self.settings.proxy}" if self.settings.proxy else None
        try:
            async with self._session.get(url, proxy=proxy, headers=headers) as resp:
                text = await resp.text()
                try:
                    answer: Any = await resp.json(content_type=None)
                except ValueError:
                    answer = text[:500]  # Envoy's own replies (no healthy upstream, 403) are text
                return {"url": url, "status": resp.status, "answer": answer}
        except (aiohttp.ClientError, TimeoutError) as err:
            return {"url": url, "status": None, "error": f"{type(err).__name__}: {err}"}


class TcpEchoApp:
    """Istio's tcp-echo: each connection is answered `<workload> <first line>`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        host, port = self.settings.listen.rsplit(":", 1)
        self._server = await asyncio.start_server(self._handle, host.strip("[]"), int(port))
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), UPSTREAM_TIMEOUT)
            if line.strip() == TCP_IDENTITY:
                answer = json.dumps(self.settings.identity()).encode() + b"\n"
            else:
                log.info("connection: %r", line[:80])
                answer = f"{self.settings.workload or self.settings.service} ".encode() + line
            writer.write(answer)
            await writer.drain()
        except (OSError, TimeoutError):
            pass
        finally:
            writer.close()


async def run(settings: Settings, stop: asyncio.Event) -> None:
    app: DemoApp | TcpEchoApp = (
        TcpEchoApp(settings) if settings.protocol == "tcp" else DemoApp(settings)
    )
    port = await app.start()
    via = f" via {settings.proxy}" if settings.proxy else ""
    calls = f", calling {', '.join(settings.calls)}{via}" if settings.calls else ""
    host = settings.listen.rsplit(":", 1)[0]
    log.info(
        "demo-app %s %s (%s) on %s:%d%s, pid %d",
        settings.service, settings.version, settings.protocol, host, port, calls, os.getpid(),
    )  # fmt: skip
    try:
        await stop.wait()
    finally:
        await app.stop()
