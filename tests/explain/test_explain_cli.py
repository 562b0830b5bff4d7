"""`pocketmesh explain` as a user runs it: offline (`--config`) and against a running
control plane's debug address (`/debug/explain`), text and JSON, and every way to get
it wrong answered with a reason and exit status 1."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import ControlPlaneThread, free_port, get, running
from tests.run.demo_mesh import demo_copy, random_net
from xds_server.cli import main
from xds_server.identity import IdentityOptions

DEMO = Path(__file__).resolve().parents[2] / "config" / "demo"


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["explain", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ControlPlaneThread, Path]]:
    root = tmp_path_factory.mktemp("explain-cli")
    config = demo_copy(root, random_net())
    identity = IdentityOptions(ca_dir=None, proxy_auth=False)
    plane = ControlPlaneThread(config, identity=identity).start()
    with running(plane):
        yield plane, config


def debug(plane: ControlPlaneThread) -> str:
    return plane.debug_url.removeprefix("http://")


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["explain", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "usage: pocketmesh explain" in out and "HOST[:PORT][/PATH]" in out


def test_offline_text_names_the_route_the_rule_and_the_outcome(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = cli(capsys, "productpage", "reviews:9080/", "--config", str(DEMO))
    assert code == 0, out
    assert "Sidecar default/productpage" in out
    assert "route default/reviews.0: route, from VirtualService default/reviews http[0]" in out
    assert "outbound|9080|v2|reviews.default.svc.cluster.local  50%" in out
    assert "TLS ISTIO_MUTUAL (mutual TLS)" in out
    assert out.rstrip().splitlines()[-1].startswith("Outcome: routed: to outbound|9080|v2|")


def test_online_json_is_the_running_planes_answer(
    capsys: pytest.CaptureFixture[str], plane: tuple[ControlPlaneThread, Path]
) -> None:
    running_plane, config = plane
    code, out, err = cli(capsys, "productpage", "ratings:9080/", "-o", "json",
                         "--debug-address", debug(running_plane))  # fmt: skip
    assert code == 0, err
    answer = json.loads(out)
    assert answer["source"].startswith("the running control plane, config generation 1 at ")
    assert answer["destination"]["outcome"]["result"] == "403"
    code, offline, _ = cli(capsys, "productpage", "ratings:9080/", "-o", "json",
                           "--config", str(config))  # fmt: skip
    assert json.loads(offline)["destination"] == answer["destination"]


def test_workload_only(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "ratings.default", "--config", str(DEMO))
    assert code == 0
    assert re.search(r"default/ratings \(\S*config/demo/security.yaml:\d+\): ALLOW", out), out
    assert "Request:" not in out
    assert "9080 HTTP -> 127.0.0.1:19083: STRICT (Envoy: STRICT)" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["reviews-v9", "--config", str(DEMO)], "did you mean"),
        (["productpage", "reviews", "-H", "no-colon", "--config", str(DEMO)], "NAME: VALUE"),
        (["productpage", "ftp://reviews", "--config", str(DEMO)], "scheme"),
        (["productpage", "--config", "config/nowhere"], "no such config path"),
    ],
)
def test_mistakes_are_answered_with_a_reason(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = cli(capsys, *argv)
    assert code == 1 and not out
    assert err.startswith("pocketmesh explain: ") and message in err, err


def test_an_invalid_config_is_reported_with_its_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "bad.yaml").write_text(
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: x}\n"
        "spec: {address: 127.0.0.300}\n"
    )
    code, _, err = cli(capsys, "x", "--config", str(tmp_path))
    assert code == 1 and "bad.yaml:4: WorkloadEntry default/x: spec.address" in err, err


def test_online_mistakes(
    capsys: pytest.CaptureFixture[str], plane: tuple[ControlPlaneThread, Path]
) -> None:
    address = debug(plane[0])
    code, _, err = cli(capsys, "nobody", "--debug-address", address)
    assert code == 1 and "no proxy 'nobody'" in err and "HTTP" not in err, err
    nowhere = f"127.0.0.1:{free_port()}"
    code, _, err = cli(capsys, "productpage", "--debug-address", nowhere)
    assert code == 1 and "cannot reach" in err and "--config" in err, err
    status, body = get(plane[0].debug_url + "/debug/explain")
    assert status == 400 and "proxy= is required" in body
    status, body = get(plane[0].debug_url + "/debug/explain?proxy=productpage&dest=ftp://x")
    assert status == 400 and "scheme" in body
