"""The identity side of a running control plane: CA, SVIDs by SDS, proxy auth, rotation.

`IdentityRuntime` is what `ControlPlane` holds when identities are on. It lays the
SDS secrets over the cache (`attach`), authenticates proxies for the stream
handler, serves the xDS port's TLS certificate, and runs one loop (`run`) that
renews SVIDs and moves a root rotation along:

    rotate_root()  -> the new root joins ROOTCA; pushed by SDS to every proxy
    every proxy ACKs that ROOTCA  -> the new root signs; every SVID re-issued
    the old root's last certificate expires  -> the old root leaves ROOTCA

A rotation starts by `POST /debug/ca/rotate-root` (loopback only, see debug_http), or
by itself when less than 20 % of the signing root's life is left; it is refused (409,
with the reason) while one is pending or while two retired roots are still trusted.
`GET /debug/ca` shows the roots and SVIDs. With a CA directory, issued SVIDs are kept
there, so a restarted control plane re-issues only what is due.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from ca import (
    CaError,
    CertificateAuthority,
    Clock,
    IssuedServerCertificate,
    RotationError,
    SvidStore,
    detect_layout,
    init_ca_dir,
    load_ca_dir,
    utc_now,
)
from ca.svid import DEFAULT_SVID_TTL
from ca.svid_store import SVIDS_DIR
from xds_server import xds_types
from xds_server.identity import metrics
from xds_server.identity.auth import ProxyAuthenticator, ProxyTokens
from xds_server.identity.credentials import ProxyCredentials
from xds_server.identity.issuer import WorkloadIssuer
from xds_server.identity.sds import IdentitySecrets
from xds_server.protocol.events import SyncState
from xds_server.protocol.untrusted import shown

if TYPE_CHECKING:
    from aiohttp import web

    from xds_server.cache.store import SnapshotCache
    from xds_server.grpc_api.connections import Connections

log = logging.getLogger("pocketmesh.identity")

DEFAULT_CA_DIR = Path(".pocketmesh/ca")


@dataclass(frozen=True)
class IdentityOptions:
    ca_dir: Path | None = None  # None: an in-memory CA (tests, demos)
    svid_ttl: timedelta = DEFAULT_SVID_TTL
    xds_tls: bool = False
    proxy_auth: bool = True
    clock: Clock | None = None  # test seam: the CA's clock
    tick_seconds: float = 1.0


class IdentityRuntime:
    def __init__(
        self,
        ca: CertificateAuthority,
        tokens: ProxyTokens,
        options: IdentityOptions,
        store: SvidStore | None = None,
    ) -> None:
        self.ca = ca
        self.tokens = tokens
        # Client certificates for xDS over TLS (identity.credentials), same CA clock.
        self.credentials: ProxyCredentials = tokens.credentials(ca.clock)
        self.options = options
        self.issuer = WorkloadIssuer(ca, options.svid_ttl, store)
        self._rotation_refused = ""  # why the last automatic rotation could not start
        self.secrets = IdentitySecrets(self.issuer)
        self._cache: SnapshotCache | None = None
        self._connections: Connections | None = None
        self._bundle_epoch = 0  # the secrets epoch that carried the new root
        self.xds_cert: IssuedServerCertificate | None = None  # with --xds-tls
        self._xds_names: tuple[list[str], list[str]] = ([], [])

    @classmethod
    def create(cls, options: IdentityOptions, trust_domain: str) -> IdentityRuntime:
        clock = options.clock or utc_now
        if options.ca_dir is None:
            ca = CertificateAuthority.in_memory(trust_domain, clock=clock)
            tokens = ProxyTokens.in_memory()
        elif detect_layout(options.ca_dir) is not None:
            # An existing CA names the trust domain (`pocketmesh ca init --trust-domain`).
            ca = load_ca_dir(options.ca_dir, clock=clock)
            tokens = ProxyTokens.load_or_create(options.ca_dir)
        else:
            ca = init_ca_dir(options.ca_dir, trust_domain, clock=clock)
            tokens = ProxyTokens.load_or_create(options.ca_dir)
        log.info("CA for %s: %r", ca.trust_domain, ca)
        store = SvidStore(options.ca_dir / SVIDS_DIR) if options.ca_dir is not None else None
        return cls(ca, tokens, options, store)

    # -- wiring ---------------------------------------------------------------------

    def attach(self, cache: SnapshotCache, connections: Connections) -> None:
        cache.secrets = self.secrets
        self._cache = cache
        self._connections = connections

    @property
    def client_certificates(self) -> bool:
        """Whether proxies prove their node id by a client certificate (xDS over TLS
        with proxy authentication), rather than by a token."""
        return self.options.xds_tls and self.options.proxy_auth

    @property
    def authenticator(self) -> Callable[[str, grpc.aio.ServicerContext], None] | None:
        if not self.options.proxy_auth:
            return None
        credentials = self.credentials if self.client_certificates else None
        return ProxyAuthenticator(self.tokens, self._workload_address, credentials)

    def _workload_address(self, node_id: str) -> str | None:
        if self._cache is None:
            return None
        proxy = self._cache.snapshot.push_context.proxy(node_id)
        return None if proxy is None else proxy.workload.address

    def secret_refused(self, node_id: str, names: list[str], first: bool) -> None:
        """A proxy asked for secrets it is not sent: count it; log it once per stream."""
        known = self._cache is not None and self._workload_address(node_id) is not None
        reason = "not_owned" if known else "no_workload"
        metrics.sds_refusals.labels(reason).inc()
        if first:
            why = (
                "secrets that are not its own"
                if known
                else "secrets, but it names no WorkloadEntry"
            )
            log.warning(
                "proxy %s asked for %s: %s (not sent)",
                shown(node_id), why, shown(", ".join(names[:10])),
            )  # fmt: skip

    def server_credentials(self, host: str) -> grpc.ServerCredentials:
        """The xDS port's certificate: the control plane's SPIFFE ID plus its address.

        It is signed by the xDS CA (`identity.credentials`), which bootstraps trust for
        xDS and which never rotates with the mesh roots: an Envoy started before any
        number of root rotations still verifies it. gRPC asks for it again on every
        handshake; it is renewed at half-life. With proxy authentication the handshake
        requires a client
        certificate from the xDS client CA (`identity.credentials`); which node id it
        names is checked per stream (`authenticator`).
        """
        ips = [host] if _is_ip(host) else ["127.0.0.1"]
        names = ["localhost"] if _is_ip(host) else [host, "localhost"]
        self._xds_names = (names, ips)
        self.xds_cert = self._issue_server_cert()

        clients = self.credentials.ca_pem if self.client_certificates else None

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            renewed = self.refresh_xds_cert()
            return None if renewed is None else _server_config(renewed, clients)

        return grpc.dynamic_ssl_server_credentials(
            # grpc documents None as "no change"; its stubs say otherwise.
            _server_config(self.xds_cert, clients),
            fetch,  # type: ignore[arg-type]
            require_client_authentication=clients is not None,
        )

    def refresh_xds_cert(self) -> IssuedServerCertificate | None:
        """A new xDS server certificate if the current one is due."""
        cert = self.xds_cert
        if cert is None or self.ca.clock() < cert.renew_at:
            return None
        self.xds_cert = self._issue_server_cert()
        return self.xds_cert

    def _issue_server_cert(self) -> IssuedServerCertificate:
        names, ips = self._xds_names
        cert = self.credentials.issue_server(
            names, ips, self.ca.control_plane_id, ttl=self.options.svid_ttl
        )
        log.info(
            "xDS over TLS: certificate for %s, %s, %s (until %s)",
            ", ".join(names), ", ".join(ips), cert.spiffe_id, f"{cert.not_after:%Y-%m-%d}",
        )  # fmt: skip
        return cert

    # -- the loop ---------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                self.tick()
            except Exception:  # a CA hiccup must not end renewals for good
                log.exception("identity tick failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.options.tick_seconds)

    def tick(self) -> bool:
        """Renew what is due and advance a root rotation; push SDS if anything changed."""
        changed = bool(self.issuer.renew_due())
        if not self.issuer.rotation_pending and self._root_rotation_due():
            try:
                self.rotate_root()
            except RotationError as err:
                if str(err) != self._rotation_refused:  # say it once, not every tick
                    log.error("root rotation due but refused: %s", err)
                self._rotation_refused = str(err)
            else:
                log.info("root rotation due: less than 20%% of the signing root's life was left")
        elif self.issuer.rotation_pending and self._bundle_acked():
            self.issuer.activate_new_root()
            changed = True
        if self.issuer.prune():
            changed = True
        if changed:
            self._publish()
        return changed

    def rotate_root(self) -> dict[str, Any]:
        """Start a root rotation (the new root is trusted first, signs later)."""
        entry = self.issuer.begin_root_rotation()
        self._publish()
        self._bundle_epoch = self.secrets.epoch
        return {"new_root": entry.key_id, "state": self.rotation_state()}

    def rotation_state(self) -> list[dict[str, Any]]:
        return [
            {
                "key_id": e.key_id,
                "state": e.state.value,
                "not_after": e.signer.not_after.isoformat(),
                "signed_until": e.signed_until.isoformat() if e.signed_until else None,
            }
            for e in self.ca.rotation.entries
        ]

    def _publish(self) -> None:
        self.secrets.bump()
        if self._cache is not None:
            self._cache.secrets_changed()

    def _root_rotation_due(self) -> bool:
        # A plugged-in intermediate (Istio cacerts) is rotated by replacing its files.
        return self.ca.signer.is_self_signed_root and self.ca.root_rotation_due()

    def _bundle_acked(self) -> bool:
        """Every connected proxy has ACKed SDS since the bundle with the new root went out."""
        if self._connections is None:
            return True
        for conn in self._connections:
            for status in conn.status():
                if status.type_url != xds_types.SECRET:
                    continue
                if conn.secret_epoch < self._bundle_epoch:
                    return False
                if status.state != SyncState.SYNCED:
                    return False
        return True

    # -- debug HTTP -----------------------------------------------------------------------

    def debug_routes(self) -> list[web.RouteDef]:
        from aiohttp import web

        async def rotate(_: web.Request) -> web.Response:
            try:
                return web.json_response(self.rotate_root())
            except CaError as err:  # one pending already, too many retired, cacerts
                log.warning("root rotation refused: %s", err)
                body = {"error": f"root rotation refused: {err}", "roots": self.rotation_state()}
                return web.json_response(body, status=409)

        async def state(_: web.Request) -> web.Response:
            svids = [
                {
                    "spiffe_id": str(svid.spiffe_id),
                    "serial": f"{svid.serial:x}",
                    "not_after": svid.not_after.isoformat(),
                    "renew_at": svid.renew_at.isoformat(),
                    "root": svid.issuer_key_id,
                }
                for _, svid in sorted(self.issuer.issued().items())
            ]
            body = {"trust_domain": self.ca.trust_domain, "roots": self.rotation_state()}
            return web.json_response({**body, "svids": svids})

        return [web.post("/debug/ca/rotate-root", rotate), web.get("/debug/ca", state)]


def _server_config(
    cert: IssuedServerCertificate, client_ca: bytes | None
) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(cert.private_key_pem, cert.cert_chain_pem)], root_certificates=client_ca
    )


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
