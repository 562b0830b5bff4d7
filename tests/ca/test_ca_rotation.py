"""Root rotation with no failed requests, same-key re-issue, renewal times."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509

from ca import (
    CertificateAuthority,
    ManualClock,
    RootRotation,
    RootState,
    RotationError,
    TrustBundle,
    UnknownRoot,
    renewal_time,
    verify_svid,
)
from ca.rotation import root_rotation_due
from tests.ca.ca_testkit import T0, WEB

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def _ok(pem: bytes, bundle: bytes, when) -> bool:
    try:
        verify_svid(pem, bundle, when)
    except Exception:
        return False
    return True


@pytest.fixture
def rca(clock: ManualClock, mid_rng) -> CertificateAuthority:
    return CertificateAuthority.in_memory(clock=clock, rng=mid_rng, min_overlap=HOUR)


def test_rotation_timeline(rca: CertificateAuthority, clock: ManualClock) -> None:
    old_root = rca.signing_root
    before = rca.issue_svid(WEB, ttl=DAY)  # T0, expires T0+1d

    # 1. a new root joins the bundle before it signs anything
    clock.advance(HOUR)
    pending = rca.begin_root_rotation()
    assert pending.state is RootState.PENDING
    assert len(rca.trust_bundle) == 2
    assert pending.signer.certificate in rca.trust_bundle
    assert rca.signing_root == old_root
    during = rca.issue_svid(WEB, ttl=DAY)  # still old root; expires T0+1h+1d
    assert during.issuer_key_id == rca.rotation.active.key_id != pending.key_id
    with pytest.raises(RotationError, match="already in progress"):
        rca.begin_root_rotation()

    # 2. activation waits for the overlap
    clock.advance(timedelta(minutes=30))
    assert not rca.can_activate_new_root()
    assert rca.rotation.overlap_remaining(clock()) == timedelta(minutes=30)
    with pytest.raises(RotationError, match="minimum overlap"):
        rca.activate_new_root()
    clock.advance(timedelta(minutes=30))
    assert rca.can_activate_new_root()
    active = rca.activate_new_root()
    assert active.key_id == pending.key_id and rca.signing_root == pending.signer.certificate
    states = {e.key_id: e.state for e in rca.rotation.entries}
    assert sorted(states.values(), key=lambda s: s.value) == [RootState.ACTIVE, RootState.RETIRED]
    after = rca.issue_svid(WEB, ttl=DAY)  # new root; T0+2h .. T0+2h+1d
    assert after.issuer_key_id == pending.key_id
    assert after.certificate.issuer == pending.signer.certificate.subject

    # both generations verify against the bundle while it holds both roots
    bundle = rca.trust_bundle_pem()
    for svid in (before, during, after):
        assert _ok(svid.cert_chain_pem, bundle, clock())
    # a proxy still holding only the old root cannot verify new certs: hence the overlap
    with pytest.raises(UnknownRoot):
        verify_svid(after.cert_chain_pem, TrustBundle([old_root]), clock())

    # 3. prune keeps the old root until its last certificate (`during`) has expired
    assert rca.prune() == ()
    clock.set(during.not_after)
    assert rca.prune() == ()
    assert len(rca.trust_bundle) == 2
    assert _ok(during.cert_chain_pem, rca.trust_bundle_pem(), clock())
    assert _ok(after.cert_chain_pem, rca.trust_bundle_pem(), clock())
    clock.advance(timedelta(seconds=1))
    gone = rca.prune()
    assert [g.signer.certificate for g in gone] == [old_root]
    assert list(rca.trust_bundle) == [pending.signer.certificate]
    assert _ok(after.cert_chain_pem, rca.trust_bundle_pem(), clock())


def test_bundle_always_verifies_every_live_cert(clock: ManualClock, mid_rng) -> None:
    """Issue every 30 minutes through two rotations; every unexpired cert verifies."""
    rca = CertificateAuthority.in_memory(clock=clock, rng=mid_rng, min_overlap=HOUR)
    live = []
    step = timedelta(minutes=30)
    for tick in range(1, 2 * 60):  # 60 hours
        now = clock.advance(step)
        if tick in (10, 60):
            rca.begin_root_rotation()
        if rca.can_activate_new_root():
            rca.activate_new_root()
        rca.prune()
        live = [s for s in live if s.not_after >= now]
        live.append(rca.issue_svid(WEB, ttl=timedelta(hours=6)))
        bundle = rca.trust_bundle_pem()
        assert all(_ok(s.cert_chain_pem, bundle, now) for s in live), f"tick {tick}"
    assert len(rca.trust_bundle) == 1  # both old roots pruned by the end


def test_activate_without_pending_and_force(rca: CertificateAuthority, clock) -> None:
    with pytest.raises(RotationError, match="no pending root"):
        rca.activate_new_root()
    rca.begin_root_rotation()
    rca.activate_new_root(force=True)
    assert len(rca.trust_bundle) == 2
    # a retired root that signed nothing can go at once
    clock.advance(timedelta(seconds=1))
    assert len(rca.prune()) == 1


def test_rotation_keeps_key_type(clock: ManualClock, mid_rng) -> None:
    rsa_ca = CertificateAuthority.in_memory(clock=clock, rng=mid_rng, key_type="rsa")
    entry = rsa_ca.begin_root_rotation()
    assert entry.signer.certificate.public_key().key_size == 2048
    entry2 = CertificateAuthority.in_memory(clock=clock).begin_root_rotation(key_type="rsa")
    assert entry2.signer.certificate.public_key().key_size == 2048


def test_reissue_root_same_key(rca: CertificateAuthority, clock: ManualClock) -> None:
    old_root = rca.signing_root
    old = rca.issue_svid(WEB, ttl=DAY)
    clock.advance(HOUR)
    new_root = rca.reissue_root_same_key()
    assert new_root != old_root
    assert new_root.subject == old_root.subject
    assert new_root.public_key() == old_root.public_key()
    assert new_root.serial_number != old_root.serial_number
    assert new_root.not_valid_after_utc > old_root.not_valid_after_utc
    assert list(rca.trust_bundle) == [new_root]
    ski = x509.SubjectKeyIdentifier
    assert (
        new_root.extensions.get_extension_for_class(ski).value
        == old_root.extensions.get_extension_for_class(ski).value
    )
    new = rca.issue_svid(WEB, ttl=DAY)
    # old certs verify against the new root, new certs against the old one
    assert _ok(old.cert_chain_pem, TrustBundle([new_root]).pem, clock())
    assert _ok(new.cert_chain_pem, TrustBundle([old_root]).pem, clock())


def test_reissue_extends_a_root_about_to_expire(clock: ManualClock, mid_rng) -> None:
    short = CertificateAuthority.in_memory(
        clock=clock, rng=mid_rng, root_validity=timedelta(days=10)
    )
    assert not short.root_rotation_due()
    clock.advance(timedelta(days=8, hours=1))
    assert short.root_rotation_due()
    capped = short.issue_svid(WEB, ttl=timedelta(days=5))
    assert capped.not_after == short.signing_root.not_valid_after_utc
    short.reissue_root_same_key()
    assert not short.root_rotation_due()
    full = short.issue_svid(WEB, ttl=timedelta(days=5))
    assert full.not_after == clock() + timedelta(days=5)


def test_renewal_time_bounds() -> None:
    end = T0 + DAY
    assert renewal_time(T0, end, lambda: 0.0) == T0 + DAY * 0.45
    assert renewal_time(T0, end, lambda: 1.0) == T0 + DAY * 0.55
    assert renewal_time(T0, end, lambda: 0.5) == T0 + DAY / 2
    assert renewal_time(T0, end, lambda: 7.0) == T0 + DAY * 0.55  # clamped
    assert renewal_time(T0, end, lambda: 0.5, fraction=0.8, jitter=0) == T0 + DAY * 0.8


def test_record_issued_asks_for_few_saves(rca: CertificateAuthority, clock) -> None:
    saves = []

    class Sink:
        def save_rotation(self, rotation: RootRotation) -> None:
            saves.append(rotation.to_dict())

    rca._sink = Sink()  # the store's hook; a counting stand-in
    for _ in range(50):
        rca.issue_svid(WEB, ttl=DAY)
    assert len(saves) == 1
    clock.advance(timedelta(minutes=59))
    rca.issue_svid(WEB, ttl=DAY)
    assert len(saves) == 1  # within the persist slack (1 hour)
    clock.advance(timedelta(minutes=2))
    rca.issue_svid(WEB, ttl=DAY)
    assert len(saves) == 2
    persisted = saves[-1]["roots"][0]["signed_until"]
    assert persisted >= (clock() + DAY).isoformat()


def test_state_round_trip(rca: CertificateAuthority, clock) -> None:
    rca.issue_svid(WEB, ttl=DAY)
    rca.begin_root_rotation()
    clock.advance(2 * HOUR)
    rca.activate_new_root()
    data = rca.rotation.to_dict()
    signers = {e.key_id: e.signer for e in rca.rotation.entries}
    again = RootRotation.from_dict(data, signers)
    assert [(e.key_id, e.state, e.signed_until) for e in again.entries] == [
        (e.key_id, e.state, e.signed_until) for e in rca.rotation.entries
    ]
    with pytest.raises(RotationError):
        RootRotation.from_dict({**data, "format": 99}, signers)
    with pytest.raises(RotationError, match="not loaded"):
        RootRotation.from_dict(data, {})


def test_root_rotation_due_threshold(rca: CertificateAuthority) -> None:
    signer = rca.signer
    life = signer.not_after - signer.not_before
    assert not root_rotation_due(signer, signer.not_before + life * 0.79)
    assert root_rotation_due(signer, signer.not_before + life * 0.81)


def test_retired_roots_are_bounded(rca: CertificateAuthority, clock: ManualClock) -> None:
    """Rotating again and again keeps at most `max_retired` retired roots in the bundle."""
    for _ in range(rca.rotation.max_retired):
        rca.issue_svid(WEB, ttl=DAY)
        rca.begin_root_rotation()
        rca.activate_new_root(force=True)
    assert len(rca.trust_bundle) == 1 + rca.rotation.max_retired
    with pytest.raises(RotationError, match=r"2 retired roots are still trusted .* leaves"):
        rca.begin_root_rotation()
    assert len(rca.trust_bundle) == 1 + rca.rotation.max_retired
    # Once the oldest retired root's certificates have expired, it leaves, and a new
    # rotation may start.
    clock.advance(DAY + 2 * HOUR)
    assert len(rca.prune()) >= 1
    rca.begin_root_rotation()
    assert len(rca.trust_bundle) <= 2 + rca.rotation.max_retired


def test_a_step_that_cannot_be_saved_is_taken_back(rca: CertificateAuthority) -> None:
    """The CA never signs with, or trusts, a root its directory lacks."""

    class FullDisk:
        def save_rotation(self, rotation: RootRotation) -> None:
            raise OSError("No space left on device")

    before = [(e.key_id, e.state) for e in rca.rotation.entries]
    rca._sink = FullDisk()
    with pytest.raises(OSError):
        rca.begin_root_rotation()
    assert [(e.key_id, e.state) for e in rca.rotation.entries] == before
    assert len(rca.trust_bundle) == 1
