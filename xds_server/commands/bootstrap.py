"""`pocketmesh bootstrap`: print the Envoy bootstrap of one workload's sidecar."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ca import CaError
from ca.files import KEY_MODE, write_atomic
from xds_server.app import DEFAULT_XDS_ADDRESS
from xds_server.bootstrap import BootstrapOptions, render, sidecar_bootstrap
from xds_server.commands.common import DEFAULT_CONFIG, load_or_report
from xds_server.commands.identity_flags import (
    BootstrapRefused,
    add_bootstrap_identity_flags,
    bootstrap_identity,
)
from xds_server.galley.model import DEFAULT_NAMESPACE


def register(sub: Any) -> None:
    boot = sub.add_parser("bootstrap", help="print an Envoy bootstrap for a workload's sidecar")
    boot.add_argument("--workload", required=True, help="WorkloadEntry NAME[.NAMESPACE]")
    boot.add_argument("--config", default=DEFAULT_CONFIG, help="config directory (%(default)s)")
    boot.add_argument("--xds-address", default=DEFAULT_XDS_ADDRESS, help="%(default)s")
    boot.add_argument("--delta", action="store_true", help="use Delta xDS (DELTA_GRPC)")
    boot.add_argument(
        "--no-ads",
        action="store_true",
        help="use the per-type services (CDS, EDS, LDS, RDS) instead of ADS",
    )
    boot.add_argument("--admin-port", type=int, default=15000, help="Envoy admin port")
    boot.add_argument(
        "-o",
        "--output",
        help="write to a file instead of stdout (mode 0600: it holds the proxy's token)",
    )
    add_bootstrap_identity_flags(boot)
    boot.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    name, _, namespace = args.workload.partition(".")
    namespace = namespace or DEFAULT_NAMESPACE
    config = load_or_report(args.config)
    if config is None:
        return 1
    workload = config.workload(name, namespace)
    if workload is None:
        known = ", ".join(w.proxy_id for w in config.workload_entries) or "none"
        print(
            f"pocketmesh: no WorkloadEntry {namespace}/{name} in {args.config} (known: {known})",
            file=sys.stderr,
        )
        return 1
    try:
        identity = bootstrap_identity(args, workload.proxy_id, ads=not args.no_ads)
    except BootstrapRefused as err:
        print(f"pocketmesh bootstrap: refused: {err}", file=sys.stderr)
        return 1
    except CaError as err:  # the CA directory's token key or roots
        print(f"pocketmesh: {err}", file=sys.stderr)
        return 1
    options = BootstrapOptions(
        xds_address=args.xds_address,
        delta=args.delta,
        ads=not args.no_ads,
        admin_port=args.admin_port,
        **identity,
    )
    text = render(sidecar_bootstrap(workload, options))
    if args.output:
        try:
            # Owner-only from the first byte, replaced whole: it holds the proxy's token.
            write_atomic(Path(args.output), text.encode(), KEY_MODE)
        except CaError as err:  # the output file
            print(f"pocketmesh: {err}", file=sys.stderr)
            return 1
    else:
        sys.stdout.write(text)
    return 0
