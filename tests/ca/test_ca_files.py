"""Secret files: modes, permission checks, and a CA directory that survives failed writes.

The storage tests fail the n-th write of a rotation step (a full disk, or a crash:
nothing after the failure runs) for every n, and require that the directory still
loads, as the state before the step or after it, never a mix, and that the CA in
memory is back to what its directory says.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest

from ca import CaDirError, CertificateAuthority, ManualClock, init_ca_dir, load_ca_dir
from ca import files as ca_files
from ca import store as ca_store
from tests.ca.ca_testkit import WEB
from xds_server.cli import main
from xds_server.identity.auth import TOKEN_KEY_FILE, ProxyTokens

HOUR = timedelta(hours=1)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- modes and checks ---------------------------------------------------------------


def test_every_secret_is_0600_in_a_0700_directory(tmp_path: Path, clock: ManualClock) -> None:
    d = tmp_path / "ca"
    ca = init_ca_dir(d, clock=clock, min_overlap=HOUR)
    ProxyTokens.load_or_create(d)
    ca.issue_svid(WEB)
    ca.begin_root_rotation()
    for path in [d, d / "roots"]:
        assert _mode(path) == 0o700, path
    keys = [d / "root-key.pem", d / TOKEN_KEY_FILE, *(d / "roots").glob("*-key.pem")]
    assert len(keys) == 4
    for key in keys:
        assert _mode(key) == 0o600, key


@pytest.mark.parametrize("mode", [0o666, 0o620, 0o602])
def test_a_key_others_may_write_is_refused(tmp_path: Path, mode: int) -> None:
    d = tmp_path / "ca"
    init_ca_dir(d)
    (d / "root-key.pem").chmod(mode)
    with pytest.raises(CaDirError, match=r"writable by .*chmod 600 .*root-key.pem"):
        load_ca_dir(d)
    ProxyTokens.load_or_create(d)
    (d / TOKEN_KEY_FILE).chmod(mode)
    with pytest.raises(CaDirError, match=r"proxy token key is writable"):
        ProxyTokens.load_or_create(d)


def test_a_key_others_may_read_is_used_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    d = tmp_path / "ca"
    first = init_ca_dir(d)
    (d / "root-key.pem").chmod(0o644)
    caplog.set_level(logging.WARNING, logger="pocketmesh.ca")
    assert load_ca_dir(d).signing_root == first.signing_root
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "root-key.pem" in warning and "readable by its group and other users" in warning
    assert "chmod 600" in warning


def test_a_ca_directory_others_may_write_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "ca"
    init_ca_dir(d)
    d.chmod(0o777)
    with pytest.raises(CaDirError, match=r"CA directory is writable .*chmod 700"):
        load_ca_dir(d)
    d.chmod(0o1777)  # sticky, as /tmp: others cannot replace our files
    load_ca_dir(d)


def test_a_key_that_is_not_a_file_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "ca"
    init_ca_dir(d)
    (d / "root-key.pem").unlink()
    (d / "root-key.pem").mkdir()
    with pytest.raises(CaDirError, match=r"root-key\.pem"):
        load_ca_dir(d)


def test_bootstrap_output_is_0600(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.identity.mesh import write_mesh

    config, ca_dir, out = tmp_path / "config", tmp_path / "ca", tmp_path / "boot.yaml"
    config.mkdir()
    write_mesh(config, "127.0.81", {"productpage": 1, "reviews": 2, "ratings": 3})
    main(["ca", "init", "--dir", str(ca_dir)])
    out.write_text("old, world-readable\n")
    out.chmod(0o644)
    args = ["bootstrap", "--workload", "reviews", "--config", str(config), "--ca-dir", str(ca_dir)]
    assert main([*args, "-o", str(out)]) == 0
    assert _mode(out) == 0o600
    assert ProxyTokens.load_or_create(ca_dir).token("reviews.default") in out.read_text()
    # A token key others may write: refused with the reason, no traceback.
    (ca_dir / TOKEN_KEY_FILE).chmod(0o666)
    capsys.readouterr()
    assert main([*args, "-o", str(tmp_path / "other.yaml")]) == 1
    assert "chmod 600" in capsys.readouterr().err
    assert not (tmp_path / "other.yaml").exists()


def test_write_atomic_keeps_the_old_file_when_writing_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "key.pem"
    ca_files.write_atomic(path, b"old", 0o600)

    def full(fd: int) -> None:  # where a full disk shows on a delayed-allocation fs
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(CaDirError, match="No space left"):
        ca_files.write_atomic(path, b"new" * 1000, 0o600)
    monkeypatch.undo()
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["key.pem"]  # no temporary file left


# -- failing writes at each step of a rotation ------------------------------------------


class _Fail(Exception):
    pass


@contextmanager
def failing_write(monkeypatch: pytest.MonkeyPatch, at: int, kind: str) -> Iterator[list[int]]:
    """The `at`-th atomic write of the CA store fails: ENOSPC (a full disk: the error
    reaches the caller) or a crash (nothing after it runs; modelled by an exception
    that no handler catches). Yields the count of writes attempted."""
    real = ca_store.write_atomic
    count = [0]

    def write(path: Path, data: bytes, mode: int, **kw: bool) -> None:
        count[0] += 1
        if count[0] == at:
            if kind == "crash":
                # A crash mid-write leaves the temporary file, not a torn target.
                (path.parent / f".{path.name}.crash.tmp").write_bytes(data[: len(data) // 2])
                raise _Fail
            raise CaDirError(f"cannot write {path}: No space left on device")
        real(path, data, mode, **kw)

    monkeypatch.setattr(ca_store, "write_atomic", write)
    yield count
    monkeypatch.setattr(ca_store, "write_atomic", real)


def _state(ca: CertificateAuthority) -> list[tuple[str, str]]:
    return [(e.key_id, e.state.value) for e in ca.rotation.entries]


STEPS: dict[str, Callable[[CertificateAuthority, ManualClock], object]] = {
    "begin": lambda ca, clock: ca.begin_root_rotation(),
    "activate": lambda ca, clock: ca.activate_new_root(force=True),
    "prune": lambda ca, clock: (clock.advance(timedelta(days=3)), ca.prune()),
    "reissue": lambda ca, clock: ca.reissue_root_same_key(),
}
SETUP = {
    "begin": [],
    "activate": ["begin"],
    "prune": ["begin", "activate"],
    "reissue": [],
}


def _prepared(d: Path, clock: ManualClock, step: str) -> CertificateAuthority:
    ca = init_ca_dir(d, clock=clock, min_overlap=HOUR)
    ca.issue_svid(WEB, ttl=timedelta(hours=2))
    for earlier in SETUP[step]:
        STEPS[earlier](ca, clock)
    return ca


@pytest.mark.parametrize("kind", ["full-disk", "crash"])
@pytest.mark.parametrize("step", list(STEPS))
def test_a_failed_write_at_any_point_leaves_a_loadable_ca(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: ManualClock, step: str, kind: str
) -> None:
    # How many writes the step makes when nothing fails.
    probe_clock = ManualClock(clock())
    probe = _prepared(tmp_path / "probe", probe_clock, step)
    with failing_write(monkeypatch, at=0, kind=kind) as count:
        STEPS[step](probe, probe_clock)
    writes = count[0]
    assert writes >= 1, step

    for at in range(1, writes + 1):
        d = tmp_path / f"ca-{at}"
        step_clock = ManualClock(clock())
        ca = _prepared(d, step_clock, step)
        before = _state(ca)
        bundle_before = ca.trust_bundle_pem()
        with failing_write(monkeypatch, at=at, kind=kind), pytest.raises((_Fail, CaDirError)):
            STEPS[step](ca, step_clock)
        loaded = load_ca_dir(d, clock=step_clock, min_overlap=HOUR)
        # The directory is still the state before the step (rotation.json is written
        # last), and the CA in memory went back to it: it never signs with, or trusts,
        # a root its directory does not hold.
        assert _state(loaded) == before, (step, kind, at)
        assert _state(ca) == before, (step, kind, at)
        assert ca.trust_bundle_pem() == bundle_before
        svid = loaded.issue_svid(WEB)
        assert loaded.verify(svid.cert_chain_pem).uri == WEB
        # And the step succeeds once the disk has room again.
        STEPS[step](loaded, step_clock)
        assert _state(load_ca_dir(d, clock=step_clock)) == _state(loaded)
        assert not list(d.rglob(".*.tmp")), "a crash's temporary file outlived the next save"
