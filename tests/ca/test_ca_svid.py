"""Issued X.509-SVIDs meet every MUST of the X509-SVID standard, and verify."""

from __future__ import annotations

import ipaddress
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID
from cryptography.x509.verification import PolicyBuilder, Store
from spiffe import X509Svid

from ca import (
    CertificateAuthority,
    InvalidKeyType,
    InvalidSpiffeId,
    InvalidTtl,
    IssuanceError,
    ManualClock,
    SpiffeId,
)
from ca.certificates import load_pem_certificates
from tests.ca.ca_testkit import T0, WEB


def _verify(ca: CertificateAuthority, chain_pem: bytes, when=None) -> list[x509.Certificate]:
    certs = load_pem_certificates(chain_pem)
    verifier = (
        PolicyBuilder()
        .store(Store(list(ca.trust_bundle.roots)))
        .time(when or ca.clock())
        .build_client_verifier()
    )
    return verifier.verify(certs[0], certs[1:]).chain


def test_svid_parses_with_spiffe_library_and_verifies(ca: CertificateAuthority) -> None:
    svid = ca.issue_svid(WEB)
    parsed = X509Svid.parse(svid.cert_chain_pem, svid.private_key_pem)
    assert str(parsed.spiffe_id) == WEB
    assert parsed.leaf.serial_number == svid.serial
    # the private key matches the leaf
    assert parsed.private_key.public_key() == parsed.leaf.public_key()
    chain = _verify(ca, svid.cert_chain_pem)
    assert chain[-1] == ca.signing_root
    assert ca.verify(svid.cert_chain_pem) == SpiffeId.parse(WEB)


def test_identity_forms(ca: CertificateAuthority) -> None:
    a = ca.issue_svid(("cluster.local", "default", "web"))
    b = ca.issue_svid(SpiffeId.for_workload("cluster.local", "default", "web"))
    c = ca.issue_svid(WEB)
    assert a.spiffe_id == b.spiffe_id == c.spiffe_id == SpiffeId.parse(WEB)
    assert a.spiffe_id.namespace == "default"
    with pytest.raises(TypeError):
        ca.issue_svid(["cluster.local", "default", "web"])  # type: ignore[arg-type]


def test_every_x509_svid_must(ca: CertificateAuthority) -> None:
    svid = ca.issue_svid(WEB)
    cert = svid.certificate
    exts = cert.extensions

    # exactly one URI SAN, the SPIFFE ID; empty subject => SAN critical
    san = exts.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [WEB]
    assert len(list(san.value)) == 1
    assert len(cert.subject) == 0
    assert san.critical is True

    # CA=false, basic constraints critical
    bc = exts.get_extension_for_oid(ExtensionOID.BASIC_CONSTRAINTS)
    assert bc.critical and bc.value.ca is False and bc.value.path_length is None

    # key usage critical: digitalSignature only (EC), never keyCertSign/cRLSign
    ku = exts.get_extension_for_oid(ExtensionOID.KEY_USAGE)
    assert ku.critical
    assert ku.value.digital_signature
    assert not ku.value.key_cert_sign and not ku.value.crl_sign
    assert not ku.value.key_encipherment  # EC key: no key encipherment

    # EKU serverAuth + clientAuth
    eku = exts.get_extension_for_oid(ExtensionOID.EXTENDED_KEY_USAGE).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}

    # SKI of the leaf key, AKI = the signer's SKI
    ski = exts.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())
    aki = exts.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    root_ski = ca.signing_root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert aki.key_identifier == root_ski.value.digest

    # serial: positive, at most 20 bytes, random
    assert 0 < cert.serial_number < 2**159
    assert ca.issue_svid(WEB).serial != svid.serial

    # issuer is the root; EC P-256 leaf key; PKCS#8 key PEM
    assert cert.issuer == ca.signing_root.subject
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"
    assert svid.private_key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert cert.version == x509.Version.v3


def test_validity_is_backdated_two_minutes_and_ttl_long(
    ca: CertificateAuthority, clock: ManualClock
) -> None:
    svid = ca.issue_svid(WEB, ttl=timedelta(hours=1))
    assert svid.not_before == T0 - timedelta(minutes=2) == svid.certificate.not_valid_before_utc
    assert svid.not_after == T0 + timedelta(hours=1) == svid.certificate.not_valid_after_utc
    # verifiable one minute "before" issuance (a peer whose clock is behind)
    _verify(ca, svid.cert_chain_pem, T0 - timedelta(minutes=1))


def test_sub_second_clock_is_truncated_consistently(ca: CertificateAuthority, clock) -> None:
    clock.advance(timedelta(microseconds=700_000))
    svid = ca.issue_svid(WEB)
    assert svid.not_after == svid.certificate.not_valid_after_utc
    assert svid.not_before == svid.certificate.not_valid_before_utc


def test_not_after_capped_at_issuer_not_after(clock: ManualClock, mid_rng) -> None:
    short = CertificateAuthority.in_memory(
        clock=clock, rng=mid_rng, root_validity=timedelta(hours=3)
    )
    svid = short.issue_svid(WEB, ttl=timedelta(hours=24))
    assert svid.not_after == short.signing_root.not_valid_after_utc
    assert svid.not_after == T0 + timedelta(hours=3)
    # renewal still at half of the (shortened) life
    assert svid.renew_at == T0 + timedelta(hours=1, minutes=30)
    clock.advance(timedelta(hours=3, seconds=1))
    with pytest.raises(IssuanceError, match="expired"):
        short.issue_svid(WEB)


