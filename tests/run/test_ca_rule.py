"""One CA location rule for every command: `--ca-dir`, else the running mesh's CA (asked
at the debug address), else `.pocketmesh/ca`. With a control plane running, `bootstrap`
and `ca inspect` need no flag; `bootstrap` refuses to write a bootstrap the server
would refuse (no token, another CA's token, --no-ads), and says why."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from ca import load_ca_dir
from tests.e2e.harness import ControlPlaneThread, free_port, running
from tests.identity.mesh import write_mesh
from tests.run.demo_mesh import random_net
from xds_server.cli import main
from xds_server.commands.locate import ca_dir_for, running_mesh, same_address
from xds_server.identity import DEFAULT_CA_DIR, IdentityOptions
from xds_server.identity.auth import ProxyTokens

NET = random_net()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    root = tmp_path_factory.mktemp("ca-rule")
    config, ca_dir = root / "config", root / "ca"
    config.mkdir()
    write_mesh(config, NET, {"productpage": free_port(), "reviews": free_port(), "ratings": 1})
    plane = ControlPlaneThread(config, identity=IdentityOptions(ca_dir=ca_dir)).start()
    with running(plane):
        yield {
            "plane": plane,
            "config": config,
            "ca_dir": ca_dir,
            "debug": plane.debug_url.removeprefix("http://"),
            "xds": plane.xds_address,
        }


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def bootstrap(mesh: dict[str, object], *extra: str) -> list[str]:
    return [
        "bootstrap", "--workload", "reviews", "--config", str(mesh["config"]),
        "--xds-address", str(mesh["xds"]), "--debug-address", str(mesh["debug"]), *extra,
    ]  # fmt: skip


def token_of(text: str) -> str:
    boot = yaml.safe_load(text)
    (service,) = boot["dynamic_resources"]["ads_config"]["grpc_services"]
    return str(service["initial_metadata"][0]["value"])


def test_the_running_mesh_says_where_its_ca_is(mesh: dict[str, object]) -> None:
    found = running_mesh(str(mesh["debug"]))
    assert found is not None
    assert found.ca_dir == Path(str(mesh["ca_dir"])).resolve()
    assert found.proxy_auth and not found.xds_tls
    assert same_address(found.xds_address, str(mesh["xds"]))
    assert ca_dir_for(None, found) == found.ca_dir
    assert ca_dir_for(Path("/elsewhere"), found) == Path("/elsewhere")  # the flag wins
    dead = f"127.0.0.1:{free_port()}"
    assert running_mesh(dead) is None
    assert ca_dir_for(None, None) == DEFAULT_CA_DIR


def test_bootstrap_finds_the_running_meshs_token_without_flags(
    mesh: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(capsys, *bootstrap(mesh))
    assert code == 0, err
    expected = ProxyTokens.load_or_create(Path(str(mesh["ca_dir"]))).token("reviews.default")
    assert token_of(out) == expected
    # The same CA named explicitly is fine too.
    code, out, err = cli(capsys, *bootstrap(mesh, "--ca-dir", str(mesh["ca_dir"])))
    assert code == 0 and token_of(out) == expected, err


def test_bootstrap_refuses_what_the_server_would_refuse(
    mesh: dict[str, object], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other-ca"
    assert main(["ca", "init", "--dir", str(other)]) == 0
    capsys.readouterr()
    code, out, err = cli(capsys, *bootstrap(mesh, "--ca-dir", str(other)))
    assert code == 1 and out == ""
    assert f"uses the CA in {Path(str(mesh['ca_dir'])).resolve()}, not {other}" in err, err
    code, out, err = cli(capsys, *bootstrap(mesh, "--no-ads"))
    assert code == 1 and out == ""
    assert "requires proxy tokens, which --no-ads bootstraps cannot carry" in err, err


def test_bootstrap_refuses_a_tokenless_bootstrap_for_a_server_that_requires_tokens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config"
    config.mkdir()
    write_mesh(config, NET, {"productpage": free_port(), "reviews": free_port(), "ratings": 1})
    # Its CA only in memory: no token key anywhere on disk.
    plane = ControlPlaneThread(config, identity=IdentityOptions(ca_dir=None)).start()
    with running(plane):
        argv = bootstrap(
            {"config": config, "xds": plane.xds_address,
             "debug": plane.debug_url.removeprefix("http://")}
        )  # fmt: skip
        code, out, err = cli(capsys, *argv)
    assert code == 1 and out == ""
    assert "refused: the pocketmesh server at" in err and "requires proxy tokens" in err, err


def test_bootstrap_without_a_server_says_it_carries_no_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config"
    config.mkdir()
    write_mesh(config, NET, {"productpage": 1, "reviews": 2, "ratings": 3})
    monkeypatch.chdir(tmp_path)  # no .pocketmesh/ca here
    dead = f"127.0.0.1:{free_port()}"
    code, out, err = cli(
        capsys, "bootstrap", "--workload", "reviews", "--config", str(config),
        "--debug-address", dead,
    )  # fmt: skip
    assert code == 0 and yaml.safe_load(out)["node"]["id"] == "reviews.default"
    assert "no token in this bootstrap" in err and "will refuse it" in err, err


def test_ca_inspect_and_status_find_the_running_meshs_ca(
    mesh: dict[str, object], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = load_ca_dir(Path(str(mesh["ca_dir"])))
    svid = ca.issue_svid(("cluster.local", "default", "reviews"))
    pem = tmp_path / "svid.pem"
    pem.write_bytes(svid.cert_chain_pem)
    code, out, err = cli(capsys, "ca", "inspect", str(pem), "--debug-address", str(mesh["debug"]))
    assert code == 0, err
    assert "Chain:        OK" in out, out
    code, out, err = cli(capsys, "status", "--debug-address", str(mesh["debug"]))
    assert code == 0, err
    assert f"mesh CA {Path(str(mesh['ca_dir'])).resolve()} (proxy tokens required)" in out, out
