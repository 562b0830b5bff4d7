"""The ext_authz server of `pocketmesh up` (xds_server.ext_authz_app, Istio's sample),
run by a test in a thread of its own, on 127.0.0.1 free ports."""

from __future__ import annotations

import asyncio
import threading

from tests.e2e.harness import free_port
from xds_server.ext_authz_app import Settings, run


class ExtAuthzServer:
    def __init__(self, allow_service_account: str = "a") -> None:
        self.http_port, self.grpc_port = free_port(), free_port()
        self.settings = Settings(
            http_listen=f"127.0.0.1:{self.http_port}",
            grpc_listen=f"127.0.0.1:{self.grpc_port}",
            allow_service_account=allow_service_account,
        )
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        started = asyncio.Event()

        async def main() -> None:
            task = asyncio.create_task(run(self.settings, self._stop, started))
            await asyncio.wait(
                [task, asyncio.create_task(started.wait())], return_when=asyncio.FIRST_COMPLETED
            )
            self._started.set()
            await task

        try:
            self._loop.run_until_complete(main())
        except BaseException as err:
            self._error = err
            self._started.set()

    def start(self) -> ExtAuthzServer:
        self._thread.start()
        if not self._started.wait(10):
            raise AssertionError("ext_authz server did not start within 10s")
        if self._error is not None:
            raise self._error
        return self

    def checks(self, api: str) -> list[tuple[bool, str]]:
        return [(allowed, path) for kind, allowed, path in self.settings.checks if kind == api]

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)
