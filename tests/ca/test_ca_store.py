"""The CA directory: init, load, both layouts, modes, refusal, persisted rotation."""

from __future__ import annotations

import json
import stat
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import PolicyBuilder, Store
from spiffe import X509Svid

from ca import (
    CaDirError,
    CaDirExists,
    CaDirNotFound,
    InvalidSpiffeId,
    ManualClock,
    RootState,
    Signer,
    detect_layout,
    ensure_ca_dir,
    init_ca_dir,
    load_ca_dir,
    verify_svid,
)
from ca.certificates import load_pem_certificates
from ca.keys import generate_private_key, private_key_to_pem
from ca.roots import create_intermediate_certificate, create_root_certificate
from tests.ca.ca_testkit import T0, WEB

DAY = timedelta(days=1)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_writes_root_with_modes(tmp_path: Path, clock: ManualClock) -> None:
    d = tmp_path / "ca"
    ca = init_ca_dir(d, clock=clock)
    assert _mode(d) == 0o700
    assert _mode(d / "root-key.pem") == 0o600
    assert sorted(p.name for p in d.iterdir()) == ["root-cert.pem", "root-key.pem"]
    root = load_pem_certificates((d / "root-cert.pem").read_bytes())[0]
    assert root == ca.signing_root
    key = serialization.load_pem_private_key((d / "root-key.pem").read_bytes(), None)
    assert key.public_key() == root.public_key()
    # the root itself
    assert root.not_valid_after_utc - root.not_valid_before_utc == timedelta(days=3650, minutes=2)
    bc = root.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    ku = root.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    assert not ku.value.digital_signature
    root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert root.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "pocketmesh"
    cn = root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert "cluster.local" in cn
    assert root.public_key().curve.name == "secp256r1"


def test_existing_dir_is_tightened(tmp_path: Path) -> None:
    d = tmp_path / "ca"
    d.mkdir(mode=0o755)
    d.chmod(0o755)
    init_ca_dir(d)
    assert _mode(d) == 0o700


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    d = tmp_path / "ca"
    init_ca_dir(d)
    before = (d / "root-key.pem").read_bytes()
    with pytest.raises(CaDirExists, match="refusing to overwrite"):
        init_ca_dir(d)
    assert (d / "root-key.pem").read_bytes() == before
    other = tmp_path / "other"
    other.mkdir()
    (other / "ca-key.pem").write_bytes(b"x")
    with pytest.raises(CaDirExists):
        init_ca_dir(other)


def test_init_rejects_bad_trust_domain_before_writing(tmp_path: Path) -> None:
    with pytest.raises(InvalidSpiffeId):
        init_ca_dir(tmp_path / "ca", trust_domain="Bad Domain")
    assert not (tmp_path / "ca").exists()


def test_load_round_trip_and_trust_domain(tmp_path: Path, clock: ManualClock) -> None:
    d = tmp_path / "ca"
    first = init_ca_dir(d, trust_domain="example.org", clock=clock)
    svid = first.issue_svid("spiffe://example.org/ns/a/sa/b")
    again = load_ca_dir(d, clock=clock)
    assert again.trust_domain == "example.org"
    assert again.signing_root == first.signing_root
    assert again.verify(svid.cert_chain_pem).uri == "spiffe://example.org/ns/a/sa/b"
    with pytest.raises(CaDirError, match=r"example.org"):
        load_ca_dir(d, trust_domain="cluster.local")


def test_rsa_root(tmp_path: Path) -> None:
    ca = init_ca_dir(tmp_path / "ca", key_type="rsa", rsa_bits=3072)
    assert ca.signing_root.public_key().key_size == 3072
    svid = ca.issue_svid(WEB)  # EC leaf under an RSA root
    assert ca.verify(svid.cert_chain_pem).uri == WEB
    assert load_ca_dir(tmp_path / "ca").signing_root == ca.signing_root


def test_ensure_loads_or_creates(tmp_path: Path) -> None:
    d = tmp_path / "ca"
    a = ensure_ca_dir(d)
    b = ensure_ca_dir(d)
    assert a.signing_root == b.signing_root
    with pytest.raises(CaDirError):
        ensure_ca_dir(d, trust_domain="other.org")


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(CaDirNotFound):
        load_ca_dir(tmp_path)
    d = tmp_path / "ca"
    init_ca_dir(d)
    (d / "root-cert.pem").unlink()
    with pytest.raises(CaDirError, match=r"root-cert.pem is missing"):
        load_ca_dir(d)
    (d / "root-cert.pem").write_bytes(b"not a cert")
    with pytest.raises(CaDirError, match="no PEM certificate"):
        load_ca_dir(d)
    other = init_ca_dir(tmp_path / "other")
    (d / "root-cert.pem").write_bytes(other.trust_bundle_pem())
    with pytest.raises(CaDirError, match="does not match"):
        load_ca_dir(d)


