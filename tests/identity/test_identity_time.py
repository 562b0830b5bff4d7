"""Time: a clock that jumps past every SVID's expiry (a laptop waking up, istio#38081)
and a root near the end of its life.

The CA runs on a clock the test moves; the proxies are SDS streams over ADS, from each
workload's address. With real Envoys (which check certificates against the real clock)
the same is measured by `pocketmesh bench --chaos pause` (SIGSTOP past expiry)."""

from __future__ import annotations

import queue
from datetime import datetime, timedelta
from pathlib import Path

from ca import init_ca_dir, utc_now
from tests.e2e.harness import ControlPlaneThread, running
from tests.identity.mesh import SdsStream, leaf_of, roots_of, write_mesh
from xds_server.identity import IdentityOptions
from xds_server.metrics import registry

NET = "127.0.84"
NODES = {"productpage": f"{NET}.10", "reviews": f"{NET}.11", "ratings": f"{NET}.12"}


class Clock:
    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return utc_now() + self.offset


def _latest(stream: SdsStream, timeout: float = 10) -> dict:
    """The newest secrets this stream holds once pushes have settled."""
    secrets = stream.next_secrets(timeout)
    while True:
        try:
            secrets = stream.next_secrets(0.3)
        except queue.Empty:
            return secrets


def test_a_clock_jump_past_expiry_renews_every_svid_at_once(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    write_mesh(config, NET, {"productpage": 1, "reviews": 2, "ratings": 3})
    clock = Clock()
    options = IdentityOptions(svid_ttl=timedelta(hours=1), clock=clock, tick_seconds=0.1)
    plane = ControlPlaneThread(config, watch=False, identity=options).start()
    streams = [SdsStream(plane, f"{n}.default", a) for n, a in NODES.items()]
    with running(plane, *streams):
        before = {s: leaf_of(_latest(s)) for s in streams}
        renewed = registry.get_sample_value("pocketmesh_svids_issued_total", {"reason": "renewal"})
        clock.offset = timedelta(days=2)  # asleep for two days: every SVID long expired
        now = clock()
        after = {s: leaf_of(_latest(s)) for s in streams}
        for stream in streams:
            leaf = after[stream]
            assert leaf.serial_number != before[stream].serial_number
            assert leaf.not_valid_before_utc <= now < leaf.not_valid_after_utc
        # One renewal each, all in the same tick (issued within a second of each other).
        issued = sorted(leaf.not_valid_before_utc for leaf in after.values())
        assert issued[-1] - issued[0] <= timedelta(seconds=1), issued
        total = registry.get_sample_value("pocketmesh_svids_issued_total", {"reason": "renewal"})
        assert total == (renewed or 0) + len(streams)


def test_a_root_near_expiry_is_rotated_before_it_expires(tmp_path: Path) -> None:
    config, ca_dir = tmp_path / "config", tmp_path / "ca"
    config.mkdir()
    write_mesh(config, NET, {"productpage": 1, "reviews": 2, "ratings": 3})
    old_root = init_ca_dir(ca_dir, root_validity=timedelta(days=10)).signing_root
    clock = Clock()
    options = IdentityOptions(ca_dir=ca_dir, clock=clock, tick_seconds=0.1)
    plane = ControlPlaneThread(config, watch=False, identity=options).start()
    stream = SdsStream(plane, "productpage.default", NODES["productpage"])
    with running(plane, stream):
        assert leaf_of(_latest(stream)).issuer == old_root.subject
        # 9 of its 10 days gone: less than the 20 % grace left, so it is rotated now.
        clock.offset = timedelta(days=9)
        deadline = old_root.not_valid_after_utc
        secrets = _latest(stream)
        for _ in range(20):  # the new root is trusted first, then it signs
            if leaf_of(secrets).issuer != old_root.subject:
                break
            secrets = _latest(stream)
        leaf, roots = leaf_of(secrets), roots_of(secrets)
        assert leaf.issuer != old_root.subject, "still signed by the old root"
        (new_root,) = [r for r in roots if r.subject == leaf.issuer]
        assert old_root in roots  # its SVIDs keep verifying until they expire
        assert clock() < deadline and new_root.not_valid_after_utc > deadline
