"""Authenticating proxies: a per-workload credential, checked against the node id, and
the address the proxy connects from, checked against its WorkloadEntry.

Two credentials, one per transport of the xDS port:

* xDS over TLS (`--xds-tls`): a client certificate naming the node id
  (`identity.credentials`), required by the TLS handshake and matched against the
  node id of the first request. Its key is redacted in Envoy's `/config_dump`.
* plaintext xDS: a token, `HMAC-SHA256(server key, node id)`, in the bootstrap's gRPC
  `initial_metadata`, recomputed for the node id of the first request. Envoy's
  `/config_dump` shows it to whoever reaches the admin address: serve with `--xds-tls`
  where other users share the machine.

Either way a proxy holding workload A's bootstrap cannot pose as B and receive B's
private key. The server key (`xds-token.key`, from which the client CA's key is
derived too) lives in the CA directory (0600) beside the root key, which it is as
secret as.

A token copied elsewhere is refused too when it can be told: a stream for a
WorkloadEntry must come from that entry's address. The bootstrap binds the xDS
connection to the workload's address when both are on this machine's loopback, so
on one machine a proxy's address is its WorkloadEntry's; across machines the peer
address is the workload's own (pod IPs, container addresses). When one side is
loopback and the other is not (a port-forward, NAT, a sidecar whose WorkloadEntry
names the pod's loopback) the address says nothing and only the token counts.
Any local user can bind any 127.x address, so on one machine the token file's
permissions (0600) are what keep it secret.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Final

import grpc

from ca import CaDirError, Clock, utc_now
from ca.files import make_private_dir, read_private, write_new
from xds_server.identity import metrics
from xds_server.identity.credentials import ProxyCredentials
from xds_server.protocol.errors import PermissionDenied
from xds_server.protocol.untrusted import shown

TOKEN_METADATA: Final = "x-pocketmesh-token"
TOKEN_KEY_FILE: Final = "xds-token.key"

# The WorkloadEntry address of a node id, or None when there is no such workload.
AddressOf = Callable[[str], str | None]


class ProxyTokens:
    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the proxy token key must be at least 16 bytes")
        self._key = key

    @classmethod
    def in_memory(cls) -> ProxyTokens:
        return cls(secrets.token_bytes(32))

    @classmethod
    def load_or_create(cls, ca_dir: Path) -> ProxyTokens:
        """The key in `ca_dir`, made (0600, in a 0700 directory) if there is none.

        Raises:
            CaDirError: the key file is writable by others, unreadable or not hex.
        """
        path = ca_dir / TOKEN_KEY_FILE
        if not path.exists():
            make_private_dir(ca_dir)
            write_new(path, secrets.token_bytes(32).hex().encode(), 0o600)
        text = read_private(path, "proxy token key").decode(errors="replace").strip()
        try:
            return cls(bytes.fromhex(text))
        except ValueError:
            raise CaDirError(f"{path}: not a proxy token key (64 hex digits)") from None

    def credentials(self, clock: Clock = utc_now) -> ProxyCredentials:
        """The client certificates' issuer, whose CA key derives from this key."""
        return ProxyCredentials(self._key, clock)

    def token(self, node_id: str) -> str:
        return hmac.new(self._key, node_id.encode(), hashlib.sha256).hexdigest()

    def check(self, node_id: str, presented: str | None) -> None:
        """Raises PermissionDenied unless `presented` is `node_id`'s token."""
        if not presented:
            metrics.proxy_auth_refusals.labels("no_token").inc()
            raise PermissionDenied(f"proxy {shown(repr(node_id))} presented no {TOKEN_METADATA}")
        if not hmac.compare_digest(self.token(node_id).encode(), presented.encode()):
            metrics.proxy_auth_refusals.labels("wrong_token").inc()
            raise PermissionDenied(
                f"proxy {shown(repr(node_id))} presented a token that is not its own (another "
                "workload's credentials?)"
            )

    def authenticate(self, node_id: str, context: grpc.aio.ServicerContext) -> None:
        """The StreamHandler's `authenticate` hook, token only."""
        metadata = context.invocation_metadata() or ()
        presented = next((str(v) for k, v in metadata if k == TOKEN_METADATA), None)
        self.check(node_id, presented)


def peer_ip(peer: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP of a gRPC peer string (``ipv4:127.0.0.1:5000``, ``ipv6:[::1]:5000``)."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        host = rest.rsplit(":", 1)[0]
    elif kind == "ipv6":
        host = rest.rsplit(":", 1)[0].strip("[]")
    else:
        return None
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def check_peer_address(node_id: str, peer: str, workload_address: str | None) -> None:
    """Raises PermissionDenied when `peer` cannot be the workload's own address.

    Compared only when both are IPs on the same side of loopback (see the module doc).
    """
    if workload_address is None:
        return
    ip = peer_ip(peer)
    try:
        expected = ipaddress.ip_address(workload_address)
    except ValueError:
        return  # a hostname: nothing to compare
    if ip is None or ip.is_loopback != expected.is_loopback or ip == expected:
        return
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped == expected:
        return
    metrics.proxy_auth_refusals.labels("wrong_address").inc()
    raise PermissionDenied(
        f"proxy {shown(repr(node_id))} connected from {ip}, but its WorkloadEntry's address "
        f"is {expected}: a token used from elsewhere? (a bootstrap made before pocketmesh "
        "bound xDS connections to the workload's address: run `pocketmesh bootstrap` again)"
    )


class ProxyAuthenticator:
    """The credential, then the address: the StreamHandler's `authenticate` hook.

    With `credentials` (xDS over TLS, client certificates required by the handshake)
    the peer's certificate must name the node id and a token counts for nothing;
    without, the token must be the node id's."""

    def __init__(
        self,
        tokens: ProxyTokens,
        address_of: AddressOf,
        credentials: ProxyCredentials | None = None,
    ) -> None:
        self.tokens = tokens
        self.address_of = address_of
        self.credentials = credentials

    def __call__(self, node_id: str, context: grpc.aio.ServicerContext) -> None:
        if self.credentials is not None:
            certs = (context.auth_context() or {}).get("x509_pem_cert") or ()
            self.credentials.check(node_id, next(iter(certs), None))
        else:
            self.tokens.authenticate(node_id, context)
        check_peer_address(node_id, context.peer(), self.address_of(node_id))
