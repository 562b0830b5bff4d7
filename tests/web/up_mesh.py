"""`pocketmesh up` on a copy of config/demo, as a user runs it, for the web view's tests;
and a little steady traffic through its gateway."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

from tests.e2e.harness import free_port, get, wait_until
from tests.run.demo_mesh import demo_copy

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "web"  # screenshots; gitignored


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


class UpMesh:
    def __init__(self, root: Path, net: str) -> None:
        self.net = net
        self.config = demo_copy(root, net)
        self.run_dir = root / "run"
        self.debug = f"127.0.0.1:{free_port()}"
        self.out_path = root / "up.out"
        self.argv = [
            sys.executable, "-m", "xds_server.cli", "up", str(self.config),
            "--run-dir", str(self.run_dir),
            "--xds-address", f"127.0.0.1:{free_port()}",
            "--debug-address", self.debug,
        ]  # fmt: skip
        self.proc: subprocess.Popen[str] | None = None
        self.gateway = ""

    def start(self) -> UpMesh:
        self._out = self.out_path.open("w+")
        self.proc = subprocess.Popen(
            self.argv, stdout=self._out, stderr=subprocess.STDOUT, text=True
        )

        def summary() -> str | None:
            assert self.proc is not None and self.proc.poll() is None, self.output()
            text = self.output()
            return text if "Ctrl-C stops everything" in text else None

        text = str(wait_until(summary, timeout=120, interval=0.1, what="the summary of `up`"))
        url = re.search(r"Open:\s+curl (\S+)", text)
        assert url, text
        self.gateway = url.group(1)
        return self

    def output(self) -> str:
        return self.out_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            children = _children(self.proc.pid)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                for child in children:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child, signal.SIGKILL)
                self.proc.kill()
                self.proc.wait(5)
        self._out.close()


class Traffic:
    """GETs through the gateway, about `rps` a second, until stopped."""

    def __init__(self, url: str, rps: float = 8) -> None:
        self.url = url
        self.interval = 1 / rps
        self.sent = 0
        self.statuses: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status, _ = get(self.url, timeout=2)
            except OSError:
                status = 0
            self.sent += 1
            self.statuses[status] = self.statuses.get(status, 0) + 1
            self._stop.wait(self.interval)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)
