"""Proxy credentials: a client certificate per node id, for xDS over TLS.

Why not the token: a token travels in the bootstrap's gRPC `initial_metadata`, and
Envoy's admin `/config_dump` shows the bootstrap to whoever reaches the admin address
(on one machine, every local user). A private key is a field Envoy redacts there
(`[redacted]`, inline or by `filename`), so a client certificate proves the node id
without anything secret leaving the file it is written to.

A credential is an ECDSA P-256 key and a certificate with one URI SAN,
``urn:pocketmesh:xds-client:<node id>``, EKU clientAuth only, CA=false, signed by the
*xDS client CA*. That CA is trusted by the xDS port alone (it is not in `ROOTCA`, so
no sidecar accepts a credential as a peer): a credential is good for claiming its
node id on xDS and for nothing else.

The client CA's key is derived (HKDF-SHA256) from the proxy token key
(`xds-token.key`, 0600 in the CA directory): the one secret that vouches for proxies
either way, no new file, and whoever can make a token (the control plane, `up`,
`pocketmesh bootstrap` with the CA directory) can issue a credential. Replacing the
token key revokes every token and every credential at once.

A credential is valid for `CREDENTIAL_TTL` (a year): Envoy reads it when it starts,
so it must outlive the sidecar; whoever writes a bootstrap issues a fresh one.

The same CA signs the xDS port's own server certificate (`issue_server`), and
bootstraps verify the xDS server by it: Envoy reads a bootstrap's trusted CA once,
when it starts, so a CA that rotated with the mesh roots would leave every Envoy
started before a root rotation unable to reconnect once the old root is gone. This
one never rotates (it changes only with the token key), so xDS trust outlives any
number of root rotations, and the mesh roots stay what sidecars trust each other by.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ca import Clock, utc_now
from ca.authority import issue_server_certificate
from ca.keys import generate_private_key, private_key_to_pem
from ca.signer import Signer
from ca.spiffe_id import SpiffeId
from ca.svid import IssuedServerCertificate, check_ttl
from xds_server.identity import metrics
from xds_server.protocol.errors import PermissionDenied
from xds_server.protocol.untrusted import shown

SAN_PREFIX: Final = "urn:pocketmesh:xds-client:"
CREDENTIAL_TTL: Final = timedelta(days=365)
BACKDATE: Final = timedelta(minutes=2)  # clock skew, as for SVIDs
_HKDF_INFO: Final = b"pocketmesh xDS client CA v1"
# RFC 5280 4.1.2.5: "no well-defined expiration date" for the CA itself; its key is
# revoked by replacing the token key.
_CA_NOT_BEFORE: Final = datetime(2000, 1, 1, tzinfo=UTC)
_CA_NOT_AFTER: Final = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
_P256_ORDER: Final = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


@dataclass(frozen=True, slots=True)
class ProxyCredential:
    node_id: str
    cert_pem: str
    key_pem: str
    not_after: datetime
    renew_at: datetime  # half-life: a writer re-issues from then on


def client_ca_key(seed: bytes) -> ec.EllipticCurvePrivateKey:
    """The client CA's P-256 key, derived from `seed` (the token key)."""
    if len(seed) < 16:
        raise ValueError("the proxy token key must be at least 16 bytes")
    # 48 bytes reduced modulo the group order: a bias of 2^-128 at most.
    material = HKDF(algorithm=hashes.SHA256(), length=48, salt=None, info=_HKDF_INFO).derive(seed)
    scalar = int.from_bytes(material, "big") % (_P256_ORDER - 1) + 1
    return ec.derive_private_key(scalar, ec.SECP256R1())


class ProxyCredentials:
    """Issues credentials (writers of bootstraps) and checks them (the xDS server)."""

    def __init__(self, seed: bytes, clock: Clock = utc_now) -> None:
        self._key = client_ca_key(seed)
        self._clock = clock
        public = self._key.public_key()
        self._ski = x509.SubjectKeyIdentifier.from_public_key(public)
        key_id = f"key-{self._ski.digest.hex()[:12]}"  # tells CAs of other token keys apart
        self._name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pocketmesh"),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, key_id),
                x509.NameAttribute(NameOID.COMMON_NAME, "pocketmesh xDS client CA"),
            ]
        )
        ca = (
            x509.CertificateBuilder()
            .subject_name(self._name)
            .issuer_name(self._name)
            .public_key(public)
            .serial_number(int.from_bytes(self._ski.digest[:8], "big") or 1)
            .not_valid_before(_CA_NOT_BEFORE)
            .not_valid_after(_CA_NOT_AFTER)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .add_extension(self._ski, critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.ca_pem: bytes = ca.public_bytes(Encoding.PEM)
        self._signer = Signer(ca, self._key)

    def issue_server(
        self,
        dns_names: list[str],
        ip_addresses: list[str],
        spiffe_id: SpiffeId,
        ttl: timedelta,
    ) -> IssuedServerCertificate:
        """The xDS port's certificate: its names and addresses, and the control plane's
        SPIFFE ID (which bootstraps pin), signed by this CA (see the module doc)."""
        check_ttl(ttl, CREDENTIAL_TTL)
        return issue_server_certificate(
            self._signer,
            dns_names=dns_names,
            ip_addresses=ip_addresses,
            spiffe_id=spiffe_id,
            ttl=ttl,
            now=self._clock(),
            rng=random.random,
        )

    def issue(self, node_id: str, ttl: timedelta = CREDENTIAL_TTL) -> ProxyCredential:
        now = self._clock()
        key = generate_private_key("ec")
        not_before, not_after = now - BACKDATE, now + ttl
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pocketmesh")]))
            .issuer_name(self._name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(SAN_PREFIX + node_id)]),
                critical=False,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(self._ski),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        return ProxyCredential(
            node_id=node_id,
            cert_pem=cert.public_bytes(Encoding.PEM).decode(),
            key_pem=private_key_to_pem(key).decode(),
            not_after=not_after,
            renew_at=not_before + (not_after - not_before) / 2,
        )

    def due(self, credential: ProxyCredential | None) -> bool:
        """Whether a writer should issue `credential` anew (none yet, or past half-life)."""
        return credential is None or self._clock() >= credential.renew_at

    @staticmethod
    def node_of(cert_pem: bytes) -> str | None:
        """The node id a (verified) credential names, or None if it names none."""
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
            sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except (ValueError, x509.ExtensionNotFound):
            return None
        uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
        named = [u.removeprefix(SAN_PREFIX) for u in uris if u.startswith(SAN_PREFIX)]
        return named[0] if len(named) == 1 else None

    def check(self, node_id: str, cert_pem: bytes | None) -> None:
        """Raises PermissionDenied unless the peer's certificate (verified by the TLS
        handshake against `ca_pem`) names `node_id`."""
        if not cert_pem:
            metrics.proxy_auth_refusals.labels("no_certificate").inc()
            raise PermissionDenied(f"proxy {shown(repr(node_id))} presented no client certificate")
        named = self.node_of(cert_pem)
        if named != node_id:
            metrics.proxy_auth_refusals.labels("wrong_certificate").inc()
            whose = f"{shown(repr(named))}'s" if named is not None else "a"
            raise PermissionDenied(
                f"proxy {shown(repr(node_id))} presented {whose} client certificate, not its "
                "own (another workload's credentials?)"
            )


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )
