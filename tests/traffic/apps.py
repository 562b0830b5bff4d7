"""Test apps and a client for the traffic tests: real sockets on 127/8, no mocks.

`VersionApp` answers any method with JSON naming itself and echoing what it got;
`?sleep=S` makes it slow and `?status=N` picks the status code, so timeouts,
retries, circuit breakers and outlier detection can be driven from the client.
Every request it receives is recorded (mirroring shows up there).
"""

from __future__ import annotations

import http.client
import http.server
import json
import socket
import socketserver
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


class VersionApp:
    def __init__(self, name: str, host: str, port: int) -> None:
        self.name = name
        self.seen: list[Seen] = []
        self.fail_next = 0  # answer this many requests with 503 (for retries)
        self.always_status: int | None = None  # answer everything with this (for outliers)
        app = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # Headers and body go out in two writes: without this, Nagle and delayed
                # ACKs add ~40 ms to every request on a kept-alive connection.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def _answer(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(url.query))
                # Repeated headers joined, as a proxy would fold them.
                headers = {
                    k.lower(): ",".join(self.headers.get_all(k) or ())
                    for k in set(self.headers.keys())
                }
                length = int(headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                app.seen.append(Seen(self.command, self.path, headers))
                status = int(query.get("status", 200))
                if app.always_status is not None:
                    status = app.always_status
                elif app.fail_next > 0:
                    app.fail_next -= 1
                    status = 503
                if "sleep" in query:
                    time.sleep(float(query["sleep"]))
                body = json.dumps(
                    {"app": app.name, "path": self.path, "method": self.command, "headers": headers}
                ).encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # the client gave up (timeouts are what some tests check)
                    self.close_connection = True

            do_GET = do_POST = do_PUT = do_DELETE = do_OPTIONS = do_PATCH = _answer

            def log_message(self, *args: Any) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server((host, port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> VersionApp:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class TcpEchoApp:
    """Answers each TCP connection with `<name> <first line>` (Istio's tcp-echo)."""

    def __init__(self, name: str, host: str, port: int) -> None:
        self.name = name
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(64)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self._stopped = False

    def _serve(self) -> None:
        while not self._stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = conn.recv(1024)
                conn.sendall(f"{self.name} ".encode() + data)

    def start(self) -> TcpEchoApp:
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stopped = True
        self.sock.close()


class StreamApp(socketserver.ThreadingTCPServer):
    """A TCP server on a free port of `host`, one `handler` per connection, serving in a
    thread from `start()` to `stop()` (upstreams that check what Envoy sends them)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str, handler: type[socketserver.StreamRequestHandler]) -> None:
        super().__init__((host, 0), handler)
        self.port = int(self.server_address[1])

    def start(self) -> StreamApp:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: str
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def app(self) -> str | None:
        return self.data.get("app") if self.data else None


def request(
    proxy: str,
    url: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    timeout: float = 5,
) -> Reply:
    """Send one request through an HTTP proxy (`host:port`) in absolute form, like `curl -x`."""
    host, port = proxy.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        authority = url.removeprefix("http://").split("/", 1)[0]
        conn.request(method, url, headers={"Host": authority, **(headers or {})})
        resp = conn.getresponse()
        body = resp.read().decode(errors="replace")
        try:
            data = json.loads(body)
        except ValueError:
            data = {}
        return Reply(
            resp.status,
            {k.lower(): v for k, v in resp.getheaders()},
            body,
            data if isinstance(data, dict) else {},
        )
    finally:
        conn.close()


def direct(address: str, path: str, **kw: Any) -> Reply:
    """A plain request to `address` (an ingress gateway), Host from `headers` or address."""
    headers = kw.pop("headers", None) or {}
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=kw.pop("timeout", 5))
    try:
        conn.request(kw.pop("method", "GET"), path, headers=headers)
        resp = conn.getresponse()
        body = resp.read().decode(errors="replace")
        try:
            data = json.loads(body)
        except ValueError:
            data = {}
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body, data)
    finally:
        conn.close()


def tcp_send(address: str, line: str, timeout: float = 5) -> str:
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(line.encode())
        chunks = []
        while True:
            data = s.recv(1024)
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks).decode()
