"""`pocketmesh validate`: check config files offline, as the server does before a push.

Exit status 1 on any error (each printed `file:line: Kind ns/name: field: message`),
0 otherwise; warnings (rules that can never match, subsets that select nothing, ...)
are printed but do not fail, unless `--strict`. A config that loads is also translated
for every proxy, as `serve` does (with workload identities, unless `--no-identity`):
what the server would refuse to build is an error here too.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from xds_server.galley.loader import LoadResult, load_paths
from xds_server.generators import PushContext, UnbuildableConfig, generate


def register(sub: Any) -> None:
    val = sub.add_parser("validate", help="check config files offline")
    val.add_argument("paths", nargs="+", help="files or directories")
    val.add_argument("--strict", action="store_true", help="fail on warnings too")
    val.add_argument(
        "--no-identity",
        action="store_true",
        help="check as `serve --no-identity` builds it (no mTLS; default: with identities)",
    )
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
    refused = [] if result.errors else _unbuildable(result, identity=not args.no_identity)
    for message in refused:
        print(message)
    if result.errors or refused:
        count = len(result.errors) + len(refused)
        print(f"{count} error(s){warnings} in {files} file(s)", file=sys.stderr)
        return 1
    if args.strict and result.warnings:
        print(f"{len(result.warnings)} warning(s) in {files} file(s) (--strict)", file=sys.stderr)
        return 1
    print(f"{files} file(s) valid{warnings}", file=sys.stderr)
    return 0


def _unbuildable(result: LoadResult, *, identity: bool) -> list[str]:
    """What translation refuses (generators.UnbuildableConfig), once per message."""
    mesh = result.config_or_raise()
    if identity:  # the CA is unknown here: assume it is for the trust domain asked for
        settings = mesh.settings
        domain = (settings.trust_domain if settings else "") or mesh.trust_domain
        mesh = dataclasses.replace(mesh, workload_identity=True, trust_domain=domain)
    ctx = PushContext.build(mesh)
    found: dict[str, None] = {}
    for proxy in ctx.proxies:
        try:
            generate(ctx, proxy)
        except UnbuildableConfig as err:
            found[str(err)] = None
    return list(found)
