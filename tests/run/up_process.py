"""`pocketmesh up` as a subprocess for tests: started on free ports in a private run
directory, its terminal captured, and stopped by PID (its children too) whatever happens."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.e2e.harness import free_port

SUMMARY_END = "Ctrl-C stops everything."


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Up:
    """One `pocketmesh up` run: `.text()` is its terminal so far."""

    def __init__(self, root: Path, paths: list[Path], *extra: str) -> None:
        self.root = root
        self.run_dir = root / "run"
        self.ca_dir = root / "ca"
        self.debug = f"127.0.0.1:{free_port()}"
        self.xds = f"127.0.0.1:{free_port()}"
        self.admin_port = free_port()
        self.argv = [
            sys.executable, "-m", "xds_server.cli", "up", *map(str, paths),
            "--run-dir", str(self.run_dir),
            "--ca-dir", str(self.ca_dir),
            "--xds-address", self.xds,
            "--debug-address", self.debug,
            "--admin-port", str(self.admin_port),
            *extra,
        ]  # fmt: skip
        self.out_path = root / "up.out"
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> Up:
        self._out = self.out_path.open("w")
        self.proc = subprocess.Popen(
            self.argv, stdout=self._out, stderr=subprocess.STDOUT, text=True
        )
        return self

    def text(self) -> str:
        return self.out_path.read_text()

    def wait_for(self, pattern: str, timeout: float, since: int = 0) -> re.Match[str]:
        """Wait until `pattern` (a regex) shows in the terminal after offset `since`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.text()
            found = re.search(pattern, text[since:], re.M)
            if found:
                return found
            assert self.proc is not None
            if self.proc.poll() is not None:
                code = self.proc.returncode
                raise AssertionError(f"up exited ({code}) before {pattern!r}:\n{text}")
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} in up's terminal after {timeout}s:\n{self.text()}")

    def wait_summary(self, timeout: float = 120) -> str:
        self.wait_for(re.escape(SUMMARY_END), timeout)
        return self.text()

    def stop(self) -> int | None:
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            children = children_of(proc.pid)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                for child in children_of(proc.pid) + children:
                    if alive(child):
                        os.kill(child, signal.SIGKILL)
                proc.kill()
                proc.wait(5)
        self._out.close()
        return proc.returncode


@contextmanager
def running_up(root: Path, paths: list[Path], *extra: str) -> Iterator[Up]:
    up = Up(root, paths, *extra).start()
    try:
        yield up
    finally:
        up.stop()


def world_traversable_root() -> Path:
    """A fresh directory every user can traverse (pytest's tmp_path is 0700: a file in it
    is unreadable to others whatever its own mode, which would prove nothing)."""
    root = Path(tempfile.mkdtemp(prefix="pocketmesh-test-"))
    os.chmod(root, 0o755)
    return root


class Traffic:
    """Steady requests from a thread; every answer checked by `check` (None: fine,
    else why it failed), counted and kept."""

    def __init__(self, send: Callable[[], Any], check: Callable[[Any], str | None]) -> None:
        self.send = send
        self.check = check
        self.sent = 0
        self.failures: list[str] = []
        self.answers: list[Any] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sent += 1
            try:
                answer = self.send()
            except Exception as err:  # a refused or reset connection is a failed request
                self.failures.append(f"{time.monotonic():.3f} {type(err).__name__}: {err}")
                continue
            why = self.check(answer)
            if why:
                self.failures.append(f"{time.monotonic():.3f} {why}")
            else:
                self.answers.append(answer)
            self._stop.wait(0.01)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)
