"""Pushes as an operator sees them: what changed, how many proxies, how long to the last ACK.

`PushTracker` is the stream handler's observer (grpc_api.observer). It does no I/O
and reads the clock it was given, so it is driven in tests with plain objects:

- `begin()` opens a push record when the control plane publishes a generation: its
  targets are the connected proxies the change can reach (the snapshot's `carried`
  proxies are not woken, so they are not waited for);
- a secrets change (SVID renewal, root rotation) opens one lazily, when the first
  stream is pushed a newer secrets epoch;
- a target converges when, holding the record's generation, none of its types is
  STALE: `pilot_proxy_convergence_time` observes config change -> that last ACK.
  A target that NACKs settles as rejected; one that disconnects is dropped; one
  still pending after `timeout` seconds is counted as not converged.

It also records istiod's per-stream metrics: responses and their sizes and push
times by type, queue time, rejects by type and node, and expired nonces (a
request answering a nonce that is not the latest sent, in SotW; one not
outstanding, in Delta).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xds_server import metrics
from xds_server.protocol.events import Acked, DeltaResponse, Nacked, SotwResponse, SyncState

if TYPE_CHECKING:
    from xds_server.grpc_api.connections import Connection, Connections
    from xds_server.protocol.events import Event

DEFAULT_ADMIN_PORT = 15000  # Istio's proxyAdminPort, and `pocketmesh up`'s


@dataclass(frozen=True, slots=True)
class PushTrigger:
    """Why a reload happened (istiod's trigger types: config, debugtrigger, global, secret)."""

    type: str
    what: str
    changed_at: float  # wall-clock time of the change (the first edit of a debounced batch)

    @classmethod
    def now(cls, type: str, what: str, wall: Callable[[], float] = time.time) -> PushTrigger:
        return cls(type, what, wall())

    @classmethod
    def for_files(
        cls, paths: Iterable[str], config_dir: Path, wall: Callable[[], float] = time.time
    ) -> PushTrigger:
        """Edited files: the change started at the oldest of their mtimes (the debounce
        started there), never earlier than `max_age` ago (a copied file keeps its mtime)."""
        now = wall()
        names = []
        mtimes = []
        for path in sorted(paths):
            names.append(_relative(path, config_dir))
            with contextlib.suppress(OSError):  # removed: no mtime
                mtimes.append(os.stat(path).st_mtime)
        first = min((m for m in mtimes if now - 60.0 <= m <= now), default=now)
        metrics.debounce_time.observe(now - first)
        shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        return cls("config", f"{shown} changed", first)


def _relative(path: str, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except (ValueError, OSError):
        return Path(path).name


@dataclass(slots=True)
class PushRecord:
    number: int
    trigger: str
    what: str
    generation: int  # the config generation pushed (secrets: the generation held then)
    secret_epoch: int  # > 0 for a secrets push
    changed_at: float  # wall clock
    started: float  # monotonic, mapped from changed_at
    targets: int = 0
    pending: dict[int, Connection] = field(default_factory=dict)  # stream id -> conn
    converged: int = 0
    rejected: int = 0
    dropped: int = 0  # disconnected before converging
    timed_out: int = 0
    last_ack: float | None = None  # seconds from the change to the last target's ACK
    error: str = ""  # a rejected config: why nothing was pushed
    proxies: list[str] = field(default_factory=list)  # the first few targets, for display

    @property
    def done(self) -> bool:
        return not self.pending

    def as_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "trigger": self.trigger,
            "what": self.what,
            "generation": self.generation,
            "secret_epoch": self.secret_epoch,
            "changed_at": self.changed_at,
            "targets": self.targets,
            "proxies": self.proxies,
            "converged": self.converged,
            "rejected": self.rejected,
            "pending": len(self.pending),
            "dropped": self.dropped,
            "timed_out": self.timed_out,
            "last_ack_seconds": self.last_ack,
            "error": self.error,
        }


@dataclass(slots=True)
class ProxyNode:
    """What a stream's first request said about its proxy, and what it was sent."""

    node_id: str
    cluster: str = ""
    envoy_version: str = ""
    admin_port: int = DEFAULT_ADMIN_PORT
    # type URL -> latest nonce sent (SotW), or the nonces not yet answered (Delta)
    latest_nonce: dict[str, str] = field(default_factory=dict)
    outstanding: dict[str, set[str]] = field(default_factory=dict)
    nack_code: dict[str, int] = field(default_factory=dict)
    last_ack: dict[str, float] = field(default_factory=dict)  # type URL -> wall clock


class PushTracker:
    """Implements grpc_api.observer.StreamObserver."""

    def __init__(
        self,
        connections: Connections,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        history: int = 20,
        timeout: float = 60.0,
    ) -> None:
        self.connections = connections
        self._clock = clock
        self._wall = wall
        self._timeout = timeout
        self._numbers = 0
        self._records: deque[PushRecord] = deque(maxlen=history)
        self._open: list[PushRecord] = []
        self._nodes: dict[int, ProxyNode] = {}
        self._secret_epoch = 0

    # -- what the control plane says ----------------------------------------------------

    def begin(self, generation: int, carried: Iterable[str], trigger: PushTrigger) -> PushRecord:
        """A generation was published: wait for every proxy it reaches to ACK it."""
        skip = frozenset(carried)
        targets = [c for c in self.connections if c.node_id not in skip]
        return self._open_record(trigger.type, trigger.what, generation, 0, trigger, targets)

    def rejected(self, trigger: PushTrigger, errors: int, serving: int) -> PushRecord:
        """A reload found errors: nothing was pushed, generation `serving` stays."""
        record = self._new_record(trigger.type, trigger.what, serving, 0, trigger.changed_at)
        plural = "s" if errors != 1 else ""
        record.error = f"{errors} error{plural}: still serving generation {serving}"
        return record

    def records(self) -> list[dict[str, Any]]:
        """The last pushes, newest first."""
        self.expire()
        return [r.as_dict() for r in reversed(self._records)]

    def node(self, conn: Connection) -> ProxyNode | None:
        return self._nodes.get(conn.stream_id)

    def last_ack(self, conn: Connection, type_url: str) -> float | None:
        node = self._nodes.get(conn.stream_id)
        return node.last_ack.get(type_url) if node else None

    def expire(self) -> None:
        """Close records whose targets went away or took longer than `timeout`."""
        if not self._open:
            return
        now = self._clock()
        live = {c.stream_id for c in self.connections}
        for record in list(self._open):
            for stream_id in [s for s in record.pending if s not in live]:
                del record.pending[stream_id]
                record.dropped += 1
            if record.pending and now - record.started > self._timeout:
                record.timed_out += len(record.pending)
                record.pending.clear()
            if record.done:
                self._open.remove(record)

    # -- StreamObserver -------------------------------------------------------------

    def opened(self, conn: Connection, node: Any) -> None:
        info = ProxyNode(conn.node_id)
        if node is not None:
            info.cluster = node.cluster
            info.admin_port = admin_port(node)
            if node.HasField("user_agent_build_version"):
                v = node.user_agent_build_version.version
                info.envoy_version = f"{v.major_number}.{v.minor_number}.{v.patch}"
        self._nodes[conn.stream_id] = info
        self._secret_epoch = max(self._secret_epoch, conn.secret_epoch)
        metrics.xds_clients.labels(_version_label(info)).inc()

    def closed(self, conn: Connection) -> None:
        info = self._nodes.pop(conn.stream_id, None)
        if info is not None:
            metrics.xds_clients.labels(_version_label(info)).dec()
        for record in self._open:
            if record.pending.pop(conn.stream_id, None) is not None:
                record.dropped += 1
        self._open = [r for r in self._open if not r.done]

    def request(self, conn: Connection, request: Any) -> None:
        info = self._nodes.get(conn.stream_id)
        nonce = request.response_nonce
        if info is None or not nonce:
            return
        type_url = request.type_url
        if conn.delta:
            expired = nonce not in info.outstanding.get(type_url, ())
        else:
            expired = nonce != info.latest_nonce.get(type_url)
        if expired:
            metrics.expired_nonce.inc(metrics.metric_type(type_url))
        elif request.HasField("error_detail"):
            info.nack_code[type_url] = request.error_detail.code

    def event(self, conn: Connection, event: Event, nbytes: int, seconds: float) -> None:
        info = self._nodes.get(conn.stream_id)
        kind = metrics.metric_type(event.type_url)
        if isinstance(event, SotwResponse | DeltaResponse):
            metrics.xds_pushes.inc(kind)
            metrics.push_time.labels(kind).observe(seconds)
            metrics.config_size_bytes.labels(kind).observe(nbytes)
            if info is not None:
                if isinstance(event, DeltaResponse):
                    info.outstanding.setdefault(event.type_url, set()).add(event.nonce)
                else:
                    info.latest_nonce[event.type_url] = event.nonce
            return
        if info is not None and conn.delta:
            info.outstanding.get(event.type_url, set()).discard(event.nonce)
        if isinstance(event, Nacked):
            metrics.total_xds_rejects.inc(kind)
            code = info.nack_code.pop(event.type_url, 13) if info is not None else 13
            if kind in metrics.type_rejects:
                metrics.type_rejects[kind].labels(conn.node_id, str(code)).inc()
        elif isinstance(event, Acked) and info is not None:
            info.last_ack[event.type_url] = self._wall()
        self._settle(conn)

    def pushed(self, conn: Connection, queued: float) -> None:
        metrics.proxy_queue_time.observe(queued)
        if conn.secret_epoch > self._secret_epoch:
            # Secrets changed (renewal, rotation): every stream was woken.
            self._secret_epoch = conn.secret_epoch
            now = self._wall()
            trigger = PushTrigger("secret", "workload certificates or trust bundle", now - queued)
            self._open_record(
                "secret", trigger.what, conn.generation, conn.secret_epoch, trigger,
                list(self.connections),
            )  # fmt: skip
        self._settle(conn)

    # -- internals ------------------------------------------------------------------

    def _new_record(
        self, trigger: str, what: str, generation: int, epoch: int, changed_at: float
    ) -> PushRecord:
        self._numbers += 1
        started = self._clock() - max(0.0, self._wall() - changed_at)
        record = PushRecord(self._numbers, trigger, what, generation, epoch, changed_at, started)
        self._records.append(record)
        return record

    def _open_record(
        self,
        trigger: str,
        what: str,
        generation: int,
        epoch: int,
        when: PushTrigger,
        targets: list[Connection],
    ) -> PushRecord:
        self.expire()
        metrics.push_triggers.inc(trigger)
        record = self._new_record(trigger, what, generation, epoch, when.changed_at)
        record.pending = {c.stream_id: c for c in targets}
        record.targets = len(record.pending)
        record.proxies = sorted({c.node_id for c in targets})[:8]
        if record.pending:
            self._open.append(record)
        return record

    def _settle(self, conn: Connection) -> None:
        """Has `conn` converged on the records that wait for it?"""
        waiting = [r for r in self._open if conn.stream_id in r.pending and _holds(conn, r)]
        if not waiting:
            return
        states = [s.state for s in conn.status()]
        if SyncState.STALE in states:
            return
        now = self._clock()
        rejected = SyncState.ERROR in states
        for record in waiting:
            del record.pending[conn.stream_id]
            if rejected:
                record.rejected += 1
                continue
            record.converged += 1
            took = max(0.0, now - record.started)
            record.last_ack = max(record.last_ack or 0.0, took)
            metrics.proxy_convergence_time.observe(took)
        self._open = [r for r in self._open if not r.done]


def _holds(conn: Connection, record: PushRecord) -> bool:
    if record.secret_epoch:
        return conn.secret_epoch >= record.secret_epoch
    return conn.generation >= record.generation


def _version_label(info: ProxyNode) -> str:
    return f"envoy-{info.envoy_version}" if info.envoy_version else "unknown"


def admin_port(node: Any) -> int:
    """The proxy's admin port from its node metadata, as Istio's agents send it
    (`PROXY_CONFIG.proxyAdminPort`); Istio's default 15000 otherwise."""
    # `in` first: indexing a protobuf map inserts the key.
    if "PROXY_CONFIG" not in node.metadata.fields:
        return DEFAULT_ADMIN_PORT
    proxy_config = node.metadata.fields["PROXY_CONFIG"].struct_value.fields
    if "proxyAdminPort" not in proxy_config:
        return DEFAULT_ADMIN_PORT
    value = proxy_config["proxyAdminPort"]
    kind = value.WhichOneof("kind")
    raw = value.number_value if kind == "number_value" else value.string_value
    try:
        port = int(raw)
    except ValueError:
        return DEFAULT_ADMIN_PORT
    return port if 0 < port < 65536 else DEFAULT_ADMIN_PORT
