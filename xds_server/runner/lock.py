"""The run lock: one `pocketmesh up` per run directory, and a clear message for the second.

The lock is an advisory `flock` on `up.lock`, which the kernel drops when the holder
dies, however it dies; the file also records the holder's PID and what it runs, so
the second `up` can say who holds it. A file left by a dead holder is stale: it is
simply taken over.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any


class AlreadyRunning(Exception):
    def __init__(self, path: Path, holder: dict[str, Any]) -> None:
        self.path = path
        self.holder = holder
        pid = holder.get("pid", "?")
        started = holder.get("started")
        since = time.strftime(" since %H:%M:%S", time.localtime(started)) if started else ""
        config = holder.get("config", "?")
        super().__init__(
            f"another `pocketmesh up` is already running (pid {pid}{since}, config {config}); "
            f"stop it with Ctrl-C or `kill {pid}`, or use another --run-dir (lock: {path})"
        )


class RunLock:
    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / "up.lock"
        self._fd: int | None = None
        self.stale: dict[str, Any] | None = None  # what a dead holder left, if anything

    def acquire(self, info: dict[str, Any]) -> RunLock:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            raise AlreadyRunning(self.path, holder) from None
        previous = _read(fd)
        if previous.get("pid"):
            self.stale = previous
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "started": time.time(), **info}).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        # Unlink first, while still holding the lock, so no one takes over a file
        # about to vanish.
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None


def _read(fd: int) -> dict[str, Any]:
    try:
        data = os.pread(fd, 65536, 0)
        value = json.loads(data or b"{}")
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
