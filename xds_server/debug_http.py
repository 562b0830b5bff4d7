"""The debug address: health, readiness, metrics, and what each proxy is sent.

/                 the web view (xds_server/web): the mesh's graph, sync state, pushes
/healthz          the process is up
/ready            a config is being served and the xDS port is open (503 otherwise)
/metrics          Prometheus
/debug/syncz      every connected stream and its per-type sync state (JSON)
/debug/config     the config status: generation, files, errors, warnings (JSON)
/debug/config_dump?proxy=ID[&type=cluster|listener|route|endpoint|secret]
/debug/explain?proxy=ID[&dest=HOST[:PORT][/PATH]&header=NAME:VALUE&method=GET]
                  why a request goes where it goes (`pocketmesh explain`)
POST /debug/reload  reload the config now (for `serve --no-watch` and benchmarks);
                    ?hold=ID,ID publishes those workloads without their endpoints,
                    ?changed=PATH,PATH names the edited files as the push's trigger

What changes state (POST: reload, root rotation) answers only peers on loopback, unless
`serve --debug-remote-admin`; anything else gets 403 with the reason. A request that a
web page made (it carries an `Origin` header) is refused too, so a browser on the same
machine cannot be made to rotate the root. Private keys never leave: the secrets in a
config dump are redacted.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from google.protobuf.json_format import MessageToDict
from prometheus_client import CONTENT_TYPE_LATEST

from xds_server import explain, metrics, xds_types
from xds_server.protocol.untrusted import shown
from xds_server.pushes import PushTrigger
from xds_server.web import WebView

if TYPE_CHECKING:
    from xds_server.app import ControlPlane

log = logging.getLogger("pocketmesh.debug")

_TYPES_BY_SHORT = {v: k for k, v in xds_types.SHORT_NAMES.items()}
_READ_ONLY = frozenset({"GET", "HEAD", "OPTIONS"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _is_loopback(remote: str | None) -> bool:
    if not remote:
        return False
    try:
        ip = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


def admin_refusal(request: web.Request, remote_admin: bool) -> str | None:
    """Why a state-changing request may not run, or None when it may."""
    if request.method in _READ_ONLY:
        return None
    if "Origin" in request.headers:
        return (
            f"{request.method} {request.path} came from a web page (Origin "
            f"{shown(request.headers['Origin'], 100)}); use curl or pocketmesh"
        )
    if not remote_admin and not _is_loopback(request.remote):
        return (
            f"{request.method} {request.path} is accepted only from loopback, and this "
            f"request came from {shown(request.remote, 64)}: run it on the control plane's "
            "host (or in its pod), or start `pocketmesh serve --debug-remote-admin`"
        )
    return None


def syncz(plane: ControlPlane) -> list[dict[str, Any]]:
    out = []
    for conn in plane.connections:
        out.append(
            {
                "proxy": conn.node_id,
                "stream": conn.stream_id,
                "service": conn.service,
                "delta": conn.delta,
                "peer": conn.peer,
                "connected_seconds": round(time.time() - conn.connected_at, 1),
                "generation": plane.cache.current_generation(conn),
                "types": {
                    xds_types.short_name(s.type_url): {
                        "state": s.state.value,
                        "sent_version": s.sent_version,
                        "acked_version": s.acked_version,
                        "nack": s.nack_message,
                        "wildcard": s.wildcard,
                        "subscribed": len(s.subscribed),
                    }
                    for s in conn.status()
                },
            }
        )
    return out


def config_dump(plane: ControlPlane, proxy: str, type_short: str | None) -> dict[str, Any]:
    view = plane.cache.view(proxy)
    types = [_TYPES_BY_SHORT[type_short]] if type_short else list(xds_types.PUSH_ORDER)
    dump: dict[str, Any] = {"proxy": proxy, "generation": view.generation, "resources": {}}
    for type_url in types:
        items = []
        for name, resource in sorted(view.resources(type_url).items()):
            body = MessageToDict(resource.message, preserving_proto_field_name=True)
            if type_url == xds_types.SECRET:
                body = _redact(body)
            items.append({"name": name, "version": resource.version, "resource": body})
        dump["resources"][xds_types.short_name(type_url)] = items
    return dump


def _ca_dir(path: Any) -> str | None:
    return str(path.resolve()) if path is not None else None


def _redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: "[redacted]" if k == "private_key" else _redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v) for v in value]
    return value


class DebugServer:
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self._runner: web.AppRunner | None = None

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        refusal = admin_refusal(request, self.plane.options.debug_remote_admin)
        if refusal is not None:
            log.warning("debug: refused: %s", refusal)
            return web.json_response({"error": f"refused: {refusal}"}, status=403)
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except Exception as err:  # one line for the log, a reason for the caller
            log.exception("debug: %s %s failed", request.method, request.path)
            body = {"error": f"{request.method} {request.path} failed: {shown(err)}"}
            return web.json_response(body, status=500)

    async def start(self, address: str) -> int:
        app = web.Application(middlewares=[self._guard])
        app.add_routes(
            [
                web.get("/healthz", self._healthz),
                web.get("/ready", self._ready),
                web.get("/metrics", self._metrics),
                web.get("/debug/syncz", self._syncz),
                web.get("/debug/config", self._config),
                web.get("/debug/config_dump", self._config_dump),
                web.get("/debug/explain", self._explain),
                web.post("/debug/reload", self._reload),
            ]
        )
        if self.plane.identity is not None:  # /debug/ca, POST /debug/ca/rotate-root
            app.add_routes(self.plane.identity.debug_routes())
        WebView(self.plane).setup(app)  # /, /ui/state, /ui/events
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        host, port = address.rsplit(":", 1)
        site = web.TCPSite(self._runner, host, int(port))
        await site.start()
        server = site._server  # the bound socket tells the real port when port is 0
        assert server is not None
        return int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _ready(self, _: web.Request) -> web.Response:
        # The pid lets a supervisor (`pocketmesh up`) prove the answer is its own child's.
        headers = {"x-pocketmesh-pid": str(os.getpid())}
        if self.plane.ready:
            return web.Response(text="ready\n", headers=headers)
        return web.Response(status=503, text="not ready: no config served yet\n", headers=headers)

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(
            body=metrics.exposition(),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )

    async def _syncz(self, _: web.Request) -> web.Response:
        return web.json_response(syncz(self.plane))

    async def _config(self, _: web.Request) -> web.Response:
        s = self.plane.config_status
        options, identity = self.plane.options, self.plane.identity
        return web.json_response(
            {
                "config_dir": ", ".join(str(p) for p in options.paths),
                "config_paths": [str(p) for p in options.paths],
                # Where this mesh's CA is and what proxies must present: how the CLI's
                # commands find the running mesh's CA without flags.
                "xds_address": f"{options.xds_address.rsplit(':', 1)[0]}:{self.plane.xds_port}",
                "ca_dir": _ca_dir(identity.options.ca_dir) if identity else None,
                "proxy_auth": bool(identity and identity.options.proxy_auth),
                "xds_tls": bool(identity and identity.options.xds_tls),
                "pid": os.getpid(),
                "generation": s.generation,
                "loaded_at": s.loaded_at,
                "files": list(s.files),
                "errors": list(s.errors),
                "warnings": list(s.warnings),
                "history": s.history,
            }
        )

    async def _reload(self, request: web.Request) -> web.Response:
        # ?hold=ID,ID: those workloads' endpoints stay out of this generation (app.py).
        held = frozenset(filter(None, request.query.get("hold", "").split(",")))
        # ?changed=PATH,PATH: the edited files, when a supervisor watches instead (`up`).
        changed = [p for p in request.query.get("changed", "").split(",") if p][:100]
        trigger = PushTrigger.for_files(changed, self.plane.options.config_dir) if changed else None
        ok = await self.plane.reload_async(trigger, held=held)
        s = self.plane.config_status
        body = {"ok": ok, "generation": s.generation, "loaded_at": s.loaded_at}
        return web.json_response({**body, "errors": list(s.errors)}, status=200 if ok else 422)

    async def _config_dump(self, request: web.Request) -> web.Response:
        proxy = request.query.get("proxy", "")
        type_short = request.query.get("type") or None
        if not proxy:
            return web.json_response({"error": "proxy= is required"}, status=400)
        if type_short is not None and type_short not in _TYPES_BY_SHORT:
            return web.json_response(
                {"error": f"type must be one of {sorted(_TYPES_BY_SHORT)}"}, status=400
            )
        return web.json_response(config_dump(self.plane, proxy, type_short))

    async def _explain(self, request: web.Request) -> web.Response:
        proxy = request.query.get("proxy", "")
        if not proxy:
            return web.json_response({"error": "proxy= is required"}, status=400)
        if not self.plane.cache.ready:
            return web.json_response({"error": "no config is served yet"}, status=503)
        snapshot = self.plane.cache.snapshot
        try:
            destination = request.query.get("dest", "")
            wanted = None
            if destination:
                wanted = explain.parse_destination(
                    destination,
                    headers=request.query.getall("header", []),
                    method=request.query.get("method", "GET"),
                )
            state = explain.from_snapshot(
                snapshot, f"the running control plane, config generation {snapshot.generation}"
            )
            # Reads the published snapshot only; off the loop, as a big mesh takes a while.
            result = await asyncio.to_thread(explain.explain, state, proxy, wanted)
        except explain.BadRequest as err:
            return web.json_response({"error": str(err)}, status=400)
        except explain.UnknownWorkload as err:
            return web.json_response({"error": str(err)}, status=404)
        return web.json_response(result)
