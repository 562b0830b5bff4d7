"""`pocketmesh up` shows ✓ only for what is proven its own, and refuses with the reason
otherwise: each port it needs is taken here by something that answers like the real
thing would (200 on /ready, an Envoy-like /server_info, an app's JSON), and `up` must
stop with why and where its log is, start nothing that outlives it, and print no
Python traceback."""

from __future__ import annotations

import http.server
import json
import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.run.demo_mesh import demo_copy, random_net
from tests.run.up_process import Up, alive, children_of

TRACEBACK_SIGNS = ("Traceback", "Event loop is closed", "Unclosed client session", "Task was")


class Impostor(http.server.ThreadingHTTPServer):
    """Answers every GET 200 like a healthy control plane, Envoy admin and app at once."""

    daemon_threads = True
    allow_reuse_address = False

    def __init__(self, address: tuple[str, int]) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = json.dumps(
                    {"state": "LIVE", "node": {"id": "productpage.default"},
                     "workload": "productpage", "pid": 1, "app": "impostor"}
                ).encode()  # fmt: skip
                self.send_response(200)
                self.send_header("content-length", str(len(body)))
                self.send_header("x-pocketmesh-pid", "1")
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(address, Handler)


@contextmanager
def impostor_at(host: str, port: int = 0) -> Iterator[int]:
    server = Impostor((host, port))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def run_up_expecting_refusal(up: Up) -> str:
    up.start()
    assert up.proc is not None
    try:
        up.proc.wait(90)
    finally:
        code = up.stop()
    text = up.text()
    assert code == 1, text
    assert "Mesh is up" not in text, text
    for sign in TRACEBACK_SIGNS:
        assert sign not in text, text
    assert "stopped." in text or "nothing started" in text, text
    return text


def assert_nothing_left(up: Up) -> None:
    assert up.proc is not None
    assert [p for p in children_of(up.proc.pid) if alive(p)] == []


@pytest.mark.parametrize("which", ["debug", "xds"])
def test_control_plane_port_taken(tmp_path: Path, which: str) -> None:
    config = demo_copy(tmp_path, random_net())
    up = Up(tmp_path, [config])
    address = up.debug if which == "debug" else up.xds
    host, port = address.rsplit(":", 1)
    if which == "debug":
        with impostor_at(host, int(port)):
            text = run_up_expecting_refusal(up)
    else:
        # As grpc's own servers bind: SO_REUSEPORT, which would let a second server share
        # the port silently if it asked for the same.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, int(port)))
        sock.listen()
        try:
            text = run_up_expecting_refusal(up)
        finally:
            sock.close()
    assert "✓ control plane" not in text, text
    kind = "debug" if which == "debug" else "xDS"
    assert re.search(
        rf"control plane exited with 1 while starting: .*cannot bind the {kind} address "
        rf"{re.escape(address)}",
        text,
    ), text
    log = up.run_dir / "logs" / "control-plane.log"
    assert f"its log: {log}" in text, text
    assert not any(sign in log.read_text() for sign in TRACEBACK_SIGNS), log.read_text()
    assert_nothing_left(up)


def test_app_port_taken(tmp_path: Path) -> None:
    config = demo_copy(tmp_path, random_net())
    sidecars = (config / "sidecars.yaml").read_text()
    app_port = int(re.search(r"defaultEndpoint: 127\.0\.0\.1:(\d+)", sidecars).group(1))  # type: ignore[union-attr]
    up = Up(tmp_path, [config])
    with impostor_at("127.0.0.1", app_port):
        text = run_up_expecting_refusal(up)
    assert "✓ control plane" in text
    assert "✓ app productpage" not in text, text
    assert re.search(
        rf"app productpage exited with 1 while starting: .*cannot listen on "
        rf"127\.0\.0\.1:{app_port}",
        text,
    ), text
    log = up.run_dir / "logs" / "productpage.app.log"
    assert str(log) in text
    assert not any(sign in log.read_text() for sign in TRACEBACK_SIGNS), log.read_text()
    assert_nothing_left(up)


def test_envoy_admin_port_taken(tmp_path: Path) -> None:
    net = random_net()
    config = demo_copy(tmp_path, net)
    up = Up(tmp_path, [config])
    with impostor_at(f"{net}.1", up.admin_port):  # productpage's admin address
        text = run_up_expecting_refusal(up)
    assert "✓ sidecar productpage.default" not in text, text
    assert re.search(
        rf"sidecar productpage\.default must listen on {re.escape(net)}\.1:{up.admin_port}, "
        rf"which is taken \(Address already in use\)",
        text,
    ), text
    assert_nothing_left(up)


@pytest.mark.parametrize("reuseport", [False, True], ids=["plain", "so_reuseport"])
def test_sidecar_listener_port_taken(tmp_path: Path, reuseport: bool) -> None:
    """The inbound port of a workload taken, by anything or by an Envoy-like socket with
    SO_REUSEPORT (another mesh on these addresses), which Envoy would share silently."""
    net = random_net()
    config = demo_copy(tmp_path, net)
    up = Up(tmp_path, [config])
    sock = socket.socket()
    if reuseport:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((f"{net}.4", 9080))  # ratings' inbound listener
    sock.listen()
    try:
        text = run_up_expecting_refusal(up)
    finally:
        sock.close()
    assert "✓ sidecar ratings.default" not in text, text
    assert re.search(
        rf"sidecar ratings\.default must listen on {re.escape(net)}\.4:9080, which is taken "
        rf"\(Address already in use\): another mesh on these addresses\?",
        text,
    ), text
    assert_nothing_left(up)
