"""`pocketmesh validate`: check config files offline, as the server does before a push.

Exit status 1 on any error (each printed `file:line: Kind ns/name: field: message`),
0 otherwise; warnings (rules that can never match, subsets that select nothing, ...)
are printed but do not fail, unless `--strict`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from xds_server.galley.loader import load_paths


def register(sub: Any) -> None:
    val = sub.add_parser("validate", help="check config files offline")
    val.add_argument("paths", nargs="+", help="files or directories")
    val.add_argument("--strict", action="store_true", help="fail on warnings too")
    val.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    result = load_paths(args.paths)
    # One list in reading order, so a file's findings read top to bottom.
    order = {file: i for i, file in enumerate(result.files)}
    findings = sorted(
        (*result.errors, *result.warnings), key=lambda f: (order.get(f.file, -1), f.line)
    )
    for finding in findings:
        print(finding)
    sys.stdout.flush()  # the summary on stderr comes after the findings
    files = len(result.files)
    warnings = f", {len(result.warnings)} warning(s)" if result.warnings else ""
    if result.errors:
        print(f"{len(result.errors)} error(s){warnings} in {files} file(s)", file=sys.stderr)
        return 1
    if args.strict and result.warnings:
        print(f"{len(result.warnings)} warning(s) in {files} file(s) (--strict)", file=sys.stderr)
        return 1
    print(f"{files} file(s) valid{warnings}", file=sys.stderr)
    return 0
