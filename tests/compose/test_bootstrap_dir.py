"""`serve --bootstrap-dir`: the control plane writes each sidecar's bootstrap, its
credential included, so sidecars in containers need no human to copy files and proxy
authentication stays on. No engine needed: a real Envoy runs from a written file."""

from __future__ import annotations

import http.client
import stat
from pathlib import Path

import pytest
import yaml

from tests.e2e.harness import ControlPlaneThread, Envoy, free_port, get, running, wait_until
from tests.identity.mesh import write_mesh
from xds_server.bootstrap_dir import BootstrapWriter
from xds_server.cli import main as cli
from xds_server.galley.loader import load_paths
from xds_server.identity import IdentityOptions, IdentityRuntime
from xds_server.identity.credentials import ProxyCredentials

NET = "127.0.83"
PROXIES = ["productpage.default", "ratings.default", "reviews.default"]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    directory = tmp_path / "config"
    directory.mkdir()
    write_mesh(directory, NET, {"productpage": 19180, "reviews": 19181, "ratings": 19182})
    return directory


def token_of(bootstrap: dict[str, object]) -> str | None:
    ads = bootstrap["dynamic_resources"]["ads_config"]  # type: ignore[index]
    metadata = ads["grpc_services"][0].get("initial_metadata")
    if metadata is None:
        return None
    ((key, value),) = ((m["key"], m["value"]) for m in metadata)
    assert key == "x-pocketmesh-token"
    return str(value)


def test_each_workload_gets_its_own_client_certificate_and_the_xds_roots(
    config: Path, tmp_path: Path
) -> None:
    identity = IdentityRuntime.create(IdentityOptions(xds_tls=True), "cluster.local")
    writer = BootstrapWriter(tmp_path / "out", "pocketmesh:15010", identity)
    workloads = load_paths([config]).config.workload_entries  # type: ignore[union-attr]
    assert writer.write(workloads) == (PROXIES, [])
    keys = set()
    for proxy in PROXIES:
        path = tmp_path / "out" / proxy / "bootstrap.yaml"
        text = path.read_text()
        bootstrap = yaml.safe_load(text)
        assert bootstrap["node"]["id"] == proxy
        # No token: it would show in the admin's /config_dump; a key is redacted there.
        assert token_of(bootstrap) is None and identity.tokens.token(proxy) not in text
        # In a network namespace of its own (shared with its app at most), admin is on
        # loopback only, and read-only.
        admin = bootstrap["admin"]
        assert admin["address"]["socket_address"]["address"] == "127.0.0.1"
        assert admin["allow_paths"][0]["safe_regex"]["regex"].startswith("(/|/help|/ready")
        xds = bootstrap["static_resources"]["clusters"][0]
        socket = xds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        assert socket["address"]["socket_address"] == {"address": "pocketmesh", "port_value": 15010}
        tls = xds["transport_socket"]["typed_config"]["common_tls_context"]
        assert "BEGIN CERTIFICATE" in tls["validation_context"]["trusted_ca"]["inline_string"]
        (san,) = tls["validation_context"]["match_typed_subject_alt_names"]
        assert san["matcher"]["exact"] == str(identity.ca.control_plane_id)
        (pair,) = tls["tls_certificates"]
        cert = pair["certificate_chain"]["inline_string"].encode()
        assert ProxyCredentials.node_of(cert) == proxy
        keys.add(pair["private_key"]["inline_string"])
        # Readable by a sidecar running as another user (Envoy's image: uid 101), in a
        # directory that is the writer's alone unless given to that sidecar.
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert len(keys) == len(PROXIES)


def test_on_plaintext_xds_each_workload_gets_its_own_token(config: Path, tmp_path: Path) -> None:
    identity = IdentityRuntime.create(IdentityOptions(), "cluster.local")
    writer = BootstrapWriter(tmp_path / "out", "pocketmesh:15010", identity)
    workloads = load_paths([config]).config.workload_entries  # type: ignore[union-attr]
    assert writer.write(workloads) == (PROXIES, [])
    for proxy in PROXIES:
        bootstrap = yaml.safe_load((tmp_path / "out" / proxy / "bootstrap.yaml").read_text())
        assert token_of(bootstrap) == identity.tokens.token(proxy)
        assert "transport_socket" not in bootstrap["static_resources"]["clusters"][0]


