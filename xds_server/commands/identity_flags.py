"""The identity flags `serve` takes: CA directory, SVID lifetime, xDS TLS, proxy tokens."""

from __future__ import annotations

import argparse
import re
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from ca import load_ca_dir
from xds_server.app import DEFAULT_DEBUG_ADDRESS
from xds_server.commands.locate import ca_dir_for, running_mesh, same_address
from xds_server.identity import DEFAULT_CA_DIR, IdentityOptions
from xds_server.identity.auth import TOKEN_KEY_FILE, ProxyTokens

_DURATION = re.compile(r"(\d+)([smhd])\Z")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def duration(text: str) -> timedelta:
    """`90s`, `1m`, `24h`, `7d`."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 90s, 1m, 24h or 7d")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def add_identity_flags(parser: Any) -> None:
    group = parser.add_argument_group("identity (SPIFFE CA, SDS, mTLS)")
    group.add_argument(
        "--ca-dir",
        type=Path,
        default=DEFAULT_CA_DIR,
        help="CA directory, created on first start if absent (%(default)s)",
    )
    group.add_argument(
        "--svid-ttl",
        type=duration,
        default=timedelta(hours=24),
        help="workload cert lifetime (24h)",
    )
    group.add_argument(
        "--xds-tls", action="store_true", help="serve xDS over TLS with a cert from the CA"
    )
    group.add_argument(
        "--proxy-auth",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="require each proxy's token (embedded by `pocketmesh bootstrap`) on xDS, so a "
        "proxy gets only its own key; --no-proxy-auth for bootstraps without tokens, such "
        "as --no-ads ones (default: on)",
    )
    group.add_argument(
        "--no-identity", action="store_true", help="no CA, no SDS, no mTLS: plaintext mesh"
    )


def identity_options(args: argparse.Namespace) -> IdentityOptions | None:
    if args.no_identity:
        return None
    return IdentityOptions(
        ca_dir=args.ca_dir,
        svid_ttl=args.svid_ttl,
        xds_tls=args.xds_tls,
        proxy_auth=args.proxy_auth,
    )


def add_bootstrap_identity_flags(parser: Any) -> None:
    parser.add_argument(
        "--ca-dir",
        type=Path,
        default=None,
        help="the control plane's CA directory, for this proxy's token (default: the "
        "running mesh's, asked at --debug-address, else .pocketmesh/ca)",
    )
    parser.add_argument(
        "--debug-address",
        default=DEFAULT_DEBUG_ADDRESS,
        help="where to ask the running control plane for its CA and whether it requires "
        "tokens or TLS (%(default)s)",
    )
    parser.add_argument(
        "--xds-tls",
        action="store_true",
        help="the xDS port speaks TLS: verify it by the CA's roots (default: as the "
        "running mesh does)",
    )


class BootstrapRefused(Exception):
    """A bootstrap that the server would refuse: say why instead of writing it."""


def bootstrap_identity(
    args: argparse.Namespace, node_id: str, *, ads: bool = True
) -> dict[str, str]:
    """BootstrapOptions fields: the proxy's token and, with TLS, how to verify xDS.

    The CA comes from the rule in `commands.locate`. A server known to require tokens
    gets a bootstrap with one or none at all (BootstrapRefused): a tokenless proxy
    would only be refused on connect, far from the command that made it.
    """
    mesh = running_mesh(args.debug_address)
    if mesh is not None and not same_address(mesh.xds_address, args.xds_address):
        mesh = None  # a mesh, but not the one this bootstrap connects to
    ca_dir = ca_dir_for(args.ca_dir, mesh)
    needs_token = mesh is not None and mesh.proxy_auth
    where = f"the pocketmesh server at {args.xds_address} (pid {mesh.pid})" if mesh else ""
    if needs_token and mesh is not None and mesh.ca_dir is None:
        raise BootstrapRefused(
            f"{where} requires proxy tokens, and its CA lives in memory: no bootstrap can "
            "carry a token it accepts (run it with --ca-dir, or with --no-proxy-auth)"
        )
    theirs = mesh.ca_dir if mesh is not None and needs_token else None
    if theirs is not None and args.ca_dir is not None and args.ca_dir.resolve() != theirs:
        raise BootstrapRefused(
            f"{where} uses the CA in {theirs}, not {args.ca_dir}: a token from "
            f"{args.ca_dir} would be refused (drop --ca-dir, or pass --ca-dir {theirs})"
        )
    if needs_token and not ads:
        raise BootstrapRefused(
            f"{where} requires proxy tokens, which --no-ads bootstraps cannot carry "
            "(the per-type services have no token): run the server with --no-proxy-auth"
        )
    fields: dict[str, str] = {}
    if (ca_dir / TOKEN_KEY_FILE).is_file():
        fields["token"] = ProxyTokens.load_or_create(ca_dir).token(node_id)
    elif needs_token:
        raise BootstrapRefused(
            f"{where} requires proxy tokens, and {ca_dir} holds no token key "
            f"({TOKEN_KEY_FILE}); a bootstrap without one would be refused: pass the "
            "server's --ca-dir"
        )
    if "token" not in fields and mesh is None:
        print(
            f"pocketmesh bootstrap: note: no token in this bootstrap: no pocketmesh server "
            f"answers at {args.debug_address} for {args.xds_address}, and {ca_dir} holds no "
            f"token key; a server with --proxy-auth (serve's default) will refuse it",
            file=sys.stderr,
        )
    if args.xds_tls or (mesh is not None and mesh.xds_tls):
        ca = load_ca_dir(ca_dir)
        fields["xds_trusted_ca"] = ca.trust_bundle_pem().decode()
        fields["xds_server_id"] = str(ca.control_plane_id)
    return fields
