"""The one stream handler every xDS method hands its stream to.

It feeds requests, as they arrive, and cache publishes to the protocol state
machine, and writes the encoded responses. Protocol errors become gRPC status
codes here and only here:

    ProtocolError     INVALID_ARGUMENT     no node id, a type the service does not serve
    LimitExceeded     RESOURCE_EXHAUSTED   more names than a stream may subscribe to
    PermissionDenied  PERMISSION_DENIED    another workload's token or address
    XdsError          FAILED_PRECONDITION

Each refusal is one bounded log line: anything the client sent is passed through
`protocol.untrusted.shown` first.

No stream is answered before a valid config has been published: a control plane
started on a broken config (restarted after a bad edit, say) would otherwise send
every reconnecting Envoy an empty config, which Envoy applies, dropping its listeners
and clusters. Such a stream is authenticated and then waits, unanswered, while Envoy
keeps serving its last config; the first publish wakes it (Istio's istiod likewise
sends nothing until its config has synced).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from envoy.service.discovery.v3.discovery_pb2 import (
    DeltaDiscoveryRequest,
    DiscoveryRequest,
)
from google.protobuf.message import DecodeError

from xds_server import metrics, xds_types
from xds_server.cache import config_source
from xds_server.cache.store import SnapshotCache
from xds_server.grpc_api.connections import Connection, Connections
from xds_server.grpc_api.observer import NullObserver, StreamObserver
from xds_server.protocol.delta import DeltaStream
from xds_server.protocol.errors import LimitExceeded, PermissionDenied, ProtocolError, XdsError
from xds_server.protocol.events import Acked, DeltaResponse, Event, Nacked, SotwResponse
from xds_server.protocol.sotw import SotwStream
from xds_server.protocol.untrusted import shown

log = logging.getLogger("pocketmesh.xds")

# Kubernetes names a pod in at most 253 characters and its namespace in 63.
MAX_NODE_ID = 512
# ~40 KB each (measured: docs/faults.md): 10,000 streams, ~0.4 GB at most.
DEFAULT_MAX_STREAMS = 10_000

# Decides whether the peer behind `context` may act as `node_id`; raises PermissionDenied.
Authenticator = Callable[[str, grpc.aio.ServicerContext], None]
# Told when a proxy asks for secrets it is not sent: (node id, names, first time on
# this stream); the identity runtime logs and counts them.
SecretRefusal = Callable[[str, list[str], bool], None]


_STATUS: dict[type[XdsError], tuple[grpc.StatusCode, str]] = {
    ProtocolError: (grpc.StatusCode.INVALID_ARGUMENT, "xDS protocol error"),
    LimitExceeded: (grpc.StatusCode.RESOURCE_EXHAUSTED, "over a limit"),
    PermissionDenied: (grpc.StatusCode.PERMISSION_DENIED, "refused"),
}


class _ClientGone(Exception):
    """A write failed because the client's stream is gone; nothing to report."""


@dataclass(frozen=True, slots=True)
class StreamKind:
    service: str  # "ADS", "CDS", ... as shown to operators
    delta: bool
    types: frozenset[str]

    @property
    def ads(self) -> bool:
        return self.service == "ADS"

    @property
    def flavour(self) -> str:
        """How the proxy's resources must point at xDS: over ADS or per-type services."""
        if self.ads:
            return config_source.ADS
        return config_source.DELTA_GRPC if self.delta else config_source.GRPC


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:  # called from a thread without a loop
        return None


