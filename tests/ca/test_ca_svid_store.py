"""Issued SVIDs kept beside the CA: reused after a restart unless due, 0600, never trusted
blindly (a damaged or foreign file is ignored)."""

from __future__ import annotations

import json
import stat
from datetime import timedelta
from pathlib import Path

import pytest

from ca import ManualClock, SpiffeId, SvidStore, init_ca_dir, load_ca_dir
from tests.ca.ca_testkit import WEB

HOUR = timedelta(hours=1)
ID = SpiffeId.parse(WEB)


def test_kept_svid_round_trips_with_mode_0600(tmp_path: Path, clock: ManualClock) -> None:
    ca = init_ca_dir(tmp_path / "ca", clock=clock, rng=lambda: 0.5)
    store = SvidStore(tmp_path / "ca" / "svids")
    svid = ca.issue_svid(WEB, ttl=24 * HOUR)
    assert store.save(svid)
    path = store.path_of(ID)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    kept = store.load(ID)
    assert kept is not None
    assert (kept.serial, kept.cert_chain_pem, kept.private_key_pem) == (
        svid.serial,
        svid.cert_chain_pem,
        svid.private_key_pem,
    )
    assert kept.renew_at == svid.renew_at and kept.issuer_key_id == svid.issuer_key_id
    restarted = load_ca_dir(tmp_path / "ca", clock=clock)
    assert restarted.reusable(kept, 24 * HOUR)


def test_reuse_only_while_not_due(tmp_path: Path, clock: ManualClock) -> None:
    ca = init_ca_dir(tmp_path / "ca", clock=clock, rng=lambda: 0.5)
    svid = ca.issue_svid(WEB, ttl=24 * HOUR)
    assert ca.reusable(svid, 24 * HOUR)
    assert not ca.reusable(svid, HOUR)  # a shorter --svid-ttl applies at once
    clock.advance(12 * HOUR)  # its renewal time (half-life, no jitter)
    assert not ca.reusable(svid, 24 * HOUR)


def test_not_reused_after_a_root_rotation(tmp_path: Path, clock: ManualClock) -> None:
    ca = init_ca_dir(tmp_path / "ca", clock=clock, rng=lambda: 0.5)
    svid = ca.issue_svid(WEB)
    ca.begin_root_rotation()
    assert ca.reusable(svid, 24 * HOUR)  # the old root still signs
    ca.activate_new_root(force=True)
    assert not ca.reusable(svid, 24 * HOUR)


def test_damaged_or_foreign_files_are_ignored(tmp_path: Path, clock: ManualClock) -> None:
    ca = init_ca_dir(tmp_path / "ca", clock=clock)
    store = SvidStore(tmp_path / "svids")
    other = ca.issue_svid("spiffe://cluster.local/ns/default/sa/other")
    store.save(ca.issue_svid(WEB))
    path = store.path_of(ID)
    body = json.loads(path.read_text())
    # Someone else's certificate with our key, a truncated file, another identity's file.
    for damaged in (
        {**body, "cert_chain_pem": other.cert_chain_pem.decode()},
        {**body, "spiffe_id": other.spiffe_id.uri},
    ):
        path.write_text(json.dumps(damaged))
        assert store.load(ID) is None
    path.write_text(path.read_text()[:100])
    assert store.load(ID) is None
    # A different CA's SVID is not reused even if the file is well-formed.
    foreign = init_ca_dir(tmp_path / "other-ca", clock=clock).issue_svid(WEB)
    store.save(foreign)
    kept = store.load(ID)
    assert kept is not None and not ca.reusable(kept, 24 * HOUR)


def test_expired_files_are_pruned_and_an_unwritable_store_only_warns(
    tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    ca = init_ca_dir(tmp_path / "ca", clock=clock)
    store = SvidStore(tmp_path / "svids")
    store.save(ca.issue_svid(WEB, ttl=HOUR))
    clock.advance(2 * HOUR)
    assert store.prune(clock()) == 1 and store.load(ID) is None
    (tmp_path / "blocked").write_text("a file where the directory should be")  # (root
    blocked = SvidStore(tmp_path / "blocked")  # ignores modes: a read-only mount, as seen)
    assert not blocked.save(ca.issue_svid(WEB))
    assert not blocked.save(ca.issue_svid(WEB))
    warnings = [r.getMessage() for r in caplog.records if "cannot keep" in r.getMessage()]
    assert len(warnings) == 1
