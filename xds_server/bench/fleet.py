"""A fleet of simulated proxies spread over worker processes, driven by pipes."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xds_server.bench.processes import read_line, stop_process, wait_for


@dataclass(frozen=True, slots=True)
class ProxySummary:
    node_id: str
    connected_at: float
    synced_at: float
    acks: int
    last_ack_at: float
    responses: int
    bytes_received: int
    error: str
    reconnects: int


Progress = Callable[[int, int], None]


class Fleet:
    def __init__(self, target: str, node_ids: Sequence[str], *, delta: bool, workers: int) -> None:
        self.target = target
        self.node_ids = list(node_ids)
        self.delta = delta
        self.workers = max(1, min(workers, len(self.node_ids)))
        self._procs: list[subprocess.Popen[str]] = []
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    def start(self) -> float:
        """Start every worker; returns the wall-clock time the proxies were told to dial."""
        self._dir = tempfile.TemporaryDirectory(prefix="pocketmesh-fleet-")
        for i in range(self.workers):
            nodes = Path(self._dir.name) / f"nodes-{i}"
            nodes.write_text("\n".join(self.node_ids[i :: self.workers]))
            cmd = [sys.executable, "-m", "xds_server.bench.proxies", "--target", self.target,
                   "--nodes", str(nodes)] + (["--delta"] if self.delta else [])  # fmt: skip
            self._procs.append(
                subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            )
        # Import time of the workers is not the server's: wait for them, then go.
        for proc in self._procs:
            if self._recv(proc) != "ready":
                raise RuntimeError("a proxy worker did not start")
        started = time.time()
        for proc in self._procs:
            self._send(proc, "go")
        return started

    @staticmethod
    def _send(proc: subprocess.Popen[str], message: str) -> None:
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(message) + "\n")
        proc.stdin.flush()

    @staticmethod
    def _recv(proc: subprocess.Popen[str]) -> Any:
        return json.loads(read_line(proc, 120, f"proxy worker {proc.pid}"))

    def status(self) -> list[ProxySummary]:
        for proc in self._procs:
            self._send(proc, "status")
        out: list[ProxySummary] = []
        for proc in self._procs:
            out.extend(ProxySummary(*row) for row in self._recv(proc))
        return out

    def wait_synced(
        self, *, timeout: float, progress: Progress | None = None
    ) -> list[ProxySummary]:
        def done() -> list[ProxySummary] | None:
            rows = self.status()
            synced = sum(1 for r in rows if r.synced_at)
            if progress is not None:
                progress(synced, len(rows))
            return rows if synced == len(rows) else None

        result: list[ProxySummary] = wait_for(
            done, timeout=timeout, what="initial sync of every proxy", interval=0.05
        )
        return result

    def wait_converged(
        self,
        before: dict[str, int],
        expected: set[str],
        *,
        timeout: float,
        quiet: float = 0.5,
        progress: Progress | None = None,
    ) -> list[ProxySummary]:
        """Wait until every `expected` proxy ACKed something new and all ACKs stopped for
        `quiet` seconds; returns the proxies that ACKed anything since `before`."""
        deadline = time.monotonic() + timeout
        last_total = -1
        still_since = time.monotonic()
        while True:
            rows = self.status()
            moved = [r for r in rows if r.acks > before.get(r.node_id, 0)]
            ready = len(expected & {r.node_id for r in moved})
            if progress is not None:
                progress(ready, len(expected))
            total = sum(r.acks for r in rows)
            now = time.monotonic()
            if total != last_total:
                last_total, still_since = total, now
            if ready == len(expected) and now - still_since >= quiet:
                return moved
            if now > deadline:
                raise TimeoutError(
                    f"{ready}/{len(expected)} proxies converged after {timeout:.0f}s"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        for proc in self._procs:
            with contextlib.suppress(BrokenPipeError, OSError):
                self._send(proc, "stop")
        for proc in self._procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                stop_process(proc)  # by PID: only our own workers
        if self._dir is not None:
            self._dir.cleanup()
