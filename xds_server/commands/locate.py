"""Where the running mesh's CA is: one rule for every command.

    1. `--ca-dir DIR`, when given;
    2. else the CA of the running mesh: the control plane at `--debug-address`
       (default 127.0.0.1:15014, the address `serve` and `up` use) says where its CA
       directory is, whether proxies must present a token, and whether xDS is TLS
       (`GET /debug/config`);
    3. else `.pocketmesh/ca`, where `serve` and `up` create it by default.

So after `pocketmesh up` or `pocketmesh serve`, `bootstrap`, `ca inspect` and `status`
find the CA with no flags, from any directory.
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from pathlib import Path

from xds_server.identity import DEFAULT_CA_DIR


@dataclass(frozen=True, slots=True)
class RunningMesh:
    """What a running control plane says about itself on its debug address."""

    debug_address: str
    xds_address: str
    ca_dir: Path | None  # None: no CA (--no-identity) or an in-memory one
    proxy_auth: bool
    xds_tls: bool
    pid: int


def running_mesh(debug_address: str, timeout: float = 1.0) -> RunningMesh | None:
    """The pocketmesh control plane answering at `debug_address`, or None."""
    host, _, port = debug_address.rpartition(":")
    try:
        conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=timeout)
        try:
            conn.request("GET", "/debug/config")
            resp = conn.getresponse()
            body = resp.read()
        finally:
            conn.close()
        info = json.loads(body) if resp.status == 200 else None
    except (OSError, ValueError, http.client.HTTPException):
        return None
    if not isinstance(info, dict) or "xds_address" not in info:
        return None  # not a pocketmesh server, or one too old to say
    ca_dir = info.get("ca_dir")
    return RunningMesh(
        debug_address=debug_address,
        xds_address=str(info["xds_address"]),
        ca_dir=Path(ca_dir) if ca_dir else None,
        proxy_auth=bool(info.get("proxy_auth")),
        xds_tls=bool(info.get("xds_tls")),
        pid=int(info.get("pid") or 0),
    )


def ca_dir_for(explicit: Path | None, mesh: RunningMesh | None) -> Path:
    """The rule above: the flag, else the running mesh's CA, else the default."""
    if explicit is not None:
        return explicit
    if mesh is not None and mesh.ca_dir is not None:
        return mesh.ca_dir
    return DEFAULT_CA_DIR


def same_address(a: str, b: str) -> bool:
    """`localhost:15010` and `127.0.0.1:15010` are one address to a local proxy."""

    def norm(address: str) -> tuple[str, str]:
        host, _, port = address.rpartition(":")
        host = host.strip("[]").lower()
        return ("127.0.0.1" if host in ("localhost", "") else host), port

    return norm(a) == norm(b)
