"""Making CA certificates: self-signed roots, same-key re-issues, intermediates.

Roots are what Istio's self-signed Citadel makes: 10 years, CA=true, key usage
keyCertSign + cRLSign (critical), a Subject Key Identifier, subject
``O=pocketmesh, OU=key-<key id>, CN=pocketmesh root CA <trust-domain>``. They also carry the trust
domain's own SPIFFE ID (``spiffe://<td>``) as a URI SAN, which the X509-SVID standard
allows on signing certificates; `load_ca_dir` reads the trust domain back from it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from cryptography import x509
from cryptography.x509.oid import NameOID

from ca.certificates import uri_sans
from ca.errors import InvalidCaCertificate
from ca.keys import PrivateKey, signature_hash
from ca.signer import Signer
from ca.spiffe_id import SpiffeId

__all__ = [
    "CA_BACKDATE",
    "ORGANIZATION",
    "ROOT_VALIDITY",
    "create_intermediate_certificate",
    "create_root_certificate",
    "reissue_root_certificate",
    "root_subject",
    "trust_domain_of",
]

ORGANIZATION = "pocketmesh"
ROOT_VALIDITY = timedelta(days=3650)
CA_BACKDATE = timedelta(minutes=2)
_CN_MAX = 64  # X.520 ub-common-name

_CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def root_subject(trust_domain: str, key: PrivateKey) -> x509.Name:
    """``O=pocketmesh, OU=key-<12 hex of the SKI>, CN=pocketmesh root CA <td>``.

    The CN is cut at 64 characters. The OU makes roots of successive rotations
    distinguishable by name (in the bundle and to TLS stacks that look issuers up by
    subject); a same-key re-issue keeps the same subject.
    """
    cn = f"pocketmesh root CA {trust_domain}"[:_CN_MAX]
    key_id = x509.SubjectKeyIdentifier.from_public_key(key.public_key()).digest.hex()
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"key-{key_id[:12]}"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _ca_builder(
    subject: x509.Name,
    issuer: x509.Name,
    key: PrivateKey,
    *,
    now: datetime,
    validity: timedelta,
    path_length: int | None,
    trust_domain: str | None,
) -> x509.CertificateBuilder:
    if validity <= timedelta(0):
        raise InvalidCaCertificate(f"CA validity must be positive, not {validity}")
    public_key = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CA_BACKDATE)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_CA_KEY_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if trust_domain is not None:
        td_id = SpiffeId.for_trust_domain(trust_domain)
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(td_id.uri)]),
            critical=False,
        )
    return builder


def create_root_certificate(
    key: PrivateKey,
    trust_domain: str,
    *,
    now: datetime,
    validity: timedelta = ROOT_VALIDITY,
    subject: x509.Name | None = None,
) -> x509.Certificate:
    """A self-signed root for `trust_domain`, valid from `now` - 2 min for `validity`."""
    name = subject or root_subject(trust_domain, key)
    builder = _ca_builder(
        name,
        name,
        key,
        now=now,
        validity=validity,
        path_length=None,
        trust_domain=trust_domain,
    )
    return builder.sign(key, signature_hash(key))


def reissue_root_certificate(
    old: x509.Certificate,
    key: PrivateKey,
    *,
    now: datetime,
    validity: timedelta = ROOT_VALIDITY,
) -> x509.Certificate:
    """A new self-signed certificate for the same key and subject (Istio's root re-issue).

    Subject, key and so Subject Key Identifier stay the same, so every certificate the old
    root signed still chains to — and verifies against — the new one.
    """
    if old.public_key() != key.public_key():
        raise InvalidCaCertificate("re-issue needs the root's own private key")
    if old.issuer != old.subject:
        raise InvalidCaCertificate("only a self-signed root can be re-issued")
    trust_domain = trust_domain_of(old)
    builder = _ca_builder(
        old.subject,
        old.subject,
        key,
        now=now,
        validity=validity,
        path_length=None,
        trust_domain=trust_domain,
    )
    return builder.sign(key, signature_hash(key))


def create_intermediate_certificate(
    issuer: Signer,
    key: PrivateKey,
    subject: x509.Name,
    *,
    now: datetime,
    validity: timedelta,
    path_length: int | None = 0,
    trust_domain: str | None = None,
) -> x509.Certificate:
    """An intermediate CA certificate for `key`, signed by `issuer`.

    Its NotAfter is capped at the issuer's. Used to build Istio ``cacerts`` setups (an
    intermediate per cluster under a shared root) in tests and tooling.
    """
    cap = issuer.not_after - now
    builder = _ca_builder(
        subject,
        issuer.subject,
        key,
        now=now,
        validity=min(validity, cap),
        path_length=path_length,
        trust_domain=trust_domain,
    ).add_extension(issuer.authority_key_identifier, critical=False)
    return builder.sign(issuer.private_key, issuer.hash_algorithm)


def trust_domain_of(cert: x509.Certificate) -> str | None:
    """The trust domain named by a CA certificate's ``spiffe://<td>`` URI SAN, if any."""
    for uri in uri_sans(cert):
        if uri.startswith("spiffe://"):
            try:
                return SpiffeId.parse(uri).trust_domain
            except ValueError:
                continue
    return None
