"""What the apps `pocketmesh up` starts as their own processes (`demo-app`, `ext-authz`)
share: serve until SIGINT or SIGTERM, and say so plainly when the address is taken.

Kept free of gRPC and protobufs: `python -m xds_server.commands.demo_app` imports it."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable


def serve_until_signalled(
    serve: Callable[[asyncio.Event], Awaitable[None]], cannot_listen: str
) -> int:
    """Run `serve(stop)` until SIGINT or SIGTERM sets `stop`; 0 when it stopped.

    An OSError (an address taken) is printed to stderr after `cannot_listen` and gives 1,
    the exit status `pocketmesh up` reports for an app that could not start."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(stop)

    try:
        asyncio.run(main())
    except OSError as err:
        print(f"{cannot_listen}: {err}", file=sys.stderr)
        return 1
    return 0
