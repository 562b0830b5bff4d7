"""The control plane process: config in, snapshots published, xDS and debug served."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from xds_server import metrics
from xds_server.bootstrap_dir import BootstrapWriter
from xds_server.cache.snapshot import InconsistentSnapshot, MeshSnapshot, Transform, gc_paused
from xds_server.cache.store import SnapshotCache
from xds_server.galley.errors import ConfigError
from xds_server.galley.jwks import JwksFetcher
from xds_server.galley.loader import LoadResult, load_paths
from xds_server.galley.watch import config_changes
from xds_server.grpc_api.connections import Connections
from xds_server.grpc_api.csds import add_csds
from xds_server.grpc_api.services import SERVER_OPTIONS, xds_handlers
from xds_server.grpc_api.streams import DEFAULT_MAX_STREAMS, StreamHandler
from xds_server.identity import IdentityOptions, IdentityRuntime
from xds_server.pushes import PushTracker, PushTrigger

if TYPE_CHECKING:
    from xds_server.debug_http import DebugServer

log = logging.getLogger("pocketmesh")

DEFAULT_XDS_ADDRESS = "127.0.0.1:15010"
DEFAULT_DEBUG_ADDRESS = "127.0.0.1:15014"


@dataclass
class Options:
    config_dir: Path  # the first config path (kept for callers that name one directory)
    xds_address: str = DEFAULT_XDS_ADDRESS
    debug_address: str = DEFAULT_DEBUG_ADDRESS
    # Mutating debug endpoints (POST) answer only loopback peers unless this is set.
    debug_remote_admin: bool = False
    # xDS streams held at once, beyond which new ones get RESOURCE_EXHAUSTED.
    max_streams: int = DEFAULT_MAX_STREAMS
    watch: bool = True
    watch_polling: bool | None = None  # None: poll where events may not arrive (galley.watch)
    debounce_quiet: float = 0.1
    debounce_max: float = 10.0
    trust_domain: str = "cluster.local"
    # Workload identities (CA, SDS, mTLS, proxy tokens); None: plaintext, no SDS.
    identity: IdentityOptions | None = None
    # Write each WorkloadEntry's sidecar bootstrap (token included) under this
    # directory, for sidecars that dial xDS at `bootstrap_xds_address` (bootstrap_dir).
    bootstrap_dir: Path | None = None
    bootstrap_xds_address: str = ""
    # Every config file or directory, merged as one config; empty: just `config_dir`.
    config_paths: tuple[Path, ...] = ()
    # Fetches the JWKS URLs RequestAuthentications name, keeping and refreshing what it
    # fetched (20 min; a failed URL after 1 min); None: the default fetcher.
    jwks_fetcher: JwksFetcher | None = None
    jwks_check_every: float = 10.0  # how often due JWKS URLs are looked for

    @property
    def paths(self) -> tuple[Path, ...]:
        return self.config_paths or (self.config_dir,)


@dataclass
class ConfigStatus:
    """What the last load said, for the operator and /ready."""

    generation: int = 0
    loaded_at: float = 0.0
    files: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    history: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Prepared:
    """A reload up to publishing: the snapshot to publish, or why there is none."""

    started: float
    result: LoadResult
    snapshot: MeshSnapshot | None
    errors: Sequence[ConfigError]


class ControlPlane:
    def __init__(self, options: Options, *, transform: Transform | None = None) -> None:
        self.options = options
        self.cache = SnapshotCache(transform=transform)
        self.connections = Connections()
        self.identity: IdentityRuntime | None = None
        if options.identity is not None:
            self.identity = IdentityRuntime.create(options.identity, options.trust_domain)
            self.identity.attach(self.cache, self.connections)
        auth = self.identity.authenticator if self.identity else None
        refused = self.identity.secret_refused if self.identity else None
        self.handler = StreamHandler(
            self.cache, self.connections, authenticate=auth, secret_refused=refused
        )
        self.handler.max_streams = options.max_streams
        self.pushes = self.handler.observer = PushTracker(self.connections)
        self.bootstraps: BootstrapWriter | None = None
        if options.bootstrap_dir is not None:
            xds = options.bootstrap_xds_address or options.xds_address
            self.bootstraps = BootstrapWriter(options.bootstrap_dir, xds, self.identity)
        self.config_status = ConfigStatus()
        self.jwks = options.jwks_fetcher or JwksFetcher()
        self.xds_port = 0
        self.debug_port = 0
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._debug: DebugServer | None = None
        self._reloading = asyncio.Lock()

    # -- config ------------------------------------------------------------------

    def reload(self, trigger: PushTrigger | None = None) -> bool:
        """Load, validate, translate and publish the config directory.

        On any error the last good snapshot keeps serving, and the errors are
        reported with file, line and field.
        """
        trigger = trigger or PushTrigger.now("debugtrigger", "reload requested")
        return self._commit(self._prepare(), trigger)

    async def reload_async(
        self, trigger: PushTrigger | None = None, held: frozenset[str] = frozenset()
    ) -> bool:
        """`reload`, with loading and translating in a worker thread: streams keep being
        served while a large mesh is rebuilt (seconds, unscoped). One at a time.

        `held`: proxy ids of workloads whose endpoints no proxy gets in this generation
        (their own sidecars get their config): a supervisor starting or restarting a
        workload publishes it held, waits for its sidecar, then reloads without."""
        trigger = trigger or PushTrigger.now("debugtrigger", "reload requested")
        async with self._reloading:
            prepared = await asyncio.to_thread(self._prepare, held)
            return self._commit(prepared, trigger)

    def _prepare(self, held: frozenset[str] = frozenset()) -> _Prepared:
        """Everything up to publishing; touches nothing the streams read."""
        # A reload makes many objects and no cycles; a full collection during it walks
        # every stream's state too (measured: +0.1 s on the first reload with 2,000).
        with gc_paused():
            return self._load_and_build(held)

    def _load_and_build(self, held: frozenset[str] = frozenset()) -> _Prepared:
        started = time.perf_counter()
        result = load_paths(
            self.options.paths, trust_domain=self.options.trust_domain, jwks=self.jwks
        )
        self.jwks.sweep()
        if result.config is None:
            return _Prepared(started, result, None, result.errors)
        try:
            config = result.config
            if held:
                config = dataclasses.replace(
                    config,
                    workload_entries=tuple(
                        dataclasses.replace(we, healthy=False) if we.proxy_id in held else we
                        for we in config.workload_entries
                    ),
                )
            if self.identity is not None:
                trust_domain = self.identity.ca.trust_domain
                config = dataclasses.replace(
                    config, workload_identity=True, trust_domain=trust_domain
                )
            building = time.perf_counter()
            snapshot = self.cache.build(config)
            metrics.pushcontext_init_seconds.observe(time.perf_counter() - building)
        except InconsistentSnapshot as err:
            where = ", ".join(str(p) for p in self.options.paths)
            return _Prepared(started, result, None, (ConfigError(where, 0, "", "", "", str(err)),))
        return _Prepared(started, result, snapshot, ())

    def _commit(self, prepared: _Prepared, trigger: PushTrigger) -> bool:
        result, snapshot = prepared.result, prepared.snapshot
        status = self.config_status
        status.files = result.files
        status.warnings = tuple(str(w) for w in result.warnings)
        for warning in result.warnings:
            log.warning("config: %s", warning)
        elapsed = time.perf_counter() - prepared.started
        if snapshot is None or result.config is None:
            metrics.reload_seconds.labels("rejected").observe(elapsed)
            return self._reject(prepared.errors, trigger)
        self.cache.publish(snapshot)
        self.pushes.begin(snapshot.generation, snapshot.carried, trigger)
        metrics.snapshot_build_seconds.observe(elapsed)
        metrics.reload_seconds.labels("published").observe(elapsed)
        metrics.config_errors_current.set(0)
        metrics.config_generation.set(snapshot.generation)
        status.generation = snapshot.generation
        status.loaded_at = time.time()
        status.errors = ()
        rebuilt = len(snapshot.proxy_ids) - len(snapshot.carried)
        message = (
            f"config generation {snapshot.generation}: {len(result.files)} files, "
            f"{len(result.config.service_entries)} services, "
            f"{len(result.config.workload_entries)} workloads, "
            f"{rebuilt} proxies rebuilt, "
            f"{snapshot.serialized} resources serialized in {elapsed * 1000:.1f} ms"
        )
        status.history.append(message)
        del status.history[:-20]
        log.info("%s", message)
        if self.bootstraps is not None:
            self.bootstraps.write(result.config.workload_entries)
        return True

    def _reject(self, errors: object, trigger: PushTrigger) -> bool:
        errs = tuple(str(e) for e in errors)  # type: ignore[attr-defined]
        self.config_status.errors = errs
        metrics.config_errors.inc()
        metrics.config_errors_current.set(len(errs))
        kept = self.config_status.generation
        self.pushes.rejected(trigger, len(errs), kept)
        for err in errs:
            log.error("config: %s", err)
        if self.cache.ready:
            log.error("config rejected (%d errors); still serving generation %d", len(errs), kept)
        else:
            # Nothing valid yet: streams wait unanswered (grpc_api.streams), so Envoys
            # that reconnect keep their last config instead of getting an empty one.
            log.error(
                "config rejected (%d errors); no valid config loaded yet: proxies are sent "
                "nothing (they keep their last config) and /ready answers 503 until one is",
                len(errs),
            )
        return False

    @property
    def ready(self) -> bool:
        return self.cache.ready and self._server is not None

    # -- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        """Load, then bind xDS and the debug address. A port that cannot be bound raises
        OSError naming the address, after closing whatever had started.

        An invalid config does not stop the start: the server runs not ready (`/ready`
        503, the errors in `/debug/config`), sends no proxy anything until a valid
        config loads (an edit, with the watcher on; `POST /debug/reload`), and a
        supervisor's restarts (`up`, compose) keep working."""
        from xds_server.debug_http import DebugServer

        self.reload(PushTrigger.now("global", "initial load"))
        # No SO_REUSEPORT (grpc's default on Linux): a second server on a taken xDS port
        # must fail to bind, not silently share the port with the first.
        options = (*SERVER_OPTIONS, ("grpc.so_reuseport", 0))
        server = grpc.aio.server(handlers=xds_handlers(self.handler), options=options)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        add_csds(server, self.connections, self.pushes)
        if self.identity is not None:
            ca = self.identity.ca
            metrics.watch_root_expiry(lambda: ca.signing_root.not_valid_after_utc)
        address = self.options.xds_address
        try:
            try:
                if self.identity is not None and self.identity.options.xds_tls:
                    host = address.rsplit(":", 1)[0].strip("[]")
                    creds = self.identity.server_credentials(host)
                    self.xds_port = server.add_secure_port(address, creds)
                else:
                    self.xds_port = server.add_insecure_port(address)
            except RuntimeError:  # grpcio >= 1.50 raises instead of returning 0
                self.xds_port = 0
            if not self.xds_port:
                raise OSError(f"cannot bind the xDS address {address} (in use, or not local)")
            await server.start()
            self._server = server
            await self._health.set("", health_pb2.HealthCheckResponse.SERVING)
            debug = self._debug = DebugServer(self)
            try:
                self.debug_port = await debug.start(self.options.debug_address)
            except OSError as err:
                raise OSError(
                    f"cannot bind the debug address {self.options.debug_address}: "
                    f"{err.strerror or err}"
                ) from None
        except BaseException:
            await self._close(server)
            raise
        if self.options.watch:
            self._tasks.append(asyncio.create_task(self._watch()))
        if self.identity is not None:
            self._tasks.append(asyncio.create_task(self.identity.run(self._stop)))
        self._tasks.append(asyncio.create_task(self._refresh_jwks()))
        log.info(
            "pocketmesh serving xDS on %s, debug on %s, config %s",
            _with_port(self.options.xds_address, self.xds_port),
            _with_port(self.options.debug_address, self.debug_port),
            ", ".join(str(p) for p in self.options.paths),
        )

    async def _close(self, server: grpc.aio.Server) -> None:
        """Undo a start that failed half way: nothing may outlive it (no warnings about
        unclosed sessions or a closed event loop at exit)."""
        if self._debug is not None:
            await self._debug.stop()
            self._debug = None
        self._server = None
        await server.stop(0)

    async def _watch(self) -> None:
        async for paths in config_changes(
            self.options.paths,
            quiet=self.options.debounce_quiet,
            max_wait=self.options.debounce_max,
            stop=self._stop,
            polling=self.options.watch_polling,
        ):
            log.info("config change: %s", ", ".join(sorted(paths)))
            await self.reload_async(PushTrigger.for_files(paths, self.options.config_dir))

    async def _refresh_jwks(self) -> None:
        """Fetch the JWKS URLs that are due again; reload when what they give changed
        (a rotated key set, an issuer back or gone), as istiod's JWKS resolver does."""
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._stop.wait(), self.options.jwks_check_every)
                return
            except TimeoutError:
                pass
            if not self.jwks.due():
                continue
            if await asyncio.to_thread(self.jwks.refresh):
                log.info("a JWKS URL gave something new: reloading")
                await self.reload_async(PushTrigger.now("global", "JWKS refreshed"))

    async def stop(self, grace: float = 1.0) -> None:
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._debug is not None:
            await self._debug.stop()
        if self._server is not None:
            await self._server.stop(grace)

    async def run_until_stopped(self) -> None:
        await self.start()
        try:
            await self._stop.wait()
        finally:
            await self.stop()

    def request_stop(self) -> None:
        self._stop.set()


def _with_port(address: str, port: int) -> str:
    host = address.rsplit(":", 1)[0]
    return f"{host}:{port}"
