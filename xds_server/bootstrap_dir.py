"""Each sidecar's bootstrap as a file, written by the control plane (`serve --bootstrap-dir`).

For sidecars that cannot run `pocketmesh bootstrap` themselves (an envoyproxy/envoy
container beside the control plane's): `DIR/<proxy id>/bootstrap.yaml` for every
WorkloadEntry, with that proxy's credential: with `--xds-tls`, the roots and SPIFFE ID
to verify the xDS server by and a client certificate naming the proxy, its key inline
(Envoy's `/config_dump` shows it `[redacted]`); on plaintext xDS, its token. Proxy
authentication then rests on each sidecar seeing only its own directory
(docker-compose mounts one volume per sidecar there): a container that is not that
sidecar has no credential to pose as it. A credential is issued once per proxy and
again after half its life (a year), not on every reload.

The admin interface goes on 127.0.0.1, read-only (`bootstrap.READ_ONLY_ADMIN_PATHS`):
such a sidecar has a network namespace of its own (a container, a pod), shared at
most with its app, and a plaintext bootstrap's /config_dump shows its token.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from xds_server.bootstrap import ADMIN_PORT, BootstrapOptions, render, sidecar_bootstrap

if TYPE_CHECKING:
    from xds_server.galley.model import WorkloadEntry
    from xds_server.identity import IdentityRuntime
    from xds_server.identity.credentials import ProxyCredential

log = logging.getLogger("pocketmesh.bootstrap")

BOOTSTRAP_FILE = "bootstrap.yaml"
ADMIN_ADDRESS = "127.0.0.1"


@dataclass
class BootstrapWriter:
    directory: Path
    xds_address: str  # as the sidecars reach the control plane, e.g. pocketmesh:15010
    identity: IdentityRuntime | None = None
    admin_port: int = ADMIN_PORT
    _written: dict[str, str] = field(default_factory=dict)  # proxy id -> text on disk
    _credentials: dict[str, ProxyCredential] = field(default_factory=dict)

    def options(self, workload: WorkloadEntry) -> BootstrapOptions:
        token = trusted_ca = server_id = cert = key = ""
        identity = self.identity
        if identity is not None:
            if identity.client_certificates:
                credential = self._credentials.get(workload.proxy_id)
                if identity.credentials.due(credential) or credential is None:
                    credential = identity.credentials.issue(workload.proxy_id)
                    self._credentials[workload.proxy_id] = credential
                cert, key = credential.cert_pem, credential.key_pem
            elif identity.options.proxy_auth:
                token = identity.tokens.token(workload.proxy_id)
            if identity.options.xds_tls:
                trusted_ca = identity.credentials.ca_pem.decode()  # never rotates
                server_id = str(identity.ca.control_plane_id)
        return BootstrapOptions(
            xds_address=self.xds_address,
            admin_address=ADMIN_ADDRESS,
            admin_port=self.admin_port,
            admin_read_only=True,
            token=token,
            xds_trusted_ca=trusted_ca,
            xds_server_id=server_id,
            xds_client_cert=cert,
            xds_client_key=key,
        )

    def path(self, proxy_id: str) -> Path:
        return self.directory / proxy_id / BOOTSTRAP_FILE

    def write(self, workloads: Iterable[WorkloadEntry]) -> tuple[list[str], list[str]]:
        """Write the bootstraps that changed (or went missing). Returns the proxy ids
        written and those that could not be (logged; the server keeps serving)."""
        written: list[str] = []
        failed: list[str] = []
        for workload in workloads:
            proxy_id = workload.proxy_id
            text = render(sidecar_bootstrap(workload, self.options(workload)))
            target = self.path(proxy_id)
            if self._written.get(proxy_id) == text and target.is_file():
                continue
            try:
                _write_atomically(target, text)
            except OSError as err:
                log.error("bootstrap of %s: cannot write %s: %s", proxy_id, target, err)
                failed.append(proxy_id)
                continue
            self._written[proxy_id] = text
            written.append(proxy_id)
        if written:
            log.info("bootstraps written to %s: %s", self.directory, ", ".join(written))
        return written, failed


def _write_atomically(target: Path, text: str) -> None:
    """Readers (an Envoy starting) see the old file or the new one, never half of one.

    A directory this creates is the owner's alone (0700); the file itself is 0644 so
    that a sidecar running as another user (envoyproxy/envoy runs Envoy as uid 101)
    can read it in a directory given to it alone, such as its own volume.
    """
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
