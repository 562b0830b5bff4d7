"""X.509-SVIDs: what a leaf certificate contains, and the check that a leaf is one.

Design choices (each tested in tests/ca/test_svid.py):

* **Subject empty, SAN critical.** Like Istio's workload certificates, an SVID's subject
  is the empty name, so the subjectAltName extension — holding exactly one URI, the
  SPIFFE ID — is marked critical, as RFC 5280 and the X509-SVID standard require.
* basicConstraints CA=false, critical. keyUsage critical: digitalSignature, plus
  keyEncipherment for RSA keys (TLS 1.2 RSA key exchange); never keyCertSign/cRLSign.
  extendedKeyUsage serverAuth + clientAuth (a workload is both). SKI and AKI present.
* NotBefore is backdated 2 minutes (as Istio) for clock skew; NotAfter is
  issued-at + TTL, capped at the earliest NotAfter on the issuer's path to the root.
* Serial: `x509.random_serial_number()`, 159 random bits, positive, at most 20 bytes.
* TTL from 1 minute (inclusive) to the CA's maximum (90 days by default).

Server certificates (for the control plane's own TLS port) differ: subject
``O=pocketmesh, CN=<first DNS name>``, SAN non-critical with the DNS names / IPs and,
optionally, the control plane's SPIFFE ID; EKU serverAuth (plus clientAuth when a
SPIFFE ID is present, so the certificate is also a valid SVID).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ca.errors import InvalidSvid, InvalidTtl, IssuanceError
from ca.keys import PublicKey, key_type_of
from ca.roots import ORGANIZATION
from ca.signer import Signer
from ca.spiffe_id import SpiffeId

__all__ = [
    "DEFAULT_SERVER_CERT_TTL",
    "DEFAULT_SVID_TTL",
    "LEAF_BACKDATE",
    "MAX_TTL",
    "MIN_TTL",
    "IpAddress",
    "IssuedCertificate",
    "IssuedServerCertificate",
    "IssuedSvid",
    "build_server_certificate",
    "build_svid_certificate",
    "check_ttl",
    "leaf_validity",
    "spiffe_id_of_svid",
]

DEFAULT_SVID_TTL = timedelta(hours=24)
DEFAULT_SERVER_CERT_TTL = timedelta(days=30)
MIN_TTL = timedelta(minutes=1)
MAX_TTL = timedelta(days=90)
LEAF_BACKDATE = timedelta(minutes=2)

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_EMPTY_NAME = x509.Name([])
_LEAF_CONSTRAINTS = x509.BasicConstraints(ca=False, path_length=None)


def _key_usage(key_encipherment: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


_KU_EC = _key_usage(False)
_KU_RSA = _key_usage(True)
_EKU_MTLS = x509.ExtendedKeyUsage(
    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
)
_EKU_SERVER = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])
_DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """A freshly signed certificate with its new private key.

    `cert_chain_pem` is the leaf followed by the intermediates up to, but not including,
    the root: roots travel only in the trust bundle (as the SPIFFE Workload API and TLS
    expect), so a self-signed-root CA hands out the leaf alone and an Istio ``cacerts``
    CA hands out leaf + ``ca-cert`` (+ any further intermediates).
    """

    cert_chain_pem: bytes
    private_key_pem: bytes  # PKCS#8, unencrypted
    not_before: datetime
    not_after: datetime
    serial: int
    renew_at: datetime  # half-life +-10 % jitter; see ca.rotation.renewal_time
    issuer_key_id: str  # hex SKI of the certificate that signed it
    certificate: x509.Certificate = field(repr=False, compare=False)

    @property
    def leaf_pem(self) -> bytes:
        end = self.cert_chain_pem.index(b"-----END CERTIFICATE-----")
        return self.cert_chain_pem[: end + len(b"-----END CERTIFICATE-----\n")]


@dataclass(frozen=True, slots=True)
class IssuedSvid(IssuedCertificate):
    """An X.509-SVID: exactly one URI SAN, `spiffe_id`."""

    spiffe_id: SpiffeId = field(kw_only=True)


@dataclass(frozen=True, slots=True)
class IssuedServerCertificate(IssuedCertificate):
    """A TLS server certificate for DNS names / IPs, optionally carrying a SPIFFE ID."""

    dns_names: tuple[str, ...] = field(kw_only=True)
    ip_addresses: tuple[IpAddress, ...] = field(kw_only=True)
    spiffe_id: SpiffeId | None = field(kw_only=True)


def check_ttl(ttl: timedelta, max_ttl: timedelta = MAX_TTL) -> None:
    """Raise `InvalidTtl` unless 1 minute <= `ttl` <= `max_ttl`."""
    if not isinstance(ttl, timedelta):
        raise InvalidTtl(f"ttl must be a timedelta, not {type(ttl).__name__}")
    if ttl < MIN_TTL:
        raise InvalidTtl(f"ttl {ttl} is below the minimum of {MIN_TTL} (one minute)")
    if ttl > max_ttl:
        raise InvalidTtl(f"ttl {ttl} is above this CA's maximum of {max_ttl}")


def leaf_validity(
    issued_at: datetime, ttl: timedelta, cap: datetime, backdate: timedelta = LEAF_BACKDATE
) -> tuple[datetime, datetime]:
    """(NotBefore, NotAfter) for a leaf: backdated start, end capped at the issuer's end.

    Both are whole seconds (what X.509 encodes), so they equal the certificate's fields.

    Raises:
        IssuanceError: the issuer has already expired at `issued_at`.
    """
    issued_at = issued_at.replace(microsecond=0)
    if issued_at >= cap:
        raise IssuanceError(
            f"the signing CA expired at {cap.isoformat()}; cannot issue at {issued_at.isoformat()}"
        )
    return issued_at - backdate, min(issued_at + ttl, cap)


def _leaf_builder(
    signer: Signer,
    public_key: PublicKey,
    subject: x509.Name,
    not_before: datetime,
    not_after: datetime,
    serial: int,
    eku: x509.ExtendedKeyUsage,
) -> x509.CertificateBuilder:
    key_usage = _KU_RSA if key_type_of(public_key) == "rsa" else _KU_EC
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(signer.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(_LEAF_CONSTRAINTS, critical=True)
        .add_extension(key_usage, critical=True)
        .add_extension(eku, critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(signer.authority_key_identifier, critical=False)
    )


def build_svid_certificate(
    signer: Signer,
    spiffe_id: SpiffeId,
    public_key: PublicKey,
    *,
    not_before: datetime,
    not_after: datetime,
    serial: int,
) -> x509.Certificate:
    """Sign an X.509-SVID for `spiffe_id` and `public_key` (see the module docstring)."""
    if not spiffe_id.path:
        raise IssuanceError(f"{spiffe_id} has no path; a leaf SVID needs a workload path")
    san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id.uri)])
    builder = _leaf_builder(
        signer, public_key, _EMPTY_NAME, not_before, not_after, serial, _EKU_MTLS
    ).add_extension(san, critical=True)
    return builder.sign(signer.private_key, signer.hash_algorithm)


def _check_dns_name(name: str) -> str:
    if not isinstance(name, str) or not name or len(name) > 253 or not name.isascii():
        raise IssuanceError(f"invalid DNS name {name!r}")
    labels = name.rstrip(".").split(".")
    if labels[0] == "*":
        labels = labels[1:]
    if not labels or not all(_DNS_LABEL.fullmatch(label) for label in labels):
        raise IssuanceError(f"invalid DNS name {name!r}")
    return name


def _to_ip(value: str | IpAddress) -> IpAddress:
    try:
        return ipaddress.ip_address(value)
    except ValueError as exc:
        raise IssuanceError(f"invalid IP address {value!r}") from exc


def build_server_certificate(
    signer: Signer,
    public_key: PublicKey,
    *,
    dns_names: Sequence[str],
    ip_addresses: Sequence[str | IpAddress],
    spiffe_id: SpiffeId | None,
    not_before: datetime,
    not_after: datetime,
    serial: int,
) -> tuple[x509.Certificate, tuple[str, ...], tuple[IpAddress, ...]]:
    """Sign a TLS server certificate; returns it with the normalized DNS names and IPs."""
    if isinstance(dns_names, str) or isinstance(ip_addresses, str):
        raise IssuanceError("dns_names and ip_addresses must be sequences, not a single string")
    names = tuple(_check_dns_name(n) for n in dns_names)
    ips = tuple(_to_ip(i) for i in ip_addresses)
    if not names and not ips:
        raise IssuanceError("a server certificate needs at least one DNS name or IP address")
    general: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    general.extend(x509.IPAddress(i) for i in ips)
    if spiffe_id is not None:
        if not spiffe_id.path:
            raise IssuanceError(f"{spiffe_id} has no path")
        general.append(x509.UniformResourceIdentifier(spiffe_id.uri))
    cn = (names[0] if names else str(ips[0]))[:64]
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )
    eku = _EKU_MTLS if spiffe_id is not None else _EKU_SERVER
    builder = _leaf_builder(
        signer, public_key, subject, not_before, not_after, serial, eku
    ).add_extension(x509.SubjectAlternativeName(general), critical=False)
    return builder.sign(signer.private_key, signer.hash_algorithm), names, ips


def spiffe_id_of_svid(cert: x509.Certificate) -> SpiffeId:
    """Check that `cert` is structurally a leaf X.509-SVID and return its SPIFFE ID.

    Checks every MUST of the X509-SVID standard that a single certificate can show:
    exactly one URI SAN, a valid SPIFFE ID with a non-empty path, CA=false, key usage
    present and critical with digitalSignature and without keyCertSign/cRLSign, SAN
    critical when the subject is empty, and — if EKU is present — both serverAuth and
    clientAuth.
    Signatures and validity are the verifier's business (ca.verify).

    Raises:
        InvalidSvid: naming the broken rule.
    """
    exts = cert.extensions
    try:
        san_ext = exts.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        raise InvalidSvid("leaf has no subjectAltName extension") from None
    uris = san_ext.value.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise InvalidSvid(f"leaf must have exactly one URI SAN, has {len(uris)}")
    if len(cert.subject) == 0 and not san_ext.critical:
        raise InvalidSvid("leaf subject is empty but subjectAltName is not critical")
    try:
        spiffe_id = SpiffeId.parse(uris[0])
    except ValueError as exc:
        raise InvalidSvid(f"URI SAN is not a valid SPIFFE ID: {exc}") from exc
    if not spiffe_id.path:
        raise InvalidSvid(f"leaf SPIFFE ID {spiffe_id} has an empty path")
    try:
        bc = exts.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise InvalidSvid("leaf has no basicConstraints extension") from None
    if bc.ca:
        raise InvalidSvid("leaf has basicConstraints CA=true")
    try:
        ku_ext = exts.get_extension_for_class(x509.KeyUsage)
    except x509.ExtensionNotFound:
        raise InvalidSvid("leaf has no keyUsage extension") from None
    ku = ku_ext.value
    if not ku_ext.critical:
        raise InvalidSvid("leaf keyUsage is not critical")
    if not ku.digital_signature:
        raise InvalidSvid("leaf keyUsage lacks digitalSignature")
    if ku.key_cert_sign or ku.crl_sign:
        raise InvalidSvid("leaf keyUsage must not include keyCertSign or cRLSign")
    try:
        eku = exts.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return spiffe_id
    if ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in eku and not (
        ExtendedKeyUsageOID.SERVER_AUTH in eku and ExtendedKeyUsageOID.CLIENT_AUTH in eku
    ):
        raise InvalidSvid("leaf extendedKeyUsage must include both serverAuth and clientAuth")
    return spiffe_id
