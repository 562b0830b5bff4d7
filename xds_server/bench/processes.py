"""Child processes the harness starts, and what /proc says about them."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU of `pid`, every thread (also exited ones), from /proc/PID/stat.
    Ticks are 10 ms: average small figures over several runs."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def memory_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) in MB, from /proc/PID/status."""
    rss = peak = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
        elif line.startswith("VmHWM:"):
            peak = int(line.split()[1]) / 1024
    return rss, peak


def http_json(url: str, *, method: str = "GET", timeout: float = 120.0) -> Any:
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


class ProcessExited(RuntimeError):
    """The process waited for is gone: waiting longer cannot help."""


def wait_for(check: Any, *, timeout: float, what: str, interval: float = 0.01) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except ProcessExited:
            raise
        except Exception as err:  # not up yet
            last = err
        else:
            if last:
                return last
        time.sleep(interval)
    raise TimeoutError(f"{what}: not done after {timeout:.0f}s (last: {last!r})")


def answers_ready(proc: subprocess.Popen[Any] | None, url: str, name: str, log_path: Path) -> bool:
    """`url` (pocketmesh's or Envoy's admin `/ready`) answers 200; raises ProcessExited
    (naming `name` and its log) once `proc` is gone, so a wait on it stops at once."""
    assert proc is not None
    if proc.poll() is not None:
        raise ProcessExited(f"{name} exited ({proc.returncode}); see {log_path}")
    with urllib.request.urlopen(url, timeout=2) as resp:
        return bool(resp.status == 200)


def read_line(proc: subprocess.Popen[str], timeout: float, what: str) -> str:
    """One line of a child's stdout, or an error after `timeout` seconds (never hangs)."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise TimeoutError(f"{what}: no answer after {timeout:.0f}s (pid {proc.pid})")
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"{what}: exited ({proc.poll()})")
    return line


def stop_process(proc: subprocess.Popen[Any], grace: float = 5.0) -> None:
    """SIGTERM by PID, then SIGKILL after `grace` seconds."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@dataclass
class ServerProcess:
    """`pocketmesh serve --no-watch` in its own process, on free ports."""

    config_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    xds_port: int = 0
    debug_port: int = 0

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.xds_port}"

    @property
    def debug_url(self) -> str:
        return f"http://127.0.0.1:{self.debug_port}"

    def start(self, extra: Sequence[str] = ()) -> ServerProcess:
        self.xds_port, self.debug_port = free_port(), free_port()
        cmd = [
            # --no-identity: the floor server has no CA, so both serve the same resources.
            sys.executable, "-m", "xds_server", "serve", "--no-watch", "--no-identity",
            "--config", str(self.config_dir),
            "--xds-address", self.target,
            "--debug-address", f"127.0.0.1:{self.debug_port}",
            *extra,
        ]  # fmt: skip
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT)
        try:
            wait_for(self._ready, timeout=600, what="pocketmesh /ready")
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self) -> bool:
        return answers_ready(self.proc, self.debug_url + "/ready", "pocketmesh", self.log_path)

    def reload(self) -> dict[str, Any]:
        result: dict[str, Any] = http_json(self.debug_url + "/debug/reload", method="POST")
        return result

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self._log.close()


class FloorProcess:
    """The bare-gRPC floor (`bench/floor.py`) in its own process, serving `dirs` as
    config generations (SIGUSR1 moves to the next)."""

    def __init__(self, dirs: list[Path], log_path: Path) -> None:
        self.port = free_port()
        cmd = [sys.executable, "-m", "xds_server.bench.floor", "--port", str(self.port)]
        for d in dirs:
            cmd += ["--config", str(d)]
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log, text=True)
        try:
            # Pre-encoding every generation takes a while at full size.
            line = read_line(self.proc, 600, f"floor server (log: {log_path})")
            if json.loads(line) != "ready":
                raise RuntimeError(f"floor server did not start; see {log_path}")
        except BaseException:
            self.stop()
            raise

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        stop_process(self.proc)
        self._log.close()