def test_ttl_bounds(ca: CertificateAuthority) -> None:
    ok = ca.issue_svid(WEB, ttl=timedelta(minutes=1))
    assert ok.not_after - ok.not_before == timedelta(minutes=3)  # 1 min + 2 min backdate
    with pytest.raises(InvalidTtl, match="one minute"):
        ca.issue_svid(WEB, ttl=timedelta(seconds=59))
    with pytest.raises(InvalidTtl):
        ca.issue_svid(WEB, ttl=timedelta(days=91))
    with pytest.raises(InvalidTtl):
        ca.issue_svid(WEB, ttl=3600)  # type: ignore[arg-type]


def test_refuses_foreign_trust_domain_and_empty_path(ca: CertificateAuthority) -> None:
    with pytest.raises(IssuanceError, match=r"other.org"):
        ca.issue_svid("spiffe://other.org/ns/default/sa/web")
    with pytest.raises(IssuanceError, match="no path"):
        ca.issue_svid("spiffe://cluster.local")
    with pytest.raises(InvalidSpiffeId):
        ca.issue_svid("spiffe://cluster.local/ns//sa/web")


def test_chain_from_self_signed_root_is_the_leaf_alone(ca: CertificateAuthority) -> None:
    svid = ca.issue_svid(WEB)
    certs = load_pem_certificates(svid.cert_chain_pem)
    assert certs == [svid.certificate]
    assert svid.leaf_pem == svid.cert_chain_pem
    assert ca.signing_root not in certs


def test_renew_at_is_half_life_with_ten_percent_jitter(clock: ManualClock) -> None:
    life = timedelta(hours=24)
    for u, expected in [(0.0, 0.45), (0.5, 0.5), (1.0, 0.55)]:
        ca = CertificateAuthority.in_memory(clock=clock, rng=lambda u=u: u)
        svid = ca.issue_svid(WEB, ttl=life)
        assert svid.renew_at == T0 + life * expected
    import random

    seeded = CertificateAuthority.in_memory(clock=clock, rng=random.Random(7).random)
    for _ in range(50):
        at = seeded.issue_svid(WEB, ttl=life).renew_at
        assert T0 + life * 0.45 <= at <= T0 + life * 0.55


def test_rsa_leaf_and_rsa_root(clock: ManualClock, mid_rng) -> None:
    ca = CertificateAuthority.in_memory(clock=clock, rng=mid_rng, key_type="rsa")
    assert isinstance(ca.signing_root.public_key(), rsa.RSAPublicKey)
    svid = ca.issue_svid(WEB, key_type="rsa")
    cert = svid.certificate
    assert isinstance(cert.public_key(), rsa.RSAPublicKey)
    assert cert.public_key().key_size == 2048
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and ku.value.key_encipherment
    assert not ku.value.key_cert_sign and not ku.value.crl_sign
    X509Svid.parse(svid.cert_chain_pem, svid.private_key_pem)
    _verify(ca, svid.cert_chain_pem)
    with pytest.raises(InvalidKeyType):
        CertificateAuthority.in_memory(key_type="rsa", rsa_bits=1024)
    with pytest.raises(InvalidKeyType):
        ca.issue_svid(WEB, key_type="ed25519")  # type: ignore[arg-type]


def test_server_certificate(ca: CertificateAuthority) -> None:
    cert = ca.issue_server_cert(["istiod.istio-system.svc", "localhost"], ["127.0.0.1", "::1"])
    leaf = cert.certificate
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert not san.critical  # subject is not empty
    assert san.value.get_values_for_type(x509.DNSName) == ["istiod.istio-system.svc", "localhost"]
    assert san.value.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://cluster.local/ns/istio-system/sa/istiod"
    ]
    assert cert.spiffe_id == ca.control_plane_id
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert "CN=istiod.istio-system.svc" in leaf.subject.rfc4514_string()
    store = Store(list(ca.trust_bundle.roots))
    for name in (x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))):
        PolicyBuilder().store(store).time(ca.clock()).build_server_verifier(name).verify(leaf, [])
    # it is also a valid X.509-SVID for the control plane
    assert str(X509Svid.parse(cert.cert_chain_pem, cert.private_key_pem).spiffe_id) == (
        "spiffe://cluster.local/ns/istio-system/sa/istiod"
    )


def test_server_certificate_without_spiffe_id(ca: CertificateAuthority) -> None:
    cert = ca.issue_server_cert(["xds.example.com"], with_spiffe_id=False)
    eku = cert.certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert cert.spiffe_id is None and cert.ip_addresses == ()


@pytest.mark.parametrize(
    ("dns", "ips"),
    [((), ()), (("bad name",), ()), (("-x.com",), ()), ((), ("300.1.1.1",)), ("host", ())],
)
def test_server_certificate_rejects_bad_names(ca: CertificateAuthority, dns, ips) -> None:
    with pytest.raises(IssuanceError):
        ca.issue_server_cert(dns, ips)


def test_issued_key_is_pkcs8_and_matches(ca: CertificateAuthority) -> None:
    svid = ca.issue_svid(WEB)
    key = serialization.load_pem_private_key(svid.private_key_pem, None)
    assert key.public_key() == svid.certificate.public_key()
