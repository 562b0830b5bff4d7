"""The web view on the debug address: the page, its state as JSON, and live updates.

    GET /               the page (static, shipped in the package: no CDN, no build step)
    GET /ui/state       everything the page shows, as JSON (web/state.py)
    GET /ui/events      the same, as server-sent events, once a second

Traffic comes from each proxy's own admin endpoint (web/envoy_stats.py), polled
every `POLL` seconds only while someone looks: a page open on /ui/events, or a
/ui/state request in the last `IDLE` seconds; at most `PER_ROUND` proxies a round.
The control plane reaches a proxy's admin at its WorkloadEntry's address (the
config's, never one a proxy claims) and the port its node metadata names
(`PROXY_CONFIG.proxyAdminPort`, Istio's convention; 15000 if absent). A proxy
whose admin does not answer keeps its place in the graph, and the page says why
it has no traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp
from aiohttp import web

from xds_server.web import envoy_stats, state
from xds_server.web import topology as topo

if TYPE_CHECKING:
    from xds_server.app import ControlPlane
    from xds_server.cache.snapshot import MeshSnapshot

log = logging.getLogger("pocketmesh.web")

TICK = 1.0  # seconds between state updates sent to the page
POLL = 2.0  # seconds between polls of the proxies' admin endpoints
IDLE = 15.0  # stop polling this long after the last viewer left
ADMIN_TIMEOUT = 2.0
ADMIN_CONCURRENCY = 8
PER_ROUND = 32  # proxies polled per round
MAX_ADMIN_BYTES = 8 * 2**20  # a proxy's /clusters in a mesh of thousands of services

_STATIC = {
    "/": ("index.html", "text/html"),
    "/ui/app.js": ("app.js", "text/javascript"),
    "/ui/style.css": ("style.css", "text/css"),
    "/ui/icon.svg": ("icon.svg", "image/svg+xml"),
}
_HEADERS = {
    # Everything the page needs comes from here: no CDN, no inline script.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}
_STATS_QUERY = "/stats?format=json&usedonly&filter=" + quote(envoy_stats.STATS_FILTER, safe="")


class WebView:
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self.window = envoy_stats.TrafficWindow()
        self.stats_errors: dict[str, str] = {}
        self._topology: tuple[MeshSnapshot, topo.Topology] | None = None
        self._subscribers: set[asyncio.Queue[bytes | None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._last_seen = 0.0
        self._next = 0  # where the next round starts, when not every proxy fits in one

    def setup(self, app: web.Application) -> None:
        app.add_routes([web.get(path, self._page) for path in _STATIC])
        app.add_routes([web.get("/ui/state", self._state), web.get("/ui/events", self._events)])
        app.on_shutdown.append(self._shutdown)

    # -- the state --------------------------------------------------------------------

    def topology(self) -> topo.Topology:
        snapshot = self.plane.cache.snapshot
        if self._topology is None or self._topology[0] is not snapshot:

            def resources_of(node_id: str, type_url: str) -> Any:
                return snapshot.view(node_id).resources(type_url)

            self._topology = (snapshot, topo.build(snapshot.mesh, resources_of))
        return self._topology[1]

    def state(self) -> dict[str, Any]:
        return state.build(self.plane, self.topology(), self.window, self.stats_errors)

    # -- polling the proxies --------------------------------------------------------------

    async def poll(self) -> None:
        """Sample connected proxies' admin endpoints: all of them, or in a large mesh the
        next `PER_ROUND` in turn (rates are over the samples' real interval either way)."""
        topology = self.topology()
        targets: dict[str, str] = {}
        for conn in self.plane.connections:
            node = topology.nodes.get(conn.node_id)
            info = self.plane.pushes.node(conn)
            if node is None or info is None or not node.address:
                continue
            host = f"[{node.address}]" if ":" in node.address else node.address
            targets[conn.node_id] = f"http://{host}:{info.admin_port}"
        self.window.keep(targets)
        for gone in [n for n in self.stats_errors if n not in targets]:
            del self.stats_errors[gone]
        order = sorted(targets)
        if len(order) > PER_ROUND:
            start = self._next % len(order)
            order = (order[start:] + order[:start])[:PER_ROUND]
            self._next = start + PER_ROUND
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=ADMIN_TIMEOUT),
                connector=aiohttp.TCPConnector(limit=ADMIN_CONCURRENCY),
            )
        await asyncio.gather(*(self._sample(n, targets[n]) for n in order))

    async def _sample(self, node_id: str, admin: str) -> None:
        try:
            clusters = await self._fetch(admin + "/clusters?format=json")
            stats = await self._fetch(admin + _STATS_QUERY)
            # Parsing a large proxy's JSON is not the xDS streams' time: off the loop.
            sample = await asyncio.to_thread(_parse, time.monotonic(), clusters, stats)
        except (aiohttp.ClientError, TimeoutError, ValueError) as err:
            self.stats_errors[node_id] = f"admin {admin} unreachable: {_reason(err)}"
            return
        self.stats_errors.pop(node_id, None)
        self.window.add(node_id, sample)

    async def _fetch(self, url: str) -> bytes:
        assert self._session is not None
        async with self._session.get(url) as resp:
            resp.raise_for_status()
            body = await resp.content.read(MAX_ADMIN_BYTES + 1)
        if len(body) > MAX_ADMIN_BYTES:
            raise ValueError(f"answer larger than {MAX_ADMIN_BYTES // 2**20} MiB")
        return body

    # -- serving ---------------------------------------------------------------------------

    def _watching(self) -> None:
        self._last_seen = time.monotonic()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        next_poll = 0.0
        try:
            while self._subscribers or time.monotonic() - self._last_seen < IDLE:
                if time.monotonic() >= next_poll:
                    next_poll = time.monotonic() + POLL
                    await self.poll()
                if self._subscribers:
                    data = json.dumps(self.state(), separators=(",", ":")).encode()
                    for queue in list(self._subscribers):
                        _offer(queue, data)
                await asyncio.sleep(TICK)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("web view: sampling failed")
        finally:
            await self._close_session()

    async def _page(self, request: web.Request) -> web.Response:
        name, content_type = _STATIC[request.path]
        body = (resources.files(__package__) / "static" / name).read_bytes()  # a few KB
        return web.Response(body=body, content_type=content_type, headers=_HEADERS)

    async def _state(self, _: web.Request) -> web.Response:
        self._watching()
        return web.json_response(self.state(), headers={"Cache-Control": "no-cache"})

    async def _events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=1)
        self._subscribers.add(queue)
        self._watching()
        try:
            first = json.dumps(self.state(), separators=(",", ":")).encode()
            await response.write(b"data: " + first + b"\n\n")
            while (data := await queue.get()) is not None:
                await response.write(b"data: " + data + b"\n\n")
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            pass  # the page went away
        finally:
            self._subscribers.discard(queue)
            self._last_seen = time.monotonic()
        return response

    async def _shutdown(self, _: web.Application) -> None:
        for queue in list(self._subscribers):
            _offer(queue, None)  # ends each open /ui/events
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._close_session()

    async def _close_session(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


def _parse(at: float, clusters: bytes, stats: bytes) -> envoy_stats.ProxyStats:
    return envoy_stats.parse(at, json.loads(clusters), json.loads(stats))


def _offer(queue: asyncio.Queue[bytes | None], item: bytes | None) -> None:
    """Replace what a slow page has not read yet: only the newest state matters."""
    with contextlib.suppress(asyncio.QueueEmpty):
        queue.get_nowait()
    queue.put_nowait(item)


def _reason(err: BaseException) -> str:
    if isinstance(err, TimeoutError):
        return f"no answer within {ADMIN_TIMEOUT:g}s"
    return str(err) or type(err).__name__
