"""`pocketmesh up` when things go wrong, and what it leaves readable.

- The control plane killed with SIGKILL under steady traffic through the gateway: `up`
  says so, restarts it with backoff and leaves the data plane alone; Envoys keep their
  last config, so no request fails; the control plane comes back, every proxy re-syncs.
- Everything `up` writes that holds a credential or a key is 0600 in 0700 directories:
  another local user (`nobody`) can read none of it.
"""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
from pathlib import Path

from tests.e2e.harness import get, wait_until
from tests.run.demo_mesh import demo_copy, random_net
from tests.run.test_up_follows import chain_failure
from tests.run.up_process import Traffic, running_up, world_traversable_root


def test_control_plane_killed_under_traffic_is_restarted_and_no_request_fails(
    tmp_path: Path,
) -> None:
    config = demo_copy(tmp_path, random_net())
    with running_up(tmp_path, [config]) as up:
        text = up.wait_summary()
        pid = int(re.search(r"✓ control plane .* pid (\d+)", text).group(1))  # type: ignore[union-attr]
        gateway = re.search(r"Open:\s+curl (\S+)", text).group(1)  # type: ignore[union-attr]
        with Traffic(lambda: get(gateway), chain_failure) as traffic:
            wait_until(lambda: len(traffic.answers) > 20, timeout=30, what="steady traffic")
            mark = len(up.text())
            os.kill(pid, signal.SIGKILL)
            killed = rf"! control plane \(pid {pid}\) was killed \(SIGKILL\)"
            up.wait_for(killed, timeout=10, since=mark)
            up.wait_for(r"the sidecars keep serving their last config", timeout=5, since=mark)
            back = up.wait_for(r"✓ control plane back \(pid (\d+)\)", timeout=60, since=mark)
            assert int(back.group(1)) != pid
            up.wait_for(r"✓ all 6 sidecars re-synced", timeout=90, since=mark)
            during = traffic.sent
            wait_until(lambda: traffic.sent > during + 30, timeout=30, what="traffic after")
        assert traffic.failures == [], (traffic.failures[:5], traffic.sent)
        assert traffic.sent > 50
        # The data plane was never restarted: the summary's sidecars answer as before.
        assert "stopping" not in up.text()[mark:]
        status = get(f"http://{up.debug}/debug/syncz")
        assert status[0] == 200 and status[1].count('"SYNCED"') >= 6 * 5


def test_a_control_plane_down_on_a_broken_config_returns_once_it_is_fixed(
    tmp_path: Path,
) -> None:
    """Killed while an edit is broken: `up` says why it waits, traffic keeps flowing, and
    the fix brings the control plane back at once (not after the 30 s backoff)."""
    config = demo_copy(tmp_path, random_net())
    with running_up(tmp_path, [config]) as up:
        text = up.wait_summary()
        pid = int(re.search(r"✓ control plane .* pid (\d+)", text).group(1))  # type: ignore[union-attr]
        gateway = re.search(r"Open:\s+curl (\S+)", text).group(1)  # type: ignore[union-attr]
        workloads = config / "workloads.yaml"
        good = workloads.read_text()
        with Traffic(lambda: get(gateway), chain_failure) as traffic:
            wait_until(lambda: len(traffic.answers) > 10, timeout=30, what="steady traffic")
            mark = len(up.text())
            workloads.write_text(good.replace("address: 127.", "address: 999.", 1))
            up.wait_for(r"rejected", timeout=20, since=mark)
            os.kill(pid, signal.SIGKILL)
            up.wait_for(r"not restarting it while the config has errors", timeout=20, since=mark)
            waited = traffic.sent
            wait_until(lambda: traffic.sent > waited + 10, timeout=30, what="traffic, CP down")
            fixed = len(up.text())
            workloads.write_text(good)
            # The next backoff step would be 30 s away: the edit must cut it short.
            up.wait_for(r"✓ control plane back \(pid (\d+)\)", timeout=20, since=fixed)
        assert traffic.failures == [], (traffic.failures[:5], traffic.sent)


def readable_by_nobody(path: Path) -> bool:
    """Can uid `nobody` open this file? (we are root; setpriv drops to nobody)"""
    result = subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
         "cat", str(path)],
        capture_output=True, timeout=10,
    )  # fmt: skip
    return result.returncode == 0


def test_tokens_and_keys_are_private_to_the_user_running_up() -> None:
    """Modes everywhere; and, as root (CI runs so), reads as `nobody` that must fail."""
    as_root = os.getuid() == 0
    root = world_traversable_root()
    try:
        config = demo_copy(root, random_net())
        for path in [config, *config.iterdir()]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        # The control: a file every user may read, next to the run directory, is read.
        control = root / "public.txt"
        control.write_text("anyone\n")
        control.chmod(0o644)
        assert not as_root or readable_by_nobody(control)
        with running_up(root, [config]) as up:
            up.wait_summary()
            # Per sidecar: its bootstrap, its xDS client certificate and key; the roots.
            secret_files = [
                *sorted((up.run_dir / "bootstrap").iterdir()),
                up.ca_dir / "xds-token.key",
                up.ca_dir / "root-key.pem",
            ]
            assert len(secret_files) == 6 * 3 + 1 + 2
            for path in secret_files:
                text = path.read_text()
                assert ".xds-key.pem" in text or path.suffix in (".key", ".pem"), path
            every = [p for p in (*up.run_dir.rglob("*"), *up.ca_dir.rglob("*"))]
            for path in [up.run_dir, up.ca_dir, *every]:
                mode = stat.S_IMODE(path.stat().st_mode)
                if path.is_dir():
                    assert mode == 0o700, (path, oct(mode))
                elif path in secret_files:
                    assert mode == 0o600, (path, oct(mode))
            for path in secret_files:
                assert not as_root or not readable_by_nobody(path), f"nobody can read {path}"
            # Not even with the directory's permission bits loosened by someone: the
            # files themselves are 0600.
            for directory in (up.run_dir, up.run_dir / "bootstrap", up.ca_dir):
                directory.chmod(0o755)
            for path in secret_files:
                assert not as_root or not readable_by_nobody(path), f"nobody can read {path}"
    finally:
        subprocess.run(["rm", "-rf", str(root)], check=False)
