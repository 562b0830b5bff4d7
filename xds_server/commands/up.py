"""`pocketmesh up`: the whole mesh on this machine, no Docker (see `xds_server.runner`)."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from xds_server.app import DEFAULT_DEBUG_ADDRESS, DEFAULT_XDS_ADDRESS
from xds_server.commands.common import DEFAULT_CONFIG
from xds_server.runner import AlreadyRunning, Supervisor, UpOptions
from xds_server.runner.supervisor import default_run_dir


def register(sub: Any) -> None:
    up = sub.add_parser(
        "up",
        help="run the mesh here: control plane, one Envoy per WorkloadEntry, the local apps",
    )
    up.add_argument(
        "config", nargs="?", default=DEFAULT_CONFIG, help="config directory (%(default)s)"
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
        help="lock, logs and bootstraps (%(default)s)",
    )
    up.add_argument(
        "--ca-dir", type=Path, help="the mesh CA's directory (default: RUN_DIR/ca, kept)"
    )
    up.add_argument(
        "--ready-timeout", type=float, default=30.0, help="seconds per step (%(default)s)"
    )
    up.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config_dir = Path(args.config)
    if not config_dir.is_dir():
        print(f"pocketmesh up: config directory {config_dir} does not exist", file=sys.stderr)
        return 2
    supervisor = Supervisor(
        UpOptions(
            config_dir=config_dir,
            run_dir=args.run_dir,
            xds_address=args.xds_address,
            debug_address=args.debug_address,
            admin_port=args.admin_port,
            delta=args.delta,
            ready_timeout=args.ready_timeout,
            ca_dir=args.ca_dir,
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