# -- Istio cacerts --------------------------------------------------------------------


def _external_root_and_intermediate(now, *, td: str | None = "cluster.local"):
    root_key = generate_private_key("ec")
    root = create_root_certificate(root_key, "cluster.local", now=now, validity=3650 * DAY)
    root_signer = Signer(root, root_key)
    inter_key = generate_private_key("ec")
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pocketmesh"),
            x509.NameAttribute(NameOID.COMMON_NAME, "cluster-1 intermediate"),
        ]
    )
    inter = create_intermediate_certificate(
        root_signer, inter_key, subject, now=now, validity=365 * DAY, trust_domain=td
    )
    return root, inter, inter_key


def _pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _write_cacerts(d: Path, root, inter, inter_key, *, chain: bytes | None) -> None:
    d.mkdir()
    (d / "ca-cert.pem").write_bytes(_pem(inter))
    (d / "ca-key.pem").write_bytes(private_key_to_pem(inter_key))
    (d / "root-cert.pem").write_bytes(_pem(root))
    if chain is not None:
        (d / "cert-chain.pem").write_bytes(chain)


@pytest.mark.parametrize("chain", ["inter+root", "inter", None])
def test_istio_cacerts_plug_in(tmp_path: Path, clock: ManualClock, chain) -> None:
    root, inter, inter_key = _external_root_and_intermediate(clock())
    chain_pem = {"inter+root": _pem(inter, root), "inter": _pem(inter), None: None}[chain]
    d = tmp_path / "cacerts"
    _write_cacerts(d, root, inter, inter_key, chain=chain_pem)
    assert detect_layout(d) == "cacerts"
    ca = load_ca_dir(d, clock=clock)
    assert ca.trust_domain == "cluster.local"
    assert ca.signing_root == root and ca.signing_certificate == inter
    assert ca.trust_bundle_pem() == _pem(root)

    svid = ca.issue_svid(WEB)
    certs = load_pem_certificates(svid.cert_chain_pem)
    assert certs == [svid.certificate, inter]  # leaf + intermediate, never the root
    assert svid.certificate.issuer == inter.subject
    assert svid.not_after <= inter.not_valid_after_utc
    X509Svid.parse(svid.cert_chain_pem, svid.private_key_pem)
    verified = (
        PolicyBuilder()
        .store(Store([root]))
        .time(clock())
        .build_client_verifier()
        .verify(certs[0], certs[1:])
    )
    assert verified.chain == [svid.certificate, inter, root]
    assert verify_svid(svid.cert_chain_pem, _pem(root), clock()).uri == WEB
    assert load_ca_dir(d, clock=clock).signing_certificate == inter


def test_cacerts_cannot_rotate_and_caps_at_intermediate(tmp_path: Path, clock) -> None:
    from ca import RotationError

    root, inter, inter_key = _external_root_and_intermediate(clock())
    d = tmp_path / "cacerts"
    _write_cacerts(d, root, inter, inter_key, chain=_pem(inter, root))
    ca = load_ca_dir(d, clock=clock)
    with pytest.raises(RotationError, match="cacerts"):
        ca.begin_root_rotation()
    with pytest.raises(RotationError, match="cacerts"):
        ca.reissue_root_same_key()
    clock.advance(365 * DAY - timedelta(hours=1))
    svid = ca.issue_svid(WEB, ttl=DAY)
    assert svid.not_after == inter.not_valid_after_utc
    assert not (d / "rotation.json").exists()  # a plugged-in CA writes nothing


def test_cacerts_without_trust_domain_uri(tmp_path: Path, clock) -> None:
    root, inter, inter_key = _external_root_and_intermediate(clock(), td=None)
    d = tmp_path / "cacerts"
    _write_cacerts(d, root, inter, inter_key, chain=None)
    # the root still names cluster.local; asking for another domain is refused
    with pytest.raises(CaDirError, match=r"cluster.local"):
        load_ca_dir(d, trust_domain="mesh.example")


