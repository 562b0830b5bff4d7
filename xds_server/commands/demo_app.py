"""`pocketmesh demo-app`: the demo mesh's JSON app (see `xds_server.demo_app`)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from xds_server.commands.app_process import serve_until_signalled
from xds_server.demo_app import Settings, run


def register(sub: Any) -> None:
    app = sub.add_parser(
        "demo-app",
        help="run the demo app: answers JSON, calls other services through its sidecar",
    )
    add_arguments(app)
    app.set_defaults(func=run_command)


def add_arguments(app: argparse.ArgumentParser) -> None:
    app.add_argument("--service", required=True, help="service name it answers as")
    app.add_argument("--version", default="v1", help="version label (%(default)s)")
    app.add_argument("--workload", default="", help="WorkloadEntry name (default: --service)")
    app.add_argument("--listen", default="127.0.0.1:9080", help="HOST:PORT (%(default)s)")
    app.add_argument("--proxy", help="the sidecar's HTTP proxy, e.g. 127.0.10.1:15001")
    app.add_argument(
        "--protocol",
        choices=("http", "tcp"),
        default="http",
        help="http: the JSON app; tcp: an echo server, like Istio's tcp-echo (%(default)s)",
    )
    app.add_argument(
        "--call",
        action="append",
        default=[],
        metavar="URL",
        help="upstream to call on every request, e.g. http://reviews:9080/ (repeatable)",
    )


def run_command(args: argparse.Namespace) -> int:
    settings = Settings(
        service=args.service,
        version=args.version,
        workload=args.workload or args.service,
        listen=args.listen,
        proxy=args.proxy,
        calls=tuple(args.call),
        protocol=args.protocol,
    )
    return serve_until_signalled(
        lambda stop: run(settings, stop), f"pocketmesh demo-app: cannot listen on {settings.listen}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m xds_server.commands.demo_app`: the same app without loading the whole
    CLI (no gRPC, no protobufs): half the memory, for `pocketmesh up`'s many apps."""
    parser = argparse.ArgumentParser(prog="pocketmesh demo-app")
    add_arguments(parser)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return run_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
