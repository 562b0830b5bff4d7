"""`pocketmesh bootstrap`: print the Envoy bootstrap of one workload's sidecar."""

from __future__ import annotations

import argparse
import io
import os
import stat
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
        "--admin-read-only",
        action="store_true",
        help="let the admin answer only its read-only endpoints (/ready, /stats, "
        "/config_dump, ...; as `up` does): nobody who reaches it can stop or drain Envoy",
    )
    boot.add_argument(
        "-o",
        "--output",
        help="write to a file instead of stdout (mode 0600: it holds the proxy's "
        "credential; stdout redirected to a file of yours is made 0600 too)",
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
        admin_read_only=args.admin_read_only,
        **identity,
    )
    text = render(sidecar_bootstrap(workload, options))
    if options.token:
        print(
            f"pocketmesh bootstrap: note: {workload.proxy_id}'s token is in this bootstrap "
            f"as gRPC metadata, which its Envoy admin's /config_dump shows to whoever "
            f"reaches {options.admin_address or workload.address}:{options.admin_port}; "
            "serve xDS with --xds-tls and bootstraps carry a client certificate instead, "
            "whose key Envoy redacts",
            file=sys.stderr,
        )
    if args.output:
        try:
            # Owner-only from the first byte, replaced whole: it holds the credential.
            write_atomic(Path(args.output), text.encode(), KEY_MODE)
        except CaError as err:  # the output file
            print(f"pocketmesh: {err}", file=sys.stderr)
            return 1
    else:
        _private_stdout()
        sys.stdout.write(text)
    return 0


def _private_stdout() -> None:
    """`bootstrap > X.yaml` makes X.yaml with the umask's mode (often 0644): a file of
    ours that others may read is made 0600 before the credential goes in."""
    try:
        fd = sys.stdout.fileno()
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode) and info.st_uid == os.getuid() and info.st_mode & 0o077:
            os.fchmod(fd, KEY_MODE)
    except (OSError, ValueError, io.UnsupportedOperation):
        pass  # not a file (a pipe, a terminal, captured output)