class StreamHandler:
    def __init__(
        self,
        cache: SnapshotCache,
        connections: Connections,
        authenticate: Authenticator | None = None,
        secret_refused: SecretRefusal | None = None,
    ) -> None:
        self.cache = cache
        self.connections = connections
        self.authenticate = authenticate
        self.observer: StreamObserver = NullObserver()  # push timing, telemetry (pushes.py)
        self.secret_refused = secret_refused
        self.waiting = 0  # streams waiting for the first valid config
        # Calls being handled, before their first request too: each holds ~40 KB, so
        # their number bounds what clients can make the server hold (`serve --max-streams`).
        self.max_streams = DEFAULT_MAX_STREAMS
        self.active = 0
        self._refusing = False

    async def handle(
        self,
        kind: StreamKind,
        requests: AsyncIterator[Any],
        context: grpc.aio.ServicerContext,
    ) -> None:
        stream: _Stream | None = None
        if self.active >= self.max_streams:
            metrics.streams_refused.inc()
            if not self._refusing:  # said once per crossing, not once per call
                self._refusing = True
                log.warning(
                    "refusing new xDS streams: %d open, the limit (serve --max-streams)",
                    self.active,
                )
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"this server holds {self.active} xDS streams, its limit (--max-streams)",
            )
            return
        self.active += 1
        try:
            async for request in requests:
                if stream is None:
                    stream = await self._open(kind, request, context)
                await stream.on_request(request)
        except (grpc.aio.AioRpcError, _ClientGone):
            pass  # the client went away mid-read or mid-write
        except DecodeError as err:  # bytes that are no DiscoveryRequest
            who = stream.conn.node_id if stream is not None else "a client"
            log.warning("undecodable request from %s (%s): %s", shown(who), context.peer(), err)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"undecodable request: {err}")
        except XdsError as err:
            code, what = next(
                (v for k, v in _STATUS.items() if isinstance(err, k)),
                (grpc.StatusCode.FAILED_PRECONDITION, "refused"),
            )
            who = stream.conn.node_id if stream is not None else "a client"
            log.warning("%s %s from %s: %s", what, shown(who), context.peer(), err)
            await context.abort(code, str(err))
        finally:
            self.active -= 1
            self._refusing = self._refusing and self.active >= self.max_streams
            if stream is not None:
                stream.close()

    async def _open(
        self, kind: StreamKind, first: object, context: grpc.aio.ServicerContext
    ) -> _Stream:
        assert isinstance(first, DiscoveryRequest | DeltaDiscoveryRequest)
        node_id = first.node.id
        if not node_id:
            raise ProtocolError("the first request of a stream must carry node.id")
        if len(node_id) > MAX_NODE_ID:
            raise ProtocolError(
                f"node.id is {len(node_id)} characters long; at most {MAX_NODE_ID}: "
                f"{shown(node_id, 64)}"
            )
        if self.authenticate is not None:
            self.authenticate(node_id, context)
        if not self.cache.ready:
            await self._until_published(node_id)
            if self.authenticate is not None:  # its address too, now WorkloadEntries are known
                self.authenticate(node_id, context)
        flavour = kind.flavour
        view = self.cache.view(node_id, flavour)
        machine: SotwStream | DeltaStream
        if kind.delta:
            machine = DeltaStream(view, allowed_types=kind.types, ads=kind.ads)
        else:
            machine = SotwStream(view, allowed_types=kind.types, ads=kind.ads)
        conn = self.connections.add(node_id, kind.service, kind.delta, context.peer(), machine)
        conn.flavour = flavour
        conn.hold(view)
        stream = _Stream(self, kind, conn, machine, context)
        stream.cancel_watch = self.cache.watch(stream.wake, node_id)
        metrics.connected_proxies.inc()
        self.observer.opened(conn, first.node)
        if not self.cache.snapshot.push_context.proxy(node_id):
            log.warning("proxy %s names no WorkloadEntry: it gets an empty config", shown(node_id))
        flavour_note = " delta" if kind.delta else ""
        log.info("proxy %s connected (%s%s)", shown(node_id), kind.service, flavour_note)
        return stream

    async def _until_published(self, node_id: str) -> None:
        """Wait for the first valid config (see the module docstring)."""
        loop = asyncio.get_running_loop()
        published = asyncio.Event()

        def wake() -> None:  # called by the publishing thread
            loop.call_soon_threadsafe(published.set)

        # Watch first, then look: a publish in between is not missed.
        cancel = self.cache.watch(wake)
        self.waiting += 1
        try:
            if not self.cache.ready:
                log.warning(
                    "proxy %s connected, but no valid config is loaded yet: it is sent "
                    "nothing (and keeps its last config) until one is",
                    shown(node_id),
                )
            while not self.cache.ready:
                await published.wait()
                published.clear()
        finally:
            self.waiting -= 1
            cancel()


