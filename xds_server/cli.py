"""The `pocketmesh` command: one parser, subcommands from `xds_server.commands`."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from xds_server import __version__
from xds_server.commands import (
    bench,
    bootstrap,
    ca,
    demo_app,
    explain,
    ext_authz,
    serve,
    status,
    up,
    validate,
)

# Each module adds its own subcommand(s); the order here is the order in --help.
COMMANDS = [up, serve, bootstrap, validate, status, explain, demo_app, ext_authz, bench, ca]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pocketmesh",
        description="A small Istio-like control plane for real Envoy, without Kubernetes.",
    )
    parser.add_argument("--version", action="version", version=f"pocketmesh {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("aiohttp").setLevel(logging.WARNING)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
