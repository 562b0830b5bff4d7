"""`pocketmesh serve`: run the control plane."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

from ca import CaError
from xds_server.app import DEFAULT_DEBUG_ADDRESS, DEFAULT_XDS_ADDRESS, ControlPlane, Options
from xds_server.commands.common import DEFAULT_CONFIG
from xds_server.commands.identity_flags import add_identity_flags, identity_options


def register(sub: Any) -> None:
    serve = sub.add_parser("serve", help="run the control plane (xDS + debug HTTP)")
    serve.add_argument("--config", default=DEFAULT_CONFIG, help="config directory (%(default)s)")
    serve.add_argument("--xds-address", default=DEFAULT_XDS_ADDRESS, help="%(default)s")
    serve.add_argument("--debug-address", default=DEFAULT_DEBUG_ADDRESS, help="%(default)s")
    serve.add_argument(
        "--debug-remote-admin",
        action="store_true",
        help="accept the debug address's POST endpoints (reload, root rotation) from any "
        "peer, not only loopback: bind the debug address where only operators reach it",
    )
    serve.add_argument("--no-watch", action="store_true", help="do not reload on file changes")
    serve.add_argument(
        "--debounce-quiet", type=float, default=0.1, help="seconds of quiet before a reload"
    )
    serve.add_argument(
        "--debounce-max", type=float, default=10.0, help="longest wait for quiet, seconds"
    )
    add_identity_flags(serve)
    serve.set_defaults(func=run)


def options_from(args: argparse.Namespace) -> Options:
    return Options(
        config_dir=Path(args.config),
        xds_address=args.xds_address,
        debug_address=args.debug_address,
        debug_remote_admin=args.debug_remote_admin,
        watch=not args.no_watch,
        debounce_quiet=args.debounce_quiet,
        debounce_max=args.debounce_max,
        identity=identity_options(args),
    )


def run(args: argparse.Namespace) -> int:
    options = options_from(args)
    if not options.config_dir.is_dir():
        print(f"pocketmesh: config directory {options.config_dir} does not exist", file=sys.stderr)
        return 2

    async def main() -> None:
        plane = ControlPlane(options)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, plane.request_stop)
        await plane.run_until_stopped()

    try:
        asyncio.run(main())
    except (OSError, CaError) as err:
        print(f"pocketmesh: {err}", file=sys.stderr)
        return 1
    return 0
