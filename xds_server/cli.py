"""The `pocketmesh` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from xds_server import __version__
from xds_server.app import DEFAULT_DEBUG_ADDRESS, DEFAULT_XDS_ADDRESS, ControlPlane, Options
from xds_server.bootstrap import BootstrapOptions, render, sidecar_bootstrap
from xds_server.galley.loader import load_paths
from xds_server.galley.model import DEFAULT_NAMESPACE

DEFAULT_CONFIG = "config/demo"


def _serve(args: argparse.Namespace) -> int:
    config_dir = Path(args.config)
    if not config_dir.is_dir():
        print(f"pocketmesh: config directory {config_dir} does not exist", file=sys.stderr)
        return 2
    options = Options(
        config_dir=config_dir,
        xds_address=args.xds_address,
        debug_address=args.debug_address,
        watch=not args.no_watch,
        debounce_quiet=args.debounce_quiet,
        debounce_max=args.debounce_max,
    )

    async def run() -> None:
        plane = ControlPlane(options)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, plane.request_stop)
        await plane.run_until_stopped()

    try:
        asyncio.run(run())
    except OSError as err:
        print(f"pocketmesh: {err}", file=sys.stderr)
        return 1
    return 0


def _bootstrap(args: argparse.Namespace) -> int:
    name, _, namespace = args.workload.partition(".")
    namespace = namespace or DEFAULT_NAMESPACE
    result = load_paths([args.config])
    if result.config is None:
        for err in result.errors:
            print(err, file=sys.stderr)
        return 1
    workload = result.config.workload(name, namespace)
    if workload is None:
        known = ", ".join(w.proxy_id for w in result.config.workload_entries) or "none"
        print(
            f"pocketmesh: no WorkloadEntry {namespace}/{name} in {args.config} (known: {known})",
            file=sys.stderr,
        )
        return 1
    options = BootstrapOptions(
        xds_address=args.xds_address, delta=args.delta, admin_port=args.admin_port
    )
    text = render(sidecar_bootstrap(workload, options))
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def _validate(args: argparse.Namespace) -> int:
    result = load_paths(args.paths)
    for warning in result.warnings:
        print(warning)
    for err in result.errors:
        print(err)
    if result.errors:
        print(f"{len(result.errors)} error(s) in {len(result.files)} file(s)", file=sys.stderr)
        return 1
    print(f"{len(result.files)} file(s) valid", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pocketmesh",
        description="A small Istio-like control plane for real Envoy, without Kubernetes.",
    )
    parser.add_argument("--version", action="version", version=f"pocketmesh {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the control plane (xDS + debug HTTP)")
    serve.add_argument("--config", default=DEFAULT_CONFIG, help="config directory (%(default)s)")
    serve.add_argument("--xds-address", default=DEFAULT_XDS_ADDRESS, help="%(default)s")
    serve.add_argument("--debug-address", default=DEFAULT_DEBUG_ADDRESS, help="%(default)s")
    serve.add_argument("--no-watch", action="store_true", help="do not reload on file changes")
    serve.add_argument(
        "--debounce-quiet", type=float, default=0.1, help="seconds of quiet before a reload"
    )
    serve.add_argument(
        "--debounce-max", type=float, default=10.0, help="longest wait for quiet, seconds"
    )
    serve.set_defaults(func=_serve)

    boot = sub.add_parser("bootstrap", help="print an Envoy bootstrap for a workload's sidecar")
    boot.add_argument("--workload", required=True, help="WorkloadEntry NAME[.NAMESPACE]")
    boot.add_argument("--config", default=DEFAULT_CONFIG, help="config directory (%(default)s)")
    boot.add_argument("--xds-address", default=DEFAULT_XDS_ADDRESS, help="%(default)s")
    boot.add_argument("--delta", action="store_true", help="use Delta xDS (DELTA_GRPC)")
    boot.add_argument("--admin-port", type=int, default=15000, help="Envoy admin port")
    boot.add_argument("-o", "--output", help="write to a file instead of stdout")
    boot.set_defaults(func=_bootstrap)

    val = sub.add_parser("validate", help="check config files offline")
    val.add_argument("paths", nargs="+", help="files or directories")
    val.set_defaults(func=_validate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # grpc and aiohttp are chatty at debug level.
    logging.getLogger("aiohttp").setLevel(logging.WARNING)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