class _Stream:
    """One open stream: its state machine, and the one writer its responses go through.

    Requests are handled in the handler's own read loop, as they arrive; a publish
    schedules a push task. Both take `_writing`, so the machine's events go out in
    the order it made them, and one response is written at a time.
    """

    def __init__(
        self,
        handler: StreamHandler,
        kind: StreamKind,
        conn: Connection,
        machine: SotwStream | DeltaStream,
        context: grpc.aio.ServicerContext,
    ) -> None:
        self.handler = handler
        self.kind = kind
        self.conn = conn
        self.machine = machine
        self.context = context
        self.cancel_watch: Callable[[], None] | None = None
        self._loop = asyncio.get_running_loop()
        self._main = asyncio.current_task()
        self._writing = asyncio.Lock()
        self._push_pending = False
        self._woken_at = 0.0
        self._pushes: set[asyncio.Task[None]] = set()
        self._secrets_refused = False

    async def on_request(self, request: Any) -> None:
        async with self._writing:
            self.handler.observer.request(self.conn, request)
            events = self.machine.on_request(request)
            if request.type_url == xds_types.SECRET and self.handler.secret_refused is not None:
                self._check_secret_names(request)
            await self._emit(events)

    def _check_secret_names(self, request: Any) -> None:
        asked = request.resource_names_subscribe if self.kind.delta else request.resource_names
        available = self.machine.view.resources(xds_types.SECRET)
        refused = [name for name in asked if name != "*" and name not in available]
        if refused and self.handler.secret_refused is not None:
            self.handler.secret_refused(self.conn.node_id, refused, not self._secrets_refused)
            self._secrets_refused = True

    def wake(self) -> None:
        """The cache published: push what changed (callable from any thread)."""
        if self._push_pending:
            return
        self._push_pending = True
        self._woken_at = time.monotonic()
        if _running_loop() is self._loop:
            # Publishing on the loop (reload, watcher): no self-pipe write per
            # stream; with 2,000 streams those writes took 0.2 s of a publish.
            self._schedule_push()
        else:
            self._loop.call_soon_threadsafe(self._schedule_push)

    def _schedule_push(self) -> None:
        task = self._loop.create_task(self._push())
        self._pushes.add(task)
        task.add_done_callback(self._pushes.discard)

    async def _push(self) -> None:
        try:
            async with self._writing:
                # Reset first: a publish from here on schedules another push.
                self._push_pending = False
                conn = self.conn
                view = self.handler.cache.view(conn.node_id, conn.flavour)
                if conn.holds(view):
                    return
                conn.hold(view)
                await self._emit(self.machine.on_view(view))
                self.handler.observer.pushed(conn, time.monotonic() - self._woken_at)
        except (asyncio.CancelledError, grpc.aio.AioRpcError):
            raise
        except _ClientGone:
            if self._main is not None:
                self._main.cancel()
        except Exception:
            log.exception("push to proxy %s failed; closing its stream", shown(self.conn.node_id))
            if self._main is not None:
                self._main.cancel()

    def close(self) -> None:
        for task in list(self._pushes):
            task.cancel()
        if self.cancel_watch is not None:
            self.cancel_watch()
        self.handler.connections.remove(self.conn)
        metrics.connected_proxies.dec()
        self.handler.observer.closed(self.conn)
        log.info("proxy %s disconnected (%s)", shown(self.conn.node_id), self.kind.service)

    async def _emit(self, events: list[Event]) -> None:
        node_id = shown(self.conn.node_id)
        observer = self.handler.observer
        for event in events:
            nbytes, started = 0, time.perf_counter()
            if isinstance(event, SotwResponse | DeltaResponse):
                data = event.encode()
                nbytes = len(data)
                metrics.pushes.labels(xds_types.short_name(event.type_url)).inc()
                metrics.push_bytes.inc(nbytes)
                try:
                    await self.context.write(data)
                except grpc.aio.InternalError as err:  # the stream ended under the write
                    raise _ClientGone from err
            elif isinstance(event, Nacked):
                metrics.nacks.labels(xds_types.short_name(event.type_url)).inc()
                log.warning(
                    "proxy %s rejected %s version %s (%s): %s",
                    node_id,
                    xds_types.short_name(event.type_url),
                    event.version,
                    shown(", ".join(event.resource_names[:10])),
                    shown(event.message),
                )
            elif isinstance(event, Acked):
                log.debug(
                    "proxy %s acked %s %s",
                    node_id,
                    xds_types.short_name(event.type_url),
                    event.version,
                )
            observer.event(self.conn, event, nbytes, time.perf_counter() - started)
