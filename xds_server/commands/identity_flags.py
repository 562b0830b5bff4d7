"""The identity flags `serve` takes: CA directory, SVID lifetime, xDS TLS, proxy tokens."""

from __future__ import annotations

import argparse
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

from ca import load_ca_dir
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
        default=DEFAULT_CA_DIR,
        help="the control plane's CA directory: embeds this proxy's token if it has one "
        "(%(default)s)",
    )
    parser.add_argument(
        "--xds-tls",
        action="store_true",
        help="the xDS port speaks TLS: verify it by the CA's roots",
    )


def bootstrap_identity(args: argparse.Namespace, node_id: str) -> dict[str, str]:
    """BootstrapOptions fields: the proxy's token and, with --xds-tls, how to verify xDS."""
    fields: dict[str, str] = {}
    ca_dir: Path = args.ca_dir
    if (ca_dir / TOKEN_KEY_FILE).is_file():
        fields["token"] = ProxyTokens.load_or_create(ca_dir).token(node_id)
    if args.xds_tls:
        ca = load_ca_dir(ca_dir)
        fields["xds_trusted_ca"] = ca.trust_bundle_pem().decode()
        fields["xds_server_id"] = str(ca.control_plane_id)
    return fields
