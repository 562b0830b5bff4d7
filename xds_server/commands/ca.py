"""`pocketmesh ca init` and `pocketmesh ca inspect`: the CA directory and certificates."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ca import CaError, init_ca_dir, inspect_certificate, load_ca_dir
from xds_server.app import DEFAULT_DEBUG_ADDRESS
from xds_server.commands.locate import ca_dir_for, running_mesh
from xds_server.identity import DEFAULT_CA_DIR
from xds_server.identity.auth import ProxyTokens


def register(sub: Any) -> None:
    ca = sub.add_parser("ca", help="the mesh CA: create a CA directory, inspect certificates")
    verbs = ca.add_subparsers(dest="ca_command", required=True, metavar="VERB")
    init = verbs.add_parser("init", help="create a CA directory with a new self-signed root")
    init.add_argument("--dir", type=Path, default=DEFAULT_CA_DIR, help="%(default)s")
    init.add_argument("--trust-domain", default="cluster.local", help="%(default)s")
    init.add_argument("--key-type", choices=("ec", "rsa"), default="ec", help="%(default)s")
    init.add_argument("--rsa-bits", type=int, default=2048, help="%(default)s")
    init.set_defaults(func=run_init)
    inspect = verbs.add_parser(
        "inspect", help="show a certificate's SPIFFE ID, issuer, validity and chain status"
    )
    inspect.add_argument("file", type=Path, help="PEM file (a chain: the leaf first)")
    inspect.add_argument(
        "--ca-dir",
        type=Path,
        default=None,
        help="check the chain against this CA's trust bundle (default: the running mesh's "
        "CA, asked at --debug-address, else .pocketmesh/ca if it exists)",
    )
    inspect.add_argument(
        "--debug-address",
        default=DEFAULT_DEBUG_ADDRESS,
        help="the running control plane, asked for its CA directory (%(default)s)",
    )
    inspect.set_defaults(func=run_inspect)


def run_init(args: argparse.Namespace) -> int:
    try:
        ca = init_ca_dir(args.dir, args.trust_domain, args.key_type, args.rsa_bits)
        ProxyTokens.load_or_create(args.dir)
    except CaError as err:
        print(f"pocketmesh: {err}", file=sys.stderr)
        return 1
    root = ca.signing_root
    print(f"created CA in {args.dir} for trust domain {ca.trust_domain}")
    print(
        f"  root: {root.subject.rfc4514_string()}, valid until {root.not_valid_after_utc:%Y-%m-%d}"
    )
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    try:
        pem = args.file.read_bytes()
    except OSError as err:
        print(f"pocketmesh: cannot read {args.file}: {err.strerror}", file=sys.stderr)
        return 1
    bundle = None
    ca_dir: Path | None = args.ca_dir
    if ca_dir is None:
        ca_dir = ca_dir_for(None, running_mesh(args.debug_address))
        if not ca_dir.is_dir():
            ca_dir = None  # no CA anywhere: inspect the certificate alone
    try:
        if ca_dir is not None:
            bundle = load_ca_dir(ca_dir).trust_bundle_pem()
        sys.stdout.write(inspect_certificate(pem, bundle))
    except CaError as err:
        print(f"pocketmesh: {args.file}: {err}", file=sys.stderr)
        return 1
    return 0
