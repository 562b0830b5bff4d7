"""`CertificateAuthority`: Citadel's signing front door.

It owns a `RootRotation` (which root signs, which are trusted), a clock and a random
source, and issues X.509-SVIDs and server certificates. It does no file I/O: when its
rotation state changes it hands it to an optional `StateSink` (`ca.store` provides
one for a CA directory), so it works the same in memory and on disk.

Issuing is cheap on purpose: the signing key, issuer name, AKI and intermediate PEM
are prepared once per root (`ca.signer.Signer`); each issue generates a P-256 key,
builds and signs one certificate, and serializes two PEM blocks.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ca.bundle import TrustBundle
from ca.clock import Clock, utc_now
from ca.errors import CaDirError, IssuanceError, RotationError, SvidVerificationError
from ca.keys import (
    DEFAULT_RSA_BITS,
    KeyType,
    PrivateKey,
    generate_private_key,
    key_type_of,
    private_key_to_pem,
)
from ca.roots import ROOT_VALIDITY, create_root_certificate, reissue_root_certificate
from ca.rotation import (
    DEFAULT_MIN_OVERLAP,
    RootEntry,
    RootRotation,
    renewal_time,
    root_rotation_due,
)
from ca.signer import Signer
from ca.spiffe_id import SpiffeId, validate_trust_domain
from ca.svid import (
    DEFAULT_SERVER_CERT_TTL,
    DEFAULT_SVID_TTL,
    MAX_TTL,
    IpAddress,
    IssuedServerCertificate,
    IssuedSvid,
    build_server_certificate,
    build_svid_certificate,
    check_ttl,
    leaf_validity,
)
from ca.verify import verify_svid

__all__ = [
    "CONTROL_PLANE_NAMESPACE",
    "CONTROL_PLANE_SERVICE_ACCOUNT",
    "CertificateAuthority",
    "Identity",
    "StateSink",
    "issue_server_certificate",
]

CONTROL_PLANE_NAMESPACE = "istio-system"
CONTROL_PLANE_SERVICE_ACCOUNT = "istiod"

Identity = SpiffeId | str | tuple[str, str, str]
"""A SPIFFE ID, its string form, or ``(trust_domain, namespace, service_account)``."""

_PEM = serialization.Encoding.PEM
T = TypeVar("T")
log = logging.getLogger("pocketmesh.ca")


class StateSink(Protocol):
    """Where a CA saves its rotation state when it changes (e.g. a CA directory)."""

    def save_rotation(self, rotation: RootRotation) -> None: ...


class CertificateAuthority:
    """Issues SVIDs for one trust domain and manages its roots."""

    def __init__(
        self,
        rotation: RootRotation,
        *,
        trust_domain: str,
        clock: Clock = utc_now,
        rng: Callable[[], float] = random.random,
        max_ttl: timedelta = MAX_TTL,
        state_sink: StateSink | None = None,
    ) -> None:
        """Usually built by `ca.store.init_ca_dir`/`load_ca_dir` or `in_memory`.

        Args:
            rotation: the trusted roots and the one that signs.
            trust_domain: the only trust domain this CA signs SPIFFE IDs for.
            clock: the time source for every decision.
            rng: floats in [0, 1] for renewal jitter (pass a seeded one in tests).
            max_ttl: the longest leaf lifetime accepted.
            state_sink: told whenever the rotation state must be saved.
        """
        self._trust_domain = validate_trust_domain(trust_domain)
        self._rotation = rotation
        self._clock = clock
        self._rng = rng
        self._max_ttl = max_ttl
        self._sink = state_sink
        self._control_plane_id = SpiffeId.for_workload(
            trust_domain, CONTROL_PLANE_NAMESPACE, CONTROL_PLANE_SERVICE_ACCOUNT
        )

    @classmethod
    def in_memory(
        cls,
        trust_domain: str = "cluster.local",
        *,
        key_type: KeyType = "ec",
        rsa_bits: int = DEFAULT_RSA_BITS,
        clock: Clock = utc_now,
        rng: Callable[[], float] = random.random,
        root_validity: timedelta = ROOT_VALIDITY,
        min_overlap: timedelta = DEFAULT_MIN_OVERLAP,
        max_ttl: timedelta = MAX_TTL,
    ) -> CertificateAuthority:
        """A CA with a fresh self-signed root that lives only in memory (tests, demos)."""
        validate_trust_domain(trust_domain)
        now = clock()
        key = generate_private_key(key_type, rsa_bits)
        root = create_root_certificate(key, trust_domain, now=now, validity=root_validity)
        rotation = RootRotation.single(Signer(root, key), now, min_overlap=min_overlap)
        return cls(rotation, trust_domain=trust_domain, clock=clock, rng=rng, max_ttl=max_ttl)

    # -- what it is ----------------------------------------------------------------

    @property
    def trust_domain(self) -> str:
        return self._trust_domain

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def rotation(self) -> RootRotation:
        return self._rotation

    @property
    def signer(self) -> Signer:
        """The key material new certificates are signed with."""
        return self._rotation.signer

    @property
    def signing_certificate(self) -> x509.Certificate:
        """The certificate whose key signs leaves (the root, or a ``cacerts`` intermediate)."""
        return self._rotation.signer.certificate

    @property
    def signing_root(self) -> x509.Certificate:
        """The root that new leaves chain to."""
        return self._rotation.signer.root

    @property
    def trust_bundle(self) -> TrustBundle:
        """Every root currently trusted (more than one during a rotation)."""
        return self._rotation.bundle

    def trust_bundle_pem(self) -> bytes:
        """All trusted roots, concatenated PEM: the ``ROOTCA`` secret."""
        return self._rotation.bundle.pem

    @property
    def control_plane_id(self) -> SpiffeId:
        """``spiffe://<td>/ns/istio-system/sa/istiod``."""
        return self._control_plane_id

    # -- issuing -------------------------------------------------------------------

    def _coerce_identity(self, identity: Identity) -> SpiffeId:
        if isinstance(identity, SpiffeId):
            spiffe_id = identity
        elif isinstance(identity, str):
            spiffe_id = SpiffeId.parse(identity)
        elif isinstance(identity, tuple) and len(identity) == 3:
            spiffe_id = SpiffeId.for_workload(*identity)
        else:
            raise TypeError(
                "identity must be a SpiffeId, a 'spiffe://...' string or "
                f"(trust_domain, namespace, service_account), not {identity!r}"
            )
        if spiffe_id.trust_domain != self._trust_domain:
            raise IssuanceError(
                f"{spiffe_id} is in trust domain {spiffe_id.trust_domain!r}; "
                f"this CA signs only for {self._trust_domain!r}"
            )
        if not spiffe_id.path:
            raise IssuanceError(f"{spiffe_id} has no path; an SVID names a workload")
        return spiffe_id

    def _record(self, not_after: datetime) -> None:
        if self._rotation.record_issued(not_after) and self._sink is not None:
            try:
                self._sink.save_rotation(self._rotation)
            except CaDirError as err:
                # Issuing goes on; the mark is written with the next save that succeeds
                # (it only matters once this root is retired).
                log.error("could not save the CA's rotation state: %s", err)

    def issue_svid(
        self,
        identity: Identity,
        ttl: timedelta = DEFAULT_SVID_TTL,
        key_type: KeyType = "ec",
    ) -> IssuedSvid:
        """Issue an X.509-SVID and a new private key for `identity`.

        Raises:
            InvalidSpiffeId: `identity` is not a valid SPIFFE ID.
            IssuanceError: another trust domain, empty path, or the CA has expired.
            InvalidTtl: `ttl` below one minute or above the CA's maximum.
        """
        spiffe_id = self._coerce_identity(identity)
        check_ttl(ttl, self._max_ttl)
        key = generate_private_key(key_type)
        signer = self._rotation.signer
        now = self._clock()
        not_before, not_after = leaf_validity(now, ttl, signer.not_after)
        cert = build_svid_certificate(
            signer,
            spiffe_id,
            key.public_key(),
            not_before=not_before,
            not_after=not_after,
            serial=x509.random_serial_number(),
        )
        self._record(not_after)
        issued = _issued(cert, key, signer, now, not_before, not_after, self._rng)
        return IssuedSvid(**issued, spiffe_id=spiffe_id)

    def issue_server_cert(
        self,
        dns_names: Sequence[str] = (),
        ip_addresses: Sequence[str | IpAddress] = (),
        *,
        ttl: timedelta = DEFAULT_SERVER_CERT_TTL,
        key_type: KeyType = "ec",
        with_spiffe_id: bool = True,
    ) -> IssuedServerCertificate:
        """Issue a TLS server certificate (e.g. for the xDS port).

        SANs: `dns_names`, `ip_addresses` and, with `with_spiffe_id`, the control plane's
        SPIFFE ID (`control_plane_id`), so mTLS peers can pin it. EKU serverAuth (plus
        clientAuth when the SPIFFE ID is included, as the SVID standard wants both).
        """
        check_ttl(ttl, self._max_ttl)
        issued = issue_server_certificate(
            self._rotation.signer,
            dns_names=dns_names,
            ip_addresses=ip_addresses,
            spiffe_id=self._control_plane_id if with_spiffe_id else None,
            ttl=ttl,
            now=self._clock(),
            rng=self._rng,
            key_type=key_type,
        )
        self._record(issued.not_after)
        return issued

    def reusable(self, svid: IssuedSvid, ttl: timedelta) -> bool:
        """Whether an SVID issued earlier (kept across a restart) may be handed out now.

        Yes when the root signing today signed it, it verifies against the bundle now,
        its renewal time has not come, and it lives no longer than one issued now with
        `ttl` would (a shortened ``--svid-ttl`` takes effect at once).
        """
        now = self._clock()
        if svid.issuer_key_id != self._rotation.signer.key_id or now >= svid.renew_at:
            return False
        if svid.not_after - now > ttl:
            return False
        try:
            if self.verify(svid.cert_chain_pem) != svid.spiffe_id:
                return False
        except SvidVerificationError:
            return False
        self._record(svid.not_after)
        return True

    def verify(self, chain_pem: bytes | str) -> SpiffeId:
        """Verify a presented SVID chain against this CA's bundle, now; see `verify_svid`."""
        return verify_svid(
            chain_pem, self.trust_bundle, self._clock(), trust_domain=self._trust_domain
        )

    # -- roots ---------------------------------------------------------------------

    def _save(self) -> None:
        if self._sink is not None:
            self._sink.save_rotation(self._rotation)

    def _transition(self, change: Callable[[], T]) -> T:
        """Apply a rotation step and save it; if it cannot be saved (a full disk), take
        it back, so the CA never signs with or trusts a root its directory lacks."""
        before = self._rotation.checkpoint()
        result = change()
        try:
            self._save()
        except BaseException:
            self._rotation.restore(before)
            raise
        return result

    def _require_self_signed(self, action: str) -> Signer:
        signer = self._rotation.signer
        if not signer.is_self_signed_root:
            raise RotationError(
                f"cannot {action}: this CA signs with a plugged-in intermediate (Istio "
                "cacerts); rotate it by replacing the cacerts files"
            )
        return signer

    def root_rotation_due(self, grace_fraction: float = 0.2) -> bool:
        """True when less than `grace_fraction` of the signing root's life is left."""
        return root_rotation_due(self.signer, self._clock(), grace_fraction=grace_fraction)

    def begin_root_rotation(
        self,
        *,
        key_type: KeyType | None = None,
        rsa_bits: int | None = None,
        validity: timedelta = ROOT_VALIDITY,
    ) -> RootEntry:
        """Generate a new root and add it to the trust bundle as PENDING.

        It signs nothing until `activate_new_root`. Key type and RSA size default to the
        current root's.
        """
        current = self._require_self_signed("rotate the root")
        current_key = current.private_key
        kt: KeyType = key_type or key_type_of(current_key)
        bits = rsa_bits or DEFAULT_RSA_BITS
        if rsa_bits is None and isinstance(current_key, rsa.RSAPrivateKey):
            bits = current_key.key_size
        key = generate_private_key(kt, bits)
        now = self._clock()
        cert = create_root_certificate(key, self._trust_domain, now=now, validity=validity)
        signer = Signer(cert, key)
        return self._transition(lambda: self._rotation.begin(signer, now))

    def can_activate_new_root(self) -> bool:
        """True when a pending root exists and its minimum overlap is over."""
        return self._rotation.can_activate(self._clock())

    def activate_new_root(self, *, force: bool = False) -> RootEntry:
        """Switch signing to the pending root; the old one stays trusted (RETIRED).

        Call this once every proxy has acknowledged the bundle with the new root.
        Raises `RotationError` before the minimum overlap unless `force`.
        """
        now = self._clock()
        return self._transition(lambda: self._rotation.activate(now, force=force))

    def prune(self) -> tuple[RootEntry, ...]:
        """Drop retired roots whose certificates have all expired; return them."""
        now = self._clock()
        before = self._rotation.checkpoint()
        gone = self._rotation.prune(now)
        if gone:
            try:
                self._save()
            except BaseException:
                self._rotation.restore(before)
                raise
        return gone

    def reissue_root_same_key(self, validity: timedelta = ROOT_VALIDITY) -> x509.Certificate:
        """Re-issue the signing root's certificate with the same key and subject.

        Extends the root's life without a rotation: leaves signed under the old
        certificate chain to and verify against the new one. Returns the new root.
        """
        current = self._require_self_signed("re-issue the root")
        cert = reissue_root_certificate(
            current.certificate, current.private_key, now=self._clock(), validity=validity
        )
        signer = Signer(cert, current.private_key)
        self._transition(lambda: self._rotation.replace_active_signer(signer))
        return cert

    def __repr__(self) -> str:
        return (
            f"CertificateAuthority(trust_domain={self._trust_domain!r}, "
            f"signer={self.signer!r}, trusted_roots={len(self.trust_bundle)})"
        )


