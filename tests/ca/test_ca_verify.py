"""verify_svid: a good chain gives its SPIFFE ID; each failure has its own clear error."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ca import (
    CertificateAuthority,
    CertificateExpired,
    CertificateNotYetValid,
    CertificateParseError,
    ChainInvalid,
    InvalidSvid,
    ManualClock,
    SpiffeId,
    SvidVerificationError,
    TrustBundle,
    TrustDomainMismatch,
    UnknownRoot,
    verify_svid,
)
from ca.keys import generate_private_key
from tests.ca.ca_testkit import T0, WEB


def test_good_chain(ca: CertificateAuthority) -> None:
    svid = ca.issue_svid(WEB)
    assert verify_svid(svid.cert_chain_pem, ca.trust_bundle_pem(), T0) == SpiffeId.parse(WEB)
    assert verify_svid(svid.cert_chain_pem.decode(), ca.trust_bundle, T0).uri == WEB
    assert verify_svid(svid.cert_chain_pem, ca.trust_bundle_pem(), clock=ca.clock).uri == WEB


def test_expired_and_not_yet_valid(ca: CertificateAuthority) -> None:
    svid = ca.issue_svid(WEB, ttl=timedelta(hours=1))
    with pytest.raises(CertificateExpired, match=r"leaf.*expired at"):
        verify_svid(svid.cert_chain_pem, ca.trust_bundle_pem(), T0 + timedelta(hours=2))
    with pytest.raises(CertificateNotYetValid, match="not valid before"):
        verify_svid(svid.cert_chain_pem, ca.trust_bundle_pem(), T0 - timedelta(minutes=3))


def test_unknown_root(ca: CertificateAuthority, clock: ManualClock) -> None:
    stranger = CertificateAuthority.in_memory(clock=clock)
    svid = stranger.issue_svid(WEB)
    with pytest.raises(UnknownRoot, match="not one of the bundle's 1 root"):
        verify_svid(svid.cert_chain_pem, ca.trust_bundle_pem(), T0)


def test_wrong_trust_domain(ca: CertificateAuthority, clock: ManualClock) -> None:
    other = CertificateAuthority.in_memory("other.org", clock=clock)
    svid = other.issue_svid("spiffe://other.org/ns/a/sa/b")
    with pytest.raises(TrustDomainMismatch, match=r"expected 'cluster.local'"):
        verify_svid(svid.cert_chain_pem, ca.trust_bundle_pem(), T0)
    # explicit trust domain wins over the one the bundle names
    with pytest.raises(TrustDomainMismatch):
        verify_svid(svid.cert_chain_pem, other.trust_bundle_pem(), T0, trust_domain="x.org")
    assert verify_svid(svid.cert_chain_pem, other.trust_bundle_pem(), T0).trust_domain == (
        "other.org"
    )


def test_garbage_and_non_svid(ca: CertificateAuthority) -> None:
    with pytest.raises(InvalidSvid, match="no PEM certificate"):
        verify_svid(b"hello", ca.trust_bundle_pem(), T0)
    with pytest.raises(CertificateParseError):
        verify_svid(ca.issue_svid(WEB).cert_chain_pem, b"nope", T0)
    server = ca.issue_server_cert(["a.example"], with_spiffe_id=False)
    with pytest.raises(InvalidSvid, match="exactly one URI SAN"):
        verify_svid(server.cert_chain_pem, ca.trust_bundle_pem(), T0)
    # a CA certificate presented as a leaf
    with pytest.raises(InvalidSvid):
        verify_svid(ca.trust_bundle_pem(), ca.trust_bundle_pem(), T0)


def _hand_made_leaf(authority: CertificateAuthority, **overrides: object) -> bytes:
    """A leaf built by hand to break one rule at a time."""
    key = generate_private_key("ec")
    signer = authority.signer
    opts = {
        "uris": [WEB],
        "is_ca": False,
        "ku_critical": True,
        "cert_sign": False,
        "san_critical": True,
        "eku": [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH, x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH],
        "aki": True,
        **overrides,
    }
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(signer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(T0 - timedelta(minutes=1))
        .not_valid_after(T0 + timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=bool(opts["is_ca"]), path_length=None), True)
        .add_extension(
            x509.KeyUsage(
                True, False, False, False, False, bool(opts["cert_sign"]), False, False, False
            ),
            bool(opts["ku_critical"]),
        )
        .add_extension(x509.ExtendedKeyUsage(opts["eku"]), False)  # type: ignore[arg-type]
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in opts["uris"]]),  # type: ignore[attr-defined]
            bool(opts["san_critical"]),
        )
    )
    if opts["aki"]:
        b = b.add_extension(signer.authority_key_identifier, False)
    return b.sign(signer.private_key, signer.hash_algorithm).public_bytes(
        serialization.Encoding.PEM
    )


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        ({}, None, None),
        ({"uris": [WEB, "spiffe://cluster.local/x"]}, InvalidSvid, "exactly one URI SAN"),
        ({"uris": []}, InvalidSvid, "exactly one URI SAN"),
        ({"uris": ["https://x.example/y"]}, InvalidSvid, "not a valid SPIFFE ID"),
        ({"uris": ["spiffe://cluster.local"]}, InvalidSvid, "empty path"),
        ({"is_ca": True}, InvalidSvid, "CA=true"),
        ({"cert_sign": True}, InvalidSvid, "keyCertSign"),
        ({"ku_critical": False}, InvalidSvid, "not critical"),
        ({"san_critical": False}, InvalidSvid, "subject is empty"),
        ({"eku": [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]}, InvalidSvid, "clientAuth"),
        ({"aki": False}, ChainInvalid, "rejected"),
    ],
)
def test_each_leaf_rule(ca: CertificateAuthority, overrides, error, message) -> None:
    pem = _hand_made_leaf(ca, **overrides)
    if error is None:
        assert verify_svid(pem, ca.trust_bundle_pem(), T0).uri == WEB
        return
    with pytest.raises(error, match=message):
        verify_svid(pem, ca.trust_bundle_pem(), T0)


def test_errors_share_a_base(ca: CertificateAuthority) -> None:
    svid = ca.issue_svid(WEB, ttl=timedelta(minutes=1))
    with pytest.raises(SvidVerificationError):
        verify_svid(svid.cert_chain_pem, ca.trust_bundle_pem(), T0 + timedelta(days=1))
    assert len(TrustBundle.from_pem(ca.trust_bundle_pem())) == 1
