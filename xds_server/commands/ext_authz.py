"""`pocketmesh ext-authz`: an ext_authz server like Istio's sample (`xds_server.ext_authz_app`)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from xds_server.commands.app_process import serve_until_signalled
from xds_server.ext_authz_app import Settings, run


def register(sub: Any) -> None:
    app = sub.add_parser(
        "ext-authz",
        help="run an external authorizer (Envoy ext_authz, HTTP and gRPC), like Istio's sample",
    )
    add_arguments(app)
    app.set_defaults(func=run_command)


def add_arguments(app: argparse.ArgumentParser) -> None:
    app.add_argument("--listen", default="127.0.0.1:8000", help="HTTP API HOST:PORT (%(default)s)")
    app.add_argument(
        "--grpc-listen", default="", help="gRPC API HOST:PORT (Istio's sample: port 9000)"
    )
    app.add_argument(
        "--allow-service-account",
        default="a",
        help="without x-ext-authz, allow callers of this service account (%(default)s)",
    )
    # What `pocketmesh up` passes every app (pocketmesh.io/app).
    app.add_argument("--service", default="ext-authz", help=argparse.SUPPRESS)
    app.add_argument("--version", default="v1", help=argparse.SUPPRESS)
    app.add_argument("--workload", default="", help=argparse.SUPPRESS)
    app.add_argument("--proxy", default="", help=argparse.SUPPRESS)
    app.add_argument("--call", action="append", default=[], help=argparse.SUPPRESS)


def run_command(args: argparse.Namespace) -> int:
    settings = Settings(
        workload=args.workload or args.service,
        service=args.service,
        version=args.version,
        http_listen=args.listen or None,
        grpc_listen=args.grpc_listen or None,
        allow_service_account=args.allow_service_account,
    )
    return serve_until_signalled(
        lambda stop: run(settings, stop), "pocketmesh ext-authz: cannot listen"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m xds_server.commands.ext_authz`: without loading the whole CLI."""
    parser = argparse.ArgumentParser(prog="pocketmesh ext-authz")
    add_arguments(parser)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("aiohttp").setLevel(logging.WARNING)
    return run_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
