"""`pocketmesh status` and `pocketmesh config-dump` against a live server with real
Envoys: SYNCED rows, a proxy in ERROR with Envoy's NACK message, dumps in JSON and YAML."""

from __future__ import annotations

import base64
import itertools
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.e2e.harness import (
    ControlPlaneThread,
    RouteNacks,
    free_port,
    get,
    running,
    sidecar,
    start_all,
    wait_until,
)
from tests.run.demo_mesh import demo_copy, random_net
from xds_server.cli import main
from xds_server.galley.loader import load_paths
from xds_server.identity import IdentityOptions

NET = random_net()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("status")
    config = demo_copy(root, NET)
    injector = RouteNacks("productpage.default")  # armed: Envoy NACKs its routes
    # With workload identities, as `serve` runs by default: SDS shows in status too.
    identity = IdentityOptions(ca_dir=None, proxy_auth=False)
    plane = ControlPlaneThread(config, transform=injector, identity=identity).start()
    loaded = load_paths([config]).config
    assert loaded is not None
    envoys = [
        sidecar(loaded.workload(name), plane.xds_address, root)  # type: ignore[arg-type]
        for name in ("productpage", "reviews-v1")
    ]
    with running(plane, *envoys):
        start_all(envoys)
        yield {"plane": plane, "injector": injector, "debug": plane.debug_url[len("http://") :]}


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def rows(out: str) -> dict[str, list[str]]:
    """The status table as {proxy: [CDS, LDS, EDS, RDS, SDS] cells}."""
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("NAME"))
    table = {}
    columns = ("CDS", "LDS", "EDS", "RDS", "SDS", "CONNECTED")
    starts = [lines[header].index(c) for c in columns]
    for line in lines[header + 1 :]:
        if not line.strip():
            break
        cells = [line[a:b].strip() for a, b in itertools.pairwise(starts)]
        table[line.split()[0]] = cells
    return table


def syncz_state(mesh: dict[str, Any], proxy: str, type_short: str) -> str | None:
    for conn in json.loads(get(mesh["plane"].debug_url + "/debug/syncz")[1]):
        if conn["proxy"] == proxy:
            return conn["types"].get(type_short, {}).get("state")
    return None


def test_status_shows_every_proxy_synced(mesh: dict[str, Any], capsys: Any) -> None:
    wait_until(
        lambda: all(
            syncz_state(mesh, p, t) == "SYNCED"
            for p in ("productpage.default", "reviews-v1.default")
            for t in ("cluster", "listener", "endpoint", "route", "secret")
        ),
        timeout=10,
        what="both proxies SYNCED",
    )
    code, out, _ = cli(capsys, "status", "--debug-address", mesh["debug"])
    assert code == 0
    table = rows(out)
    assert set(table) == {"productpage.default", "reviews-v1.default"}, out
    for proxy, cells in table.items():
        for cell in cells[:5]:  # CDS, LDS, EDS, RDS, SDS
            state, version = cell.split()
            assert state == "SYNCED" and len(version) == 8, (proxy, out)
    assert "NACK" not in out
    code, out, _ = cli(capsys, "status", "--debug-address", mesh["debug"], "-o", "json")
    assert code == 0
    assert {p["proxy"] for p in json.loads(out)["proxies"]} == set(table)


def test_status_shows_a_nacking_proxy_in_error_with_envoys_message(
    mesh: dict[str, Any], capsys: Any
) -> None:
    plane, injector = mesh["plane"], mesh["injector"]
    try:
        injector.armed = True
        assert plane.call(plane.plane.reload)
        wait_until(
            lambda: syncz_state(mesh, "productpage.default", "route") == "ERROR",
            timeout=10,
            what="productpage to NACK its routes",
        )
        code, out, _ = cli(capsys, "status", "--debug-address", mesh["debug"])
        assert code == 0
        table = rows(out)
        assert table["productpage.default"][3].startswith("ERROR "), out
        assert table["reviews-v1.default"][3].startswith("SYNCED "), out
        nack = next(c for c in json.loads(get(plane.debug_url + "/debug/syncz")[1])
                    if c["proxy"] == "productpage.default")["types"]["route"]["nack"]  # fmt: skip
        assert nack and nack in out, out  # Envoy's message, verbatim
        assert "productpage.default route: rejected version" in out
    finally:
        injector.armed = False
    plane.call(plane.plane.reload)
    wait_until(
        lambda: syncz_state(mesh, "productpage.default", "route") == "SYNCED",
        timeout=10,
        what="SYNCED again after the fix",
    )
    assert "NACK" not in cli(capsys, "status", "--debug-address", mesh["debug"])[1]


