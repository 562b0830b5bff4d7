"""Headless Chromium driven over the DevTools protocol: no driver, no browser download.

Debian's `chromium` (.ci/chromium-up installs it) listens on a loopback DevTools port
it picks itself and writes to `DevToolsActivePort` in its fresh profile directory;
a websocket (aiohttp's client, already a dependency) sends the protocol's commands.
Every wait has a deadline; `stop()` kills the browser by PID and removes its profile.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp

from tests.e2e.harness import get, wait_until

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--hide-scrollbars",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)


def available() -> bool:
    return os.access(CHROMIUM, os.X_OK)


class Chromium:
    def __init__(self, workdir: Path) -> None:
        self.profile = Path(tempfile.mkdtemp(prefix="chromium-", dir=workdir))
        self.log_path = workdir / "chromium.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._loop = asyncio.new_event_loop()
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)

    def start(self, timeout: float = 30) -> Chromium:
        self._log = self.log_path.open("wb")
        argv = [CHROMIUM, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"]
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT)
        active = self.profile / "DevToolsActivePort"

        def port() -> int | None:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"chromium exited: {self.log()}")
            lines = active.read_text().splitlines() if active.exists() else []
            return int(lines[0]) if lines and lines[0].isdigit() else None

        devtools = wait_until(port, timeout=timeout, what="chromium's DevToolsActivePort")
        targets = wait_until(
            lambda: [
                t
                for t in json.loads(get(f"http://127.0.0.1:{devtools}/json/list")[1])
                if t.get("type") == "page"
            ],
            timeout=timeout,
            what="a chromium page target",
        )
        self._run(self._connect(targets[0]["webSocketDebuggerUrl"]))
        self.send("Page.enable")
        self.send("Runtime.enable")
        return self

    async def _connect(self, url: str) -> None:
        self._session = aiohttp.ClientSession()
        self._ws = await self._session.ws_connect(url, max_msg_size=0)

    def _run(self, coro: Any, timeout: float = 30) -> Any:
        return self._loop.run_until_complete(asyncio.wait_for(coro, timeout))

    def send(self, method: str, timeout: float = 30, **params: Any) -> dict[str, Any]:
        """One DevTools command; its result (events in between are dropped)."""

        async def call() -> dict[str, Any]:
            assert self._ws is not None
            ident = next(self._ids)
            await self._ws.send_json({"id": ident, "method": method, "params": params})
            while True:
                message = await self._ws.receive_json()
                if message.get("id") == ident:
                    if "error" in message:
                        raise AssertionError(f"{method}: {message['error']}")
                    return dict(message.get("result", {}))

        return dict(self._run(call(), timeout))

    def viewport(self, width: int, height: int) -> None:
        self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )

    def navigate(self, url: str) -> None:
        self.send("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'", what=f"{url} loaded")

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, *, timeout: float = 20, what: str = "") -> Any:
        return wait_until(
            lambda: self.evaluate(expression),
            timeout=timeout,
            interval=0.2,
            what=what or expression,
        )

    def screenshot(self, path: Path, *, width: int, full_page: bool = True) -> Path:
        """A PNG of the page at `width` CSS pixels, as tall as its content."""
        self.viewport(width, 900)
        self.next_render()
        if full_page:
            height = int(self.evaluate("Math.ceil(document.documentElement.scrollHeight)"))
            self.viewport(width, max(300, height))
            self.next_render()
        shot = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=full_page)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def next_render(self, timeout: float = 10) -> None:
        """Wait until the page has drawn a state after now (it counts its renders)."""
        before = int(self.evaluate("Number(document.body.dataset.renders || 0)"))
        self.wait_for(
            f"Number(document.body.dataset.renders || 0) > {before}",
            timeout=timeout,
            what="the page to draw the next state",
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        if self._ws is not None or self._session is not None:
            try:
                if self._ws is not None:
                    self._run(self._ws.close(), 5)
                if self._session is not None:
                    self._run(self._session.close(), 5)
            except Exception:
                pass
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if self.proc is not None:
            self._log.close()
        self._loop.close()
        shutil.rmtree(self.profile, ignore_errors=True)


@contextlib.contextmanager
def page_at(url: str, workdir: Path) -> Iterator[Chromium]:
    """Chromium showing `url` at 1280x900, stopped by PID afterwards whatever happens."""
    assert available(), "Debian's chromium is needed: run .ci/chromium-up"
    chromium = Chromium(workdir)
    try:
        chromium.start()
        chromium.viewport(1280, 900)
        chromium.navigate(url)
        yield chromium
    finally:
        chromium.stop()
