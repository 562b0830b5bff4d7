"""A local user (`nobody`) against a running mesh gets no workload's key or token, and
cannot stop, drain or reconfigure a sidecar.

Two meshes, as people run them: `pocketmesh up` (the demo), and `pocketmesh serve
--xds-tls` with Envoys started by hand from `pocketmesh bootstrap -o FILE`. The
attacker (tests/identity/attacker.py, run as uid nobody) reads every file it can,
every sidecar's admin (every read-only endpoint, then every mutating one and path
tricks around them), the control plane's debug address, /proc of every process, and
poses as each workload on the xDS port from the workload's own address (plaintext
with no or a guessed token; TLS with no or a self-signed client certificate). It is
given no secret; the test scans everything it reports for every token and key.

Everything lives in a directory every user may traverse (pytest's tmp_path is 0700,
which would protect the files whatever their own modes).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.harness import Envoy, free_port, get, running, wait_until
from tests.identity.attacker import tls_probe
from tests.identity.mesh import write_mesh
from tests.run.demo_mesh import demo_copy, random_net
from tests.run.up_process import children_of, running_up, world_traversable_root
from xds_server.galley.loader import load_paths
from xds_server.identity.auth import ProxyTokens

ATTACKER = Path(__file__).with_name("attacker.py")
NOBODY = 65534

pytestmark = pytest.mark.skipif(
    os.getuid() != 0, reason="runs the attacker as uid nobody, which needs root"
)


@pytest.fixture
def root() -> Iterator[Path]:
    root = world_traversable_root()
    try:
        yield root
    finally:
        subprocess.run(["rm", "-rf", str(root)], check=False)


def attack(plan: dict[str, Any]) -> dict[str, Any]:
    result = subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
         sys.executable, str(ATTACKER)],
        input=json.dumps(plan), capture_output=True, text=True, timeout=300,
        cwd="/", env={**os.environ, "PYTHONPATH": ""},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    loot: dict[str, Any] = json.loads(result.stdout)
    assert loot["uid"] == NOBODY
    return loot


def secrets_in(ca_dir: Path, nodes: list[str], *key_files: Path) -> dict[str, str]:
    """What must not leak, by name: every proxy's token, the token key, and one line of
    every private key's base64 (the CA's roots, every SVID, every xDS client key)."""
    found: dict[str, str] = {}
    token_key = (ca_dir / "xds-token.key").read_text().strip()
    found["token key"] = token_key
    tokens = ProxyTokens.load_or_create(ca_dir)
    for node in nodes:
        found[f"token of {node}"] = tokens.token(node)
    texts = [p.read_text() for p in ca_dir.rglob("*") if p.is_file()]
    texts += [p.read_text() for p in key_files]
    for i, text in enumerate(texts):
        text = text.replace("\\n", "\n")  # SVIDs are kept as JSON
        for block in re.findall(r"-----BEGIN [A-Z ]*PRIVATE KEY-----\n(.*?)-----END", text, re.S):
            lines = block.split()
            found[f"private key {i}"] = max(lines, key=len)
    assert sum(name.startswith("private key") for name in found) >= 2, found.keys()
    return found


def assert_nothing_leaked(
    loot: dict[str, Any], secrets: dict[str, str], private: list[Path]
) -> None:
    text = json.dumps(loot)
    leaked = [name for name, secret in secrets.items() if secret in text]
    assert leaked == [], f"the attacker got: {leaked}"
    assert "PRIVATE KEY" not in text
    # Nothing under the private directories was readable at all.
    read = [p for p in loot["read"] if any(p.startswith(str(d)) for d in private)]
    assert read == [], read
    # The xDS port answered no impostor.
    assert loot["xds"] and all(r.startswith("refused") for r in loot["xds"].values()), loot["xds"]


def assert_the_attacker_worked(loot: dict[str, Any], public: Path, admins: list[str]) -> None:
    """Controls: what any user may see, it saw (or the scan above would prove nothing)."""
    assert str(public) in loot["read"], sorted(loot["read"])[:20]
    for admin in admins:
        status, body = loot["admin"][f"GET {admin}/config_dump"]
        assert status == 200 and '"[redacted]"' in body and "xds-grpc" in body, body[:300]
        assert loot["admin"][f"GET {admin}/certs"][0] == 200


def assert_admins_refused_every_change(loot: dict[str, Any], admins: list[str]) -> None:
    """Every mutating POST refused (403); a trick that Envoy reads as a read-only path
    (`/ready?/../quitquitquit` is /ready with a query) got that path's answer."""
    posts = {k: v for k, v in loot["admin"].items() if k.startswith("POST")}
    assert len(posts) >= 20 * len(admins)
    refused = {k for k, (status, body) in posts.items() if status == 403 and "not allowed" in body}
    read = {k for k, (status, body) in posts.items() if status == 200 and body == "LIVE\n"}
    assert all(k.split("/", 1)[1].startswith("ready?") for k in read), read
    assert refused | read == set(posts), {k: v for k, v in posts.items() if k not in refused}
    for admin in admins:  # and nothing changed
        info = json.loads(get(f"http://{admin}/server_info")[1])
        assert info["state"] == "LIVE", info["state"]  # /healthcheck/fail: DRAINING
        assert "reloadable_features.x" not in get(f"http://{admin}/runtime")[1]


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_local_user_gets_nothing_from_a_mesh_started_by_up(root: Path) -> None:
    config = demo_copy(root, random_net())
    for path in [config, *config.iterdir()]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    with running_up(root, [config]) as up:
        text = up.wait_summary()
        admins = re.findall(r"admin http://(\S+)", text)
        assert len(admins) == 6, text
        gateway = re.search(r"Open:\s+curl (\S+)", text).group(1)  # type: ignore[union-attr]
        loaded = load_paths([config]).config
        assert loaded is not None
        workloads = {we.proxy_id: we.address for we in loaded.workload_entries}
        assert up.proc is not None
        pids = children_of(up.proc.pid)
        assert len(pids) >= 1 + 6, pids  # the control plane, apps, sidecars
        # The control for the xDS probes: the same probe with a sidecar's own
        # credential (as root) is let through, so "refused" below means refused.
        node = "productpage.default"
        own = tuple(
            (up.run_dir / "bootstrap" / f"{node}.xds-{what}.pem").read_text()
            for what in ("cert", "key")
        )
        assert tls_probe(up.xds, workloads[node], own).startswith("accepted"), "control"  # type: ignore[arg-type]

        loot = attack(
            {
                "paths": [str(root)],
                "pids": pids,
                "admins": admins,
                "read_only_admin": True,
                "debug": up.debug,
                "xds": up.xds,
                "workloads": workloads,
            }
        )
        key_files = sorted((up.run_dir / "bootstrap").glob("*.xds-key.pem"))
        assert len(key_files) == 6
        secrets = secrets_in(up.ca_dir, list(workloads), *key_files)
        assert_nothing_leaked(loot, secrets, [up.run_dir, up.ca_dir])
        assert_the_attacker_worked(loot, sorted(config.glob("*.yaml"))[0], admins)
        assert_admins_refused_every_change(loot, admins)
        # Every process `up` started still runs, and the mesh still answers.
        assert [p for p in pids if not alive(p)] == []
        assert all(get(f"http://{a}/ready")[0] == 200 for a in admins)
        assert get(gateway)[0] == 200
        assert "stopping" not in up.text() and "! " not in up.text()[len(text) :]