def test_config_dump_json_yaml_and_one_type(mesh: dict[str, Any], capsys: Any) -> None:
    code, out, _ = cli(
        capsys, "config-dump", "productpage.default", "--debug-address", mesh["debug"]
    )
    assert code == 0
    dump = json.loads(out)
    assert dump["proxy"] == "productpage.default"
    listeners = {r["name"] for r in dump["resources"]["listener"]}
    assert f"{NET}.1_15001" in listeners and f"{NET}.1_9080" in listeners, listeners
    clusters = {r["name"] for r in dump["resources"]["cluster"]}
    assert "outbound|9080||reviews.default.svc.cluster.local" in clusters, clusters

    code, out, _ = cli(
        capsys, "config-dump", "productpage.default", "--type", "route", "-o", "yaml",
        "--debug-address", mesh["debug"],
    )  # fmt: skip
    assert code == 0
    dump = yaml.safe_load(out)
    assert list(dump["resources"]) == ["route"]
    assert "15001" in {r["name"] for r in dump["resources"]["route"]}


def test_config_dump_redacts_private_keys(mesh: dict[str, Any], capsys: Any) -> None:
    code, out, _ = cli(
        capsys, "config-dump", "productpage.default", "--type", "secret",
        "--debug-address", mesh["debug"],
    )  # fmt: skip
    assert code == 0
    secrets = {r["name"]: r["resource"] for r in json.loads(out)["resources"]["secret"]}
    assert {"default", "ROOTCA"} <= set(secrets), secrets
    cert = secrets["default"]["tls_certificate"]
    assert cert["private_key"] == "[redacted]"
    assert b"BEGIN CERTIFICATE" in base64.b64decode(cert["certificate_chain"]["inline_bytes"])
    blobs = re.findall(r'"inline_bytes": "([^"]+)"', out)
    assert blobs and not any(b"PRIVATE KEY" in base64.b64decode(b) for b in blobs)


def test_operator_commands_explain_what_is_wrong(mesh: dict[str, Any], capsys: Any) -> None:
    code, _, err = cli(capsys, "config-dump", "nosuch.default", "--debug-address", mesh["debug"])
    assert code == 1 and "nothing for proxy 'nosuch.default'" in err
    unused = f"127.0.0.1:{free_port()}"  # bound then closed: nothing listens there
    code, _, err = cli(capsys, "status", "--debug-address", unused)
    assert code == 1 and "cannot reach the pocketmesh debug address" in err


def test_status_escapes_what_a_client_sent() -> None:
    """A node id and a NACK message are a client's words: a terminal escape or a newline
    in them must not reach the operator's terminal as such."""
    from xds_server.commands.status import render_status

    nack = "bad route\n\x1b[2J\x1b[31mforged line" + "x" * 10_000
    streams = [
        {
            "proxy": "evil\x1b]0;title\x07.default",
            "stream": 1,
            "delta": False,
            "connected_seconds": 1.0,
            "types": {
                "route": {"state": "ERROR", "sent_version": "b", "acked_version": "a", "nack": nack}
            },
        }
    ]
    out = render_status(streams, {"generation": 1, "errors": [], "config_dir": "config/demo"})
    assert "\x1b" not in out and "\x07" not in out
    assert "\\x1b[2J" in out and "forged line" in out
    assert "\nforged" not in out and "characters in all" in out
    assert len(out) < 6_000


def test_status_says_what_a_broken_start_serves_and_how_proxies_authenticate() -> None:
    from xds_server.commands.status import render_status

    error = "config/demo/x.yaml:3: ServiceEntry default/x: spec.ports[0].number: ..."
    broken = {"generation": 0, "errors": [error], "config_dir": "config/demo",
              "ca_dir": "/ca", "proxy_auth": True, "xds_tls": True}  # fmt: skip
    out = render_status([], broken)
    assert "1 error(s), no valid config yet: proxies are sent nothing" in out, out
    assert "last good" not in out and error in out
    assert "mesh CA /ca (client certificates required)" in out
    later = {**broken, "generation": 3, "xds_tls": False}
    out = render_status([], later)
    assert "serving the last good config" in out
    assert "mesh CA /ca (proxy tokens required)" in out