def issue_server_certificate(
    signer: Signer,
    *,
    dns_names: Sequence[str],
    ip_addresses: Sequence[str | IpAddress],
    spiffe_id: SpiffeId | None,
    ttl: timedelta,
    now: datetime,
    rng: Callable[[], float],
    key_type: KeyType = "ec",
) -> IssuedServerCertificate:
    """A new key and a TLS server certificate for it signed by `signer`, valid for `ttl`
    from `now` (capped at the signer's end), renewal due at half-life (jitter from `rng`).

    The CA's own server certificates and the xDS client CA's (`xds_server.identity`)."""
    key = generate_private_key(key_type)
    not_before, not_after = leaf_validity(now, ttl, signer.not_after)
    cert, names, ips = build_server_certificate(
        signer,
        key.public_key(),
        dns_names=dns_names,
        ip_addresses=ip_addresses,
        spiffe_id=spiffe_id,
        not_before=not_before,
        not_after=not_after,
        serial=x509.random_serial_number(),
    )
    return IssuedServerCertificate(
        **_issued(cert, key, signer, now, not_before, not_after, rng),
        dns_names=names,
        ip_addresses=ips,
        spiffe_id=spiffe_id,
    )


def _issued(
    cert: x509.Certificate,
    key: PrivateKey,
    signer: Signer,
    now: datetime,
    not_before: datetime,
    not_after: datetime,
    rng: Callable[[], float],
) -> dict[str, Any]:
    """What every issued certificate carries."""
    return {
        "cert_chain_pem": cert.public_bytes(_PEM) + signer.intermediates_pem,
        "private_key_pem": private_key_to_pem(key),
        "not_before": not_before,
        "not_after": not_after,
        "serial": cert.serial_number,
        "renew_at": renewal_time(now, not_after, rng),
        "issuer_key_id": signer.key_id,
        "certificate": cert,
    }