@pytest.mark.parametrize("xds_tls", [False, True], ids=["token", "client-certificate"])
def test_only_changed_or_missing_files_are_rewritten_and_failures_keep_serving(
    config: Path, tmp_path: Path, xds_tls: bool
) -> None:
    # A credential is issued once per proxy, not on every reload.
    identity = IdentityRuntime.create(IdentityOptions(xds_tls=xds_tls), "cluster.local")
    out = tmp_path / "out"
    writer = BootstrapWriter(out, "pocketmesh:15010", identity)
    workloads = load_paths([config]).config.workload_entries  # type: ignore[union-attr]
    writer.write(workloads)
    assert writer.write(workloads) == ([], [])
    (out / "ratings.default" / "bootstrap.yaml").unlink()  # a volume emptied, say
    assert writer.write(workloads) == (["ratings.default"], [])
    # A directory it cannot write: reported, the others still written.
    writer = BootstrapWriter(out, "pocketmesh:15011", identity)
    (out / "reviews.default").rename(tmp_path / "moved")
    (out / "reviews.default").write_text("a file where the directory should be")
    assert writer.write(workloads) == (
        ["productpage.default", "ratings.default"], ["reviews.default"],
    )  # fmt: skip


def test_serve_refuses_a_bootstrap_dir_whose_sidecars_could_not_dial_xds(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["serve", "--config", str(config), "--bootstrap-dir", str(tmp_path / "out")]
    assert cli([*argv, "--xds-address", "0.0.0.0:15010"]) == 2
    assert "--bootstrap-xds-address" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_sidecar_started_from_its_written_file_gets_its_identity_over_xds_tls(
    config: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bootstraps"
    plane = ControlPlaneThread(config, watch=False, identity=IdentityOptions(xds_tls=True))
    with running(plane.start()):
        # What `serve --bootstrap-dir` does on every reload, with this plane's port
        # (and an admin port of its own: these Envoys share the machine's loopback).
        writer = BootstrapWriter(out, plane.xds_address, plane.plane.identity,
                                 admin_port=free_port())  # fmt: skip
        plane.plane.bootstraps = writer
        assert plane.call(plane.plane.reload)
        path = out / "productpage.default" / "bootstrap.yaml"
        bootstrap = yaml.safe_load(path.read_text())
        envoy = Envoy(bootstrap, tmp_path, "productpage")
        envoy.config_path = path  # run from the written file itself
        with running(envoy.start()):

            def identity() -> bool:
                dump = envoy.config_dump()["configs"]
                secrets = next((c for c in dump if "SecretsConfigDump" in c["@type"]), {}).get(
                    "dynamic_active_secrets", []
                )
                return any(s["name"] == "default" for s in secrets)

            wait_until(identity, timeout=30, what="productpage's SVID over SDS")
            connected = envoy.stats("control_plane.connected_state")
            assert connected == {"control_plane.connected_state": 1}
            # Its admin shows no secret (the client key is redacted), and changes nothing.
            dump = get(envoy.admin + "/config_dump")[1]
            assert '"inline_string": "[redacted]"' in dump
            token = plane.plane.identity.tokens.token("productpage.default")
            assert "PRIVATE KEY" not in dump and token not in dump
            assert post(envoy.admin + "/quitquitquit") == 403
            assert get(envoy.admin + "/ready")[0] == 200


def post(url: str) -> int:
    host, _, path = url.removeprefix("http://").partition("/")
    conn = http.client.HTTPConnection(host, timeout=5)
    try:
        conn.request("POST", "/" + path)
        return conn.getresponse().status
    finally:
        conn.close()
