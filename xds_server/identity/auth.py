"""Authenticating proxies: a per-workload token, checked against the node id.

`pocketmesh bootstrap` puts `HMAC-SHA256(server key, node id)` in the bootstrap's
gRPC `initial_metadata`; the xDS server recomputes it for the node id of the
first request and refuses the stream otherwise. So a proxy holding workload A's
bootstrap cannot pose as B and receive B's private key. The server key lives in
the CA directory (0600) beside the root key, which it is as secret as.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path
from typing import Final

import grpc

from xds_server.identity import metrics
from xds_server.protocol.errors import PermissionDenied

TOKEN_METADATA: Final = "x-pocketmesh-token"
TOKEN_KEY_FILE: Final = "xds-token.key"


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
        path = ca_dir / TOKEN_KEY_FILE
        if not path.exists():
            ca_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(secrets.token_bytes(32).hex().encode())
        return cls(bytes.fromhex(path.read_text().strip()))

    def token(self, node_id: str) -> str:
        return hmac.new(self._key, node_id.encode(), hashlib.sha256).hexdigest()

    def check(self, node_id: str, presented: str | None) -> None:
        """Raises PermissionDenied unless `presented` is `node_id`'s token."""
        if not presented:
            raise PermissionDenied(f"proxy {node_id!r} presented no {TOKEN_METADATA}")
        if not hmac.compare_digest(self.token(node_id), presented):
            raise PermissionDenied(
                f"proxy {node_id!r} presented a token that is not its own (another "
                "workload's credentials?)"
            )

    def authenticate(self, node_id: str, context: grpc.aio.ServicerContext) -> None:
        """The StreamHandler's `authenticate` hook."""
        metadata = context.invocation_metadata() or ()
        presented = next((str(v) for k, v in metadata if k == TOKEN_METADATA), None)
        try:
            self.check(node_id, presented)
        except PermissionDenied:
            metrics.proxy_auth_refusals.inc()
            raise
