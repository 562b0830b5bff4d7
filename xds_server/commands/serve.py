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
from xds_server.commands.common import DEFAULT_CONFIG, missing_paths
from xds_server.commands.identity_flags import add_identity_flags, identity_options
from xds_server.grpc_api.streams import DEFAULT_MAX_STREAMS


def register(sub: Any) -> None:
    serve = sub.add_parser("serve", help="run the control plane (xDS + debug HTTP)")
    serve.add_argument(
        "--config",
        action="append",
        metavar="PATH",
        help=f"config directory or file; repeat to merge several ({DEFAULT_CONFIG})",
    )
    serve.add_argument("--xds-address", default=DEFAULT_XDS_ADDRESS, help="%(default)s")
    serve.add_argument("--debug-address", default=DEFAULT_DEBUG_ADDRESS, help="%(default)s")
    serve.add_argument(
        "--debug-remote-admin",
        action="store_true",
        help="accept the debug address's POST endpoints (reload, root rotation) from any "
        "peer, not only loopback: bind the debug address where only operators reach it",
    )
    serve.add_argument(
        "--max-streams",
        type=_positive,
        default=DEFAULT_MAX_STREAMS,
        metavar="N",
        help="xDS streams held at once; more get RESOURCE_EXHAUSTED (default %(default)s, "
        "about 40 KB each)",
    )
    serve.add_argument("--no-watch", action="store_true", help="do not reload on file changes")
    serve.add_argument(
        "--watch-polling",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="poll the config directory (every 0.3 s) instead of waiting for filesystem "
        "events (default: poll where events may not arrive: a directory bind-mounted into "
        "a container, FUSE, NFS, 9p, virtiofs; WATCHFILES_FORCE_POLLING=1 also forces it)",
    )
    serve.add_argument(
        "--debounce-quiet", type=float, default=0.1, help="seconds of quiet before a reload"
    )
    serve.add_argument(
        "--debounce-max", type=float, default=10.0, help="longest wait for quiet, seconds"
    )
    add_identity_flags(serve)
    boot = serve.add_argument_group("sidecar bootstraps (containers: docker-compose)")
    boot.add_argument(
        "--bootstrap-dir",
        type=Path,
        metavar="DIR",
        help="write each WorkloadEntry's sidecar bootstrap, with its xDS credential (a client "
        "certificate with --xds-tls, else a token), to "
        "DIR/<name>.<namespace>/bootstrap.yaml (admin on 127.0.0.1); give each sidecar "
        "only its own directory",
    )
    boot.add_argument(
        "--bootstrap-xds-address",
        default="",
        metavar="HOST:PORT",
        help="where those sidecars reach xDS (default: --xds-address)",
    )
    serve.set_defaults(func=run)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def options_from(args: argparse.Namespace) -> Options:
    paths = tuple(Path(p) for p in (args.config or [DEFAULT_CONFIG]))
    return Options(
        config_dir=paths[0],
        config_paths=paths,
        xds_address=args.xds_address,
        debug_address=args.debug_address,
        debug_remote_admin=args.debug_remote_admin,
        max_streams=args.max_streams,
        watch=not args.no_watch,
        debounce_quiet=args.debounce_quiet,
        debounce_max=args.debounce_max,
        identity=identity_options(args),
        watch_polling=args.watch_polling,
        bootstrap_dir=args.bootstrap_dir,
        bootstrap_xds_address=args.bootstrap_xds_address,
    )


def run(args: argparse.Namespace) -> int:
    options = options_from(args)
    if missing := missing_paths(options.paths):
        print(f"pocketmesh serve: no such config file or directory: {missing}", file=sys.stderr)
        return 2
    if options.bootstrap_dir is not None:
        xds = options.bootstrap_xds_address or options.xds_address
        host, _, port = xds.rpartition(":")
        if host.strip("[]") in ("0.0.0.0", "::", "") or not port.isdigit() or port == "0":
            print(
                f"pocketmesh: --bootstrap-dir: sidecars cannot dial {xds}; give the address "
                "they reach the control plane at with --bootstrap-xds-address HOST:PORT",
                file=sys.stderr,
            )
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
        print(f"pocketmesh serve: {err}", file=sys.stderr)
        return 1
    return 0
