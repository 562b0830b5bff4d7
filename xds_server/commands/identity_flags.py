"""The identity flags `serve` takes: CA directory, SVID lifetime, xDS TLS, proxy tokens."""

from __future__ import annotations

import argparse
import re
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any, TypedDict

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
        help="require each proxy to prove its node id on xDS, so a proxy gets only its own "
        "key: with --xds-tls by a client certificate (its key redacted in Envoy's admin; "
        "--no-ads bootstraps too), else by a token in the bootstrap; --no-proxy-auth for "
        "bootstraps with neither (default: on)",
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
        help="the control plane's CA directory, for this proxy's credential: a client "
        "certificate for a --xds-tls server, else a token (default: the "
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
        help="the xDS port speaks TLS: verify it by the xDS CA (which never rotates) and "
        "the control plane's SPIFFE ID, and prove the node id by a client certificate "
        "(default: as the running mesh does)",
    )


class IdentityFields(TypedDict, total=False):
    """The BootstrapOptions fields `bootstrap_identity` fills."""

    token: str
    xds_client_cert: str
    xds_client_key: str
    xds_trusted_ca: str
    xds_server_id: str


class BootstrapRefused(Exception):
    """A bootstrap that the server would refuse: say why instead of writing it."""


def bootstrap_identity(
    args: argparse.Namespace, node_id: str, *, ads: bool = True
) -> IdentityFields:
    """BootstrapOptions fields: how the proxy proves its node id and, with TLS, how it
    verifies xDS.

    xDS over TLS: a client certificate for the node id (identity.credentials), whose
    key Envoy's /config_dump redacts; plaintext xDS: the node id's token, which it
    shows. The CA comes from the rule in `commands.locate`. A server known to require
    proxy authentication gets a bootstrap that carries it or none at all
    (BootstrapRefused): an unauthenticated proxy would only be refused on connect, far
    from the command that made it.
    """
    mesh = running_mesh(args.debug_address)
    if mesh is not None and not same_address(mesh.xds_address, args.xds_address):
        mesh = None  # a mesh, but not the one this bootstrap connects to
    ca_dir = ca_dir_for(args.ca_dir, mesh)
    tls = args.xds_tls or (mesh is not None and mesh.xds_tls)
    needs_auth = mesh is not None and mesh.proxy_auth
    what = "client certificates" if tls else "proxy tokens"
    where = f"the pocketmesh server at {args.xds_address} (pid {mesh.pid})" if mesh else ""
    if needs_auth and mesh is not None and mesh.ca_dir is None:
        raise BootstrapRefused(
            f"{where} requires {what}, and its CA lives in memory: no bootstrap can "
            "carry one it accepts (run it with --ca-dir, or with --no-proxy-auth)"
        )
    theirs = mesh.ca_dir if mesh is not None and needs_auth else None
    if theirs is not None and args.ca_dir is not None and args.ca_dir.resolve() != theirs:
        raise BootstrapRefused(
            f"{where} uses the CA in {theirs}, not {args.ca_dir}: a credential from "
            f"{args.ca_dir} would be refused (drop --ca-dir, or pass --ca-dir {theirs})"
        )
    if needs_auth and not ads and not tls:
        raise BootstrapRefused(
            f"{where} requires proxy tokens, which --no-ads bootstraps cannot carry "
            "(the per-type services have no token): run the server with --xds-tls (a "
            "client certificate covers every stream), or with --no-proxy-auth"
        )
    fields: IdentityFields = {}
    if (ca_dir / TOKEN_KEY_FILE).is_file():
        tokens = ProxyTokens.load_or_create(ca_dir)
        if tls:
            credential = tokens.credentials().issue(node_id)
            fields["xds_client_cert"] = credential.cert_pem
            fields["xds_client_key"] = credential.key_pem
        else:
            fields["token"] = tokens.token(node_id)
    elif needs_auth:
        raise BootstrapRefused(
            f"{where} requires {what}, and {ca_dir} holds no token key "
            f"({TOKEN_KEY_FILE}) to make one from; a bootstrap without one would be "
            "refused: pass the server's --ca-dir"
        )
    if not fields and mesh is None:
        print(
            f"pocketmesh bootstrap: note: no {'client certificate' if tls else 'token'} in "
            f"this bootstrap: no pocketmesh server answers at {args.debug_address} for "
            f"{args.xds_address}, and {ca_dir} holds no token key; a server with "
            "--proxy-auth (serve's default) will refuse it",
            file=sys.stderr,
        )
    if tls:
        if not (ca_dir / TOKEN_KEY_FILE).is_file():
            raise BootstrapRefused(
                f"xDS over TLS: the server's certificate is signed by the xDS CA that "
                f"derives from {ca_dir / TOKEN_KEY_FILE}, which does not exist yet: start "
                f"the server with --ca-dir {ca_dir} first (it makes the key), or pass the "
                "server's --ca-dir"
            )
        # The xDS CA, not the mesh roots: it never rotates, so Envoy (which reads this
        # once) keeps verifying xDS across root rotations (identity.credentials).
        fields["xds_trusted_ca"] = ProxyTokens.load_or_create(ca_dir).credentials().ca_pem.decode()
        fields["xds_server_id"] = str(load_ca_dir(ca_dir).control_plane_id)
    return fields
