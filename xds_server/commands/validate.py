"""`pocketmesh validate`: check config files offline."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from xds_server.galley.loader import load_paths


def register(sub: Any) -> None:
    val = sub.add_parser("validate", help="check config files offline")
    val.add_argument("paths", nargs="+", help="files or directories")
    val.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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
