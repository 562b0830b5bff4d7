"""The demo app: a tiny JSON service for building a bookinfo-like chain through sidecars.

Every answer names the service and version that produced it, the caller identity
its sidecar vouched for (from `x-forwarded-client-cert`), and the request headers.
With `calls`, it first asks other services through its sidecar's HTTP proxy
(`<workload address>:15001`) and nests their answers: productpage → reviews → ratings.
"""

from __future__ import annotations

import asyncio
import logging
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


@dataclass(frozen=True, slots=True)
class Settings:
    service: str
    version: str = "v1"
    workload: str = ""
    listen: str = "127.0.0.1:9080"
    proxy: str | None = None  # host:port of the sidecar's outbound HTTP proxy
    calls: tuple[str, ...] = field(default=())  # upstream URLs, e.g. http://reviews:9080/


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
        """Listen; returns the bound port (useful with port 0)."""
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=UPSTREAM_TIMEOUT))
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        host, port = self.settings.listen.rsplit(":", 1)
        site = web.TCPSite(self._runner, host.strip("[]"), int(port))
        await site.start()
        server = site._server
        assert server is not None
        return int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.Response:
        s = self.settings
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
        return web.json_response(body)

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


async def run(settings: Settings, stop: asyncio.Event) -> None:
    app = DemoApp(settings)
    port = await app.start()
    via = f" via {settings.proxy}" if settings.proxy else ""
    calls = f", calling {', '.join(settings.calls)}{via}" if settings.calls else ""
    host = settings.listen.rsplit(":", 1)[0]
    log.info("demo-app %s %s on %s:%d%s", settings.service, settings.version, host, port, calls)
    try:
        await stop.wait()
    finally:
        await app.stop()
