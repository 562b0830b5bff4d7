"""Human-readable (and structured) reports on certificates: ``pocketmesh ca inspect``.

`analyze_certificate` returns an `InspectionReport` — one `CertificateReport` per PEM
certificate in the input and, when a trust bundle is given, a `ChainStatus` for the
first certificate (the rest of the input serve as its intermediates). Leaves are
verified with `cryptography`'s X.509 verifier (client verifier for clientAuth
certificates, server verifier for serverAuth-only ones); a CA certificate is reported
as a bundle root or as directly signed by one. `inspect_certificate` renders it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID

from ca.bundle import TrustBundle
from ca.certificates import fingerprint_sha256, is_self_signed, load_pem_certificates
from ca.clock import Clock, utc_now
from ca.errors import CaError, SvidVerificationError
from ca.keys import describe_public_key
from ca.svid import spiffe_id_of_svid
from ca.verify import as_bundle, verify_chain

__all__ = [
    "CertificateReport",
    "ChainStatus",
    "InspectionReport",
    "analyze_certificate",
    "inspect_certificate",
]

_KU_NAMES = (
    ("digital_signature", "digitalSignature"),
    ("content_commitment", "contentCommitment"),
    ("key_encipherment", "keyEncipherment"),
    ("data_encipherment", "dataEncipherment"),
    ("key_agreement", "keyAgreement"),
    ("key_cert_sign", "keyCertSign"),
    ("crl_sign", "cRLSign"),
)
_EKU_NAMES = {
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
    ExtendedKeyUsageOID.CODE_SIGNING: "codeSigning",
    ExtendedKeyUsageOID.EMAIL_PROTECTION: "emailProtection",
    ExtendedKeyUsageOID.TIME_STAMPING: "timeStamping",
    ExtendedKeyUsageOID.OCSP_SIGNING: "OCSPSigning",
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE: "anyExtendedKeyUsage",
}


@dataclass(frozen=True, slots=True)
class CertificateReport:
    """What one certificate says about itself."""

    subject: str  # RFC 4514; "" for the empty name
    issuer: str
    serial: int
    not_before: datetime
    not_after: datetime
    status: str  # "valid", "expired" or "not yet valid" at the time of inspection
    key_type: str  # "EC P-256", "RSA 2048", ...
    is_ca: bool
    path_length: int | None
    self_signed: bool
    spiffe_id: str | None  # set when the certificate is a well-formed leaf X.509-SVID
    svid_problem: str | None  # for leaves: why it is not a valid X.509-SVID
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    uris: tuple[str, ...]
    key_usage: tuple[str, ...]
    extended_key_usage: tuple[str, ...]
    subject_key_id: str | None
    authority_key_id: str | None
    fingerprint_sha256: str

    @property
    def serial_hex(self) -> str:
        h = format(self.serial, "x")
        h = "0" * (len(h) % 2) + h
        return ":".join(h[i : i + 2] for i in range(0, len(h), 2))


@dataclass(frozen=True, slots=True)
class ChainStatus:
    """The verdict of verifying the first certificate against a trust bundle."""

    verified: bool
    reason: str  # what was verified, or why it failed
    error: str | None  # the exception class name on failure (e.g. "CertificateExpired")
    chain: tuple[str, ...]  # subjects from the certificate up to the root, when verified
    bundle_roots: int


@dataclass(frozen=True, slots=True)
class InspectionReport:
    checked_at: datetime
    certificates: tuple[CertificateReport, ...]
    chain: ChainStatus | None  # None when no trust bundle was given

    @property
    def first(self) -> CertificateReport:
        return self.certificates[0]

    def render(self) -> str:
        lines: list[str] = []
        total = len(self.certificates)
        for i, cert in enumerate(self.certificates, start=1):
            if lines:
                lines.append("")
            lines.extend(_render_certificate(cert, i, total, self.checked_at))
        lines.append("")
        if self.chain is None:
            lines.append("Chain:        not checked (no trust bundle given)")
        else:
            verdict = "OK" if self.chain.verified else f"FAILED ({self.chain.error})"
            lines.append(f"Chain:        {verdict}: {self.chain.reason}")
            if self.chain.chain:
                lines.append(f"  path:       {' -> '.join(self.chain.chain)}")
        return "\n".join(lines) + "\n"


def _duration(delta: timedelta) -> str:
    seconds = int(abs(delta.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {rest % 60}s"


def _render_certificate(c: CertificateReport, i: int, total: int, now: datetime) -> list[str]:
    kind = "CA certificate" if c.is_ca else "leaf certificate"
    if c.is_ca and c.self_signed:
        kind = "root CA certificate (self-signed)"
    elif c.spiffe_id:
        kind = "leaf X.509-SVID"
    if c.status == "valid":
        when = f"valid, expires in {_duration(c.not_after - now)}"
    elif c.status == "expired":
        when = f"EXPIRED {_duration(now - c.not_after)} ago"
    else:
        when = f"NOT YET VALID, starts in {_duration(c.not_before - now)}"
    ca = "yes" if c.is_ca else "no"
    if c.is_ca and c.path_length is not None:
        ca += f" (path length {c.path_length})"
    lines = [f"Certificate {i} of {total}: {kind}"]
    if c.spiffe_id:
        lines.append(f"  SPIFFE ID:  {c.spiffe_id}")
    elif c.svid_problem:
        lines.append(f"  SPIFFE ID:  none — not an X.509-SVID: {c.svid_problem}")
    lines += [
        f"  Subject:    {c.subject or '(empty)'}",
        f"  Issuer:     {c.issuer or '(empty)'}",
        f"  Serial:     {c.serial_hex}",
        f"  Not before: {c.not_before.isoformat()}",
        f"  Not after:  {c.not_after.isoformat()}",
        f"  Validity:   {when}",
        f"  Key:        {c.key_type}",
        f"  Is CA:      {ca}",
    ]
    if c.key_usage:
        lines.append(f"  Key usage:  {', '.join(c.key_usage)}")
    if c.extended_key_usage:
        lines.append(f"  Ext. usage: {', '.join(c.extended_key_usage)}")
    sans = [f"URI:{u}" for u in c.uris] + [f"DNS:{d}" for d in c.dns_names]
    sans += [f"IP:{a}" for a in c.ip_addresses]
    if sans:
        lines.append(f"  SANs:       {', '.join(sans)}")
    if c.subject_key_id:
        lines.append(f"  SKI:        {c.subject_key_id}")
    if c.authority_key_id:
        lines.append(f"  AKI:        {c.authority_key_id}")
    lines.append(f"  SHA-256:    {c.fingerprint_sha256}")
    return lines


def _ext(cert: x509.Certificate, cls: type[x509.ExtensionType]) -> x509.ExtensionType | None:
    try:
        return cert.extensions.get_extension_for_class(cls).value
    except x509.ExtensionNotFound:
        return None


def _report(cert: x509.Certificate, now: datetime) -> CertificateReport:
    bc = _ext(cert, x509.BasicConstraints)
    is_ca = isinstance(bc, x509.BasicConstraints) and bc.ca
    path_length = bc.path_length if isinstance(bc, x509.BasicConstraints) else None
    ku = _ext(cert, x509.KeyUsage)
    key_usage: list[str] = []
    if isinstance(ku, x509.KeyUsage):
        key_usage = [label for attr, label in _KU_NAMES if getattr(ku, attr)]
        if ku.key_agreement:  # the two bits are only defined (and readable) with it
            key_usage += ["encipherOnly"] if ku.encipher_only else []
            key_usage += ["decipherOnly"] if ku.decipher_only else []
    eku = _ext(cert, x509.ExtendedKeyUsage)
    eku_names = (
        tuple(_EKU_NAMES.get(o, o.dotted_string) for o in eku)
        if isinstance(eku, x509.ExtendedKeyUsage)
        else ()
    )
    san = _ext(cert, x509.SubjectAlternativeName)
    dns: list[str] = []
    ips: list[str] = []
    uris: list[str] = []
    if isinstance(san, x509.SubjectAlternativeName):
        dns = san.get_values_for_type(x509.DNSName)
        ips = [str(a) for a in san.get_values_for_type(x509.IPAddress)]
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    ski = _ext(cert, x509.SubjectKeyIdentifier)
    aki = _ext(cert, x509.AuthorityKeyIdentifier)
    spiffe_id: str | None = None
    problem: str | None = None
    if not is_ca:
        try:
            spiffe_id = spiffe_id_of_svid(cert).uri
        except CaError as exc:
            problem = str(exc)
    if now > cert.not_valid_after_utc:
        status = "expired"
    elif now < cert.not_valid_before_utc:
        status = "not yet valid"
    else:
        status = "valid"
    return CertificateReport(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        serial=cert.serial_number,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        status=status,
        key_type=describe_public_key(cert.public_key()),
        is_ca=is_ca,
        path_length=path_length,
        self_signed=is_self_signed(cert),
        spiffe_id=spiffe_id,
        svid_problem=problem,
        dns_names=tuple(dns),
        ip_addresses=tuple(ips),
        uris=tuple(uris),
        key_usage=tuple(key_usage),
        extended_key_usage=eku_names,
        subject_key_id=ski.digest.hex() if isinstance(ski, x509.SubjectKeyIdentifier) else None,
        authority_key_id=(
            aki.key_identifier.hex()
            if isinstance(aki, x509.AuthorityKeyIdentifier) and aki.key_identifier
            else None
        ),
        fingerprint_sha256=fingerprint_sha256(cert),
    )


def _name(cert: x509.Certificate) -> str:
    subject = cert.subject.rfc4514_string()
    if subject:
        return subject
    san = _ext(cert, x509.SubjectAlternativeName)
    if isinstance(san, x509.SubjectAlternativeName):
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        if uris:
            return uris[0]
    return "<empty subject>"


def _ca_status(cert: x509.Certificate, bundle: TrustBundle, now: datetime) -> ChainStatus:
    n = len(bundle)
    expired = ""
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        expired = " but is outside its validity period"
    if cert in bundle:
        return ChainStatus(
            verified=not expired,
            reason=f"is one of the {n} root(s) of the trust bundle{expired}",
            error="CertificateExpired" if expired else None,
            chain=(_name(cert),),
            bundle_roots=n,
        )
    for root in bundle:
        try:
            cert.verify_directly_issued_by(root)
        except (InvalidSignature, ValueError, TypeError):
            continue
        return ChainStatus(
            verified=not expired,
            reason=f"CA certificate signed by bundle root {_name(root)!r}{expired}",
            error="CertificateExpired" if expired else None,
            chain=(_name(cert), _name(root)),
            bundle_roots=n,
        )
    return ChainStatus(
        verified=False,
        reason=f"CA certificate not signed by any of the {n} root(s) of the trust bundle",
        error="UnknownRoot",
        chain=(),
        bundle_roots=n,
    )


def _leaf_status(
    certs: list[x509.Certificate], report: CertificateReport, bundle: TrustBundle, now: datetime
) -> ChainStatus:
    leaf, intermediates = certs[0], certs[1:]
    n = len(bundle)
    server_name: x509.DNSName | x509.IPAddress | None = None
    usage = "client"
    if "clientAuth" not in report.extended_key_usage and "serverAuth" in report.extended_key_usage:
        usage = "server"
        san = _ext(leaf, x509.SubjectAlternativeName)
        if isinstance(san, x509.SubjectAlternativeName):
            names = san.get_values_for_type(x509.DNSName)
            ips = san.get_values_for_type(x509.IPAddress)
            if names:
                first = names[0]  # a wildcard is checked with a name it covers
                server_name = x509.DNSName("probe" + first[1:] if first[:2] == "*." else first)
            elif ips:
                server_name = x509.IPAddress(ips[0])
    try:
        if report.spiffe_id is not None:
            tds = bundle.trust_domains
            td = report.spiffe_id.removeprefix("spiffe://").split("/", 1)[0]
            if len(tds) == 1 and td not in tds:
                (expected,) = tds
                return ChainStatus(
                    verified=False,
                    reason=f"SPIFFE ID is in trust domain {td!r}, the bundle's is {expected!r}",
                    error="TrustDomainMismatch",
                    chain=(),
                    bundle_roots=n,
                )
        built = verify_chain(
            leaf,
            intermediates,
            bundle,
            now,
            usage="server" if usage == "server" else "client",
            server_name=server_name,
        )
    except SvidVerificationError as exc:
        return ChainStatus(
            verified=False, reason=str(exc), error=type(exc).__name__, chain=(), bundle_roots=n
        )
    what = f"verified as a TLS {usage} certificate"
    return ChainStatus(
        verified=True,
        reason=f"{what} against the trust bundle ({n} root(s))",
        error=None,
        chain=tuple(_name(c) for c in built),
        bundle_roots=n,
    )


def analyze_certificate(
    pem_bytes: bytes | str,
    trust_bundle_pem: TrustBundle | bytes | str | None = None,
    clock: Clock = utc_now,
) -> InspectionReport:
    """Structured report on every certificate in `pem_bytes` (first one = the subject).

    Raises:
        CertificateParseError: `pem_bytes` or the bundle hold no PEM certificate.
    """
    now = clock()
    certs = load_pem_certificates(pem_bytes, source="certificate")
    reports = tuple(_report(c, now) for c in certs)
    status: ChainStatus | None = None
    if trust_bundle_pem is not None:
        bundle = as_bundle(trust_bundle_pem)
        if reports[0].is_ca:
            status = _ca_status(certs[0], bundle, now)
        else:
            status = _leaf_status(certs, reports[0], bundle, now)
    return InspectionReport(checked_at=now, certificates=reports, chain=status)


def inspect_certificate(
    pem_bytes: bytes | str,
    trust_bundle_pem: TrustBundle | bytes | str | None = None,
    clock: Clock = utc_now,
) -> str:
    """`analyze_certificate(...)` rendered as text for people."""
    return analyze_certificate(pem_bytes, trust_bundle_pem, clock).render()