def test_a_local_user_gets_nothing_from_envoys_started_from_bootstrap_files(
    root: Path, tmp_path: Path
) -> None:
    """`serve --xds-tls` and `pocketmesh bootstrap -o FILE --admin-read-only`."""
    net = random_net()
    config, ca_dir, boots = root / "config", root / "ca", root / "bootstraps"
    config.mkdir()
    boots.mkdir(mode=0o755)
    write_mesh(config, net, {"productpage": free_port(), "reviews": free_port(), "ratings": 1})
    for path in [config, *config.iterdir()]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    xds, debug = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    cli = [sys.executable, "-m", "xds_server.cli"]
    serve = subprocess.Popen(
        [*cli, "serve", "--config", str(config), "--ca-dir", str(ca_dir), "--xds-tls",
         "--xds-address", xds, "--debug-address", debug, "--no-watch"],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "serve.log").open("wb"),
    )  # fmt: skip
    envoys: list[Envoy] = []
    try:
        wait_until(lambda: get(f"http://{debug}/ready")[0] == 200, timeout=30, what="serve ready")
        workloads = {"productpage.default": f"{net}.10", "reviews.default": f"{net}.11"}
        for node, address in workloads.items():
            out = boots / f"{node}.yaml"
            port = free_port(address)
            done = subprocess.run(
                [*cli, "bootstrap", "--workload", node, "--config", str(config),
                 "--xds-address", xds, "--debug-address", debug, "--admin-port", str(port),
                 "--admin-read-only", "-o", str(out)],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert done.returncode == 0 and done.stderr == "", done.stderr
            assert (out.stat().st_mode & 0o777) == 0o600
            envoy = Envoy(yaml.safe_load(out.read_text()), tmp_path, node)
            envoy.config_path = out  # run from the written file itself
            envoys.append(envoy)
        with running(*envoys):
            for envoy in envoys:
                envoy.start()

            def holds_svid(envoy: Envoy) -> bool:
                dump = get(envoy.admin + "/config_dump?resource=dynamic_active_secrets")[1]
                return '"name": "default"' in dump

            for envoy in envoys:
                wait_until(lambda e=envoy: holds_svid(e), timeout=30, what=f"{envoy.name} SVID")
            admins = [e.admin.removeprefix("http://") for e in envoys]
            pids = [serve.pid, *(e.proc.pid for e in envoys if e.proc is not None)]
            loot = attack(
                {
                    "paths": [str(root)],
                    "pids": pids,
                    "admins": admins,
                    "read_only_admin": True,
                    "debug": debug,
                    "xds": xds,
                    "workloads": workloads,
                }
            )
            bootstraps = sorted(boots.glob("*.yaml"))  # their keys are inline
            secrets = secrets_in(ca_dir, list(workloads), *bootstraps)
            assert_nothing_leaked(loot, secrets, [ca_dir, *bootstraps])
            assert_the_attacker_worked(loot, config / "mesh.yaml", admins)
            assert_admins_refused_every_change(loot, admins)
            assert [p for p in pids if not alive(p)] == []
            assert all(get(f"http://{a}/ready")[0] == 200 for a in admins)
    finally:
        serve.terminate()
        serve.wait(10)
