"""inspect_certificate / analyze_certificate: readable reports with chain verdicts."""

from __future__ import annotations

from datetime import timedelta

import pytest

from ca import (
    CertificateAuthority,
    CertificateParseError,
    ManualClock,
    analyze_certificate,
    inspect_certificate,
)
from tests.ca.ca_testkit import WEB


def test_svid_report(ca: CertificateAuthority) -> None:
    svid = ca.issue_svid(WEB)
    report = analyze_certificate(svid.cert_chain_pem, ca.trust_bundle_pem(), clock=ca.clock)
    leaf = report.first
    assert leaf.spiffe_id == WEB and leaf.svid_problem is None
    assert leaf.subject == "" and "pocketmesh" in leaf.issuer
    assert leaf.serial == svid.serial
    assert (leaf.not_before, leaf.not_after) == (svid.not_before, svid.not_after)
    assert leaf.status == "valid" and not leaf.is_ca and leaf.key_type == "EC P-256"
    assert leaf.key_usage == ("digitalSignature",)
    assert leaf.extended_key_usage == ("serverAuth", "clientAuth")
    assert report.chain is not None and report.chain.verified and report.chain.error is None
    assert report.chain.chain[0] == WEB and len(report.chain.chain) == 2

    text = inspect_certificate(svid.cert_chain_pem, ca.trust_bundle_pem(), clock=ca.clock)
    for needle in (
        "leaf X.509-SVID",
        f"SPIFFE ID:  {WEB}",
        "Subject:    (empty)",
        "Key:        EC P-256",
        "Is CA:      no",
        "valid, expires in 1d 0h",
        "Chain:        OK",
        leaf.serial_hex,
    ):
        assert needle in text, needle


def test_without_bundle(ca: CertificateAuthority) -> None:
    text = inspect_certificate(ca.issue_svid(WEB).cert_chain_pem, clock=ca.clock)
    assert "not checked (no trust bundle given)" in text


def test_expired_and_not_yet_valid(ca: CertificateAuthority, clock: ManualClock) -> None:
    svid = ca.issue_svid(WEB, ttl=timedelta(hours=1))
    clock.advance(timedelta(hours=3))
    report = analyze_certificate(svid.cert_chain_pem, ca.trust_bundle_pem(), clock=clock)
    assert report.first.status == "expired"
    assert report.chain is not None and not report.chain.verified
    assert report.chain.error == "CertificateExpired"
    assert "expired at" in report.chain.reason
    assert "EXPIRED 2h 0m ago" in report.render()
    clock.set(svid.not_before - timedelta(minutes=5))
    assert analyze_certificate(svid.cert_chain_pem, clock=clock).first.status == "not yet valid"


def test_unknown_root_and_wrong_trust_domain(ca: CertificateAuthority, clock) -> None:
    stranger = CertificateAuthority.in_memory(clock=clock)
    report = analyze_certificate(
        stranger.issue_svid(WEB).cert_chain_pem, ca.trust_bundle_pem(), clock=clock
    )
    assert report.chain is not None and report.chain.error == "UnknownRoot"
    assert "FAILED (UnknownRoot)" in report.render()
    other = CertificateAuthority.in_memory("other.org", clock=clock)
    report = analyze_certificate(
        other.issue_svid("spiffe://other.org/ns/a/sa/b").cert_chain_pem,
        ca.trust_bundle_pem(),
        clock=clock,
    )
    assert report.chain is not None and report.chain.error == "TrustDomainMismatch"


def test_root_report(ca: CertificateAuthority) -> None:
    report = analyze_certificate(ca.trust_bundle_pem(), ca.trust_bundle_pem(), clock=ca.clock)
    root = report.first
    assert root.is_ca and root.self_signed and root.spiffe_id is None
    assert root.svid_problem is None
    assert root.key_usage == ("keyCertSign", "cRLSign")
    assert root.uris == ("spiffe://cluster.local",)
    assert report.chain is not None and report.chain.verified
    assert "root CA certificate (self-signed)" in report.render()
    assert "is one of the 1 root(s)" in report.render()
    stranger = CertificateAuthority.in_memory(clock=ca.clock)
    bad = analyze_certificate(ca.trust_bundle_pem(), stranger.trust_bundle_pem(), clock=ca.clock)
    assert bad.chain is not None and bad.chain.error == "UnknownRoot"


def test_server_cert_report(ca: CertificateAuthority) -> None:
    cert = ca.issue_server_cert(["*.mesh.example", "xds.local"], ["10.0.0.1"], with_spiffe_id=False)
    report = analyze_certificate(cert.cert_chain_pem, ca.trust_bundle_pem(), clock=ca.clock)
    first = report.first
    assert first.spiffe_id is None and first.svid_problem is not None
    assert first.dns_names == ("*.mesh.example", "xds.local")
    assert first.ip_addresses == ("10.0.0.1",)
    assert report.chain is not None and report.chain.verified
    assert "TLS server certificate" in report.chain.reason
    text = report.render()
    assert "not an X.509-SVID" in text and "DNS:*.mesh.example" in text and "IP:10.0.0.1" in text


def test_rsa_and_multi_cert_input(clock: ManualClock) -> None:
    rsa_ca = CertificateAuthority.in_memory(clock=clock, key_type="rsa")
    svid = rsa_ca.issue_svid(WEB, key_type="rsa")
    report = analyze_certificate(svid.cert_chain_pem + rsa_ca.trust_bundle_pem(), clock=clock)
    assert [c.key_type for c in report.certificates] == ["RSA 2048", "RSA 2048"]
    assert "Certificate 2 of 2: root CA certificate" in report.render()
    assert report.first.key_usage == ("digitalSignature", "keyEncipherment")


def test_garbage() -> None:
    with pytest.raises(CertificateParseError):
        inspect_certificate(b"hello")
