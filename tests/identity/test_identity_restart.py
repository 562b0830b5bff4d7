"""A restarted control plane hands every proxy the SVID it already holds (kept 0600 with
the CA), and issues a new one only when it is due.

The chaos run (`pocketmesh bench --chaos`, tests/faults/test_chaos.py) does the same with
`kill -9` under traffic through real Envoys."""

from __future__ import annotations

import stat
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509

from ca import utc_now
from tests.e2e.harness import ControlPlaneThread, running
from tests.identity.mesh import ask_secrets, secrets_of, write_mesh
from xds_server.identity import IdentityOptions
from xds_server.metrics import registry

NET = "127.0.82"
NODES = {"productpage.default": f"{NET}.10", "reviews.default": f"{NET}.11"}


class Clock:
    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return utc_now() + self.offset


def serials(plane: ControlPlaneThread) -> dict[str, tuple[int, bytes]]:
    tokens = plane.plane.identity.tokens
    out = {}
    for node, address in NODES.items():
        response = ask_secrets(plane, node, tokens.token(node), source=address)
        tls = secrets_of(response)["default"].tls_certificate
        leaf = x509.load_pem_x509_certificates(tls.certificate_chain.inline_bytes)[0]
        out[node] = (leaf.serial_number, tls.private_key.inline_bytes)
    return out


def test_restart_reuses_every_svid_until_it_is_due(tmp_path: Path) -> None:
    config, ca_dir = tmp_path / "config", tmp_path / "ca"
    config.mkdir()
    write_mesh(config, NET, {"productpage": 1, "reviews": 2, "ratings": 3})
    clock = Clock()
    options = IdentityOptions(ca_dir=ca_dir, clock=clock)

    first = ControlPlaneThread(config, watch=False, identity=options).start()
    with running(first):
        before = serials(first)
    kept = list((ca_dir / "svids").iterdir())
    assert len(kept) == 2
    assert stat.S_IMODE((ca_dir / "svids").stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in kept)

    reused = registry.get_sample_value("pocketmesh_svids_reused_total") or 0
    second = ControlPlaneThread(config, watch=False, identity=options).start()
    with running(second):
        assert serials(second) == before  # same certificate, same key: nothing to reload
    assert registry.get_sample_value("pocketmesh_svids_reused_total") == reused + 2

    clock.offset = timedelta(hours=14)  # past every renewal time (12 h +-10 %)
    third = ControlPlaneThread(config, watch=False, identity=options).start()
    with running(third):
        after = serials(third)
    assert all(after[node][0] != before[node][0] for node in NODES), (before, after)