def test_cacerts_errors(tmp_path: Path, clock) -> None:
    root, inter, inter_key = _external_root_and_intermediate(clock())
    d = tmp_path / "partial"
    d.mkdir()
    (d / "ca-key.pem").write_bytes(private_key_to_pem(inter_key))
    with pytest.raises(CaDirError, match=r"ca-cert.pem is missing"):
        load_ca_dir(d)
    other_root, _, _ = _external_root_and_intermediate(clock())
    d2 = tmp_path / "wrong-root"
    _write_cacerts(d2, other_root, inter, inter_key, chain=None)
    with pytest.raises(CaDirError, match="not signed by any given root"):
        load_ca_dir(d2)
    d3 = tmp_path / "wrong-key"
    _write_cacerts(d3, root, inter, generate_private_key("ec"), chain=None)
    with pytest.raises(CaDirError, match="does not match"):
        load_ca_dir(d3)
    d4 = tmp_path / "leaf-as-ca"
    leaf = init_ca_dir(tmp_path / "x").issue_svid(WEB)
    d4.mkdir()
    (d4 / "ca-cert.pem").write_bytes(leaf.cert_chain_pem)
    (d4 / "ca-key.pem").write_bytes(leaf.private_key_pem)
    (d4 / "root-cert.pem").write_bytes(_pem(root))
    with pytest.raises(CaDirError, match="not a CA"):
        load_ca_dir(d4)


# -- rotation state survives a restart --------------------------------------------------


def test_rotation_state_persists(tmp_path: Path, clock: ManualClock) -> None:
    d = tmp_path / "ca"
    ca = init_ca_dir(d, clock=clock, min_overlap=timedelta(hours=1))
    old_root = ca.signing_root
    last_old = ca.issue_svid(WEB, ttl=DAY)
    state = json.loads((d / "rotation.json").read_text())
    assert state["roots"][0]["signed_until"] >= last_old.not_after.isoformat()
    for p in (d / "roots").glob("*-key.pem"):
        assert _mode(p) == 0o600

    pending = ca.begin_root_rotation()
    restarted = load_ca_dir(d, clock=clock, min_overlap=timedelta(hours=1))
    assert restarted.rotation.pending is not None
    assert restarted.rotation.pending.key_id == pending.key_id
    assert len(restarted.trust_bundle) == 2
    assert restarted.signing_root == old_root

    clock.advance(timedelta(hours=2))
    restarted.activate_new_root()
    assert load_pem_certificates((d / "root-cert.pem").read_bytes())[0] == (
        pending.signer.certificate
    )
    new_svid = restarted.issue_svid(WEB, ttl=DAY)

    third = load_ca_dir(d, clock=clock)
    assert third.signing_root == pending.signer.certificate
    retired = [e for e in third.rotation.entries if e.state is RootState.RETIRED]
    assert len(retired) == 1 and retired[0].signer.certificate == old_root
    # the last certificate the old root signed is covered even across restarts
    assert retired[0].signed_until is not None
    assert retired[0].signed_until >= last_old.not_after
    clock.set(last_old.not_after)
    assert third.prune() == ()
    assert third.verify(new_svid.cert_chain_pem).uri == WEB

    clock.set(retired[0].signed_until + timedelta(seconds=1))
    assert len(third.prune()) == 1
    fourth = load_ca_dir(d, clock=clock)
    assert list(fourth.trust_bundle) == [pending.signer.certificate]
    assert sorted(p.name for p in (d / "roots").iterdir()) == [
        f"{pending.key_id}-cert.pem",
        f"{pending.key_id}-key.pem",
    ]


def test_reissue_persists(tmp_path: Path, clock: ManualClock) -> None:
    d = tmp_path / "ca"
    ca = init_ca_dir(d, clock=clock)
    clock.advance(DAY)
    new_root = ca.reissue_root_same_key()
    assert load_ca_dir(d, clock=clock).signing_root == new_root
    assert load_pem_certificates((d / "root-cert.pem").read_bytes()) == [new_root]


def test_corrupt_rotation_state(tmp_path: Path) -> None:
    d = tmp_path / "ca"
    init_ca_dir(d).issue_svid(WEB)
    (d / "rotation.json").write_text("{nope")
    with pytest.raises(CaDirError, match="not valid JSON"):
        load_ca_dir(d)
    (d / "rotation.json").write_text(json.dumps({"format": 1, "roots": [{"key_id": "ab"}]}))
    with pytest.raises(CaDirError, match="missing"):
        load_ca_dir(d)


def test_fixed_start_time_is_respected(tmp_path: Path, clock: ManualClock) -> None:
    ca = init_ca_dir(tmp_path / "ca", clock=clock)
    assert ca.signing_root.not_valid_before_utc == T0 - timedelta(minutes=2)
