"""`pocketmesh up` as a user runs it: a subprocess on a copy of config/demo, the gateway
URL from its summary answered by the productpage → reviews → ratings chain over mTLS,
a live edit, and after SIGTERM nothing left running: no Envoy, no app, no control
plane, no shm file."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import free_port, get, via_proxy, wait_until
from tests.run.demo_mesh import demo_copy, random_net
from tests.run.up_process import alive, children_of

# Each test module gets its own 127.x block so runs never collide.
NET = random_net()
SPIFFE = "spiffe://cluster.local/ns/default/sa"


def shm_files_of(pids: list[int]) -> set[str]:
    files = set()
    for pid in pids:
        try:
            maps = Path(f"/proc/{pid}/maps").read_text()
        except OSError:
            continue
        files |= set(re.findall(r"/dev/shm/envoy_shared_memory_\S+", maps))
    return files


def shm_in_use() -> set[str]:
    """Envoy shm files some live process still maps."""
    return shm_files_of([int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()])


def shm_files() -> set[str]:
    return {str(p) for p in Path("/dev/shm").glob("envoy_shared_memory_*")}


@pytest.fixture
def up(tmp_path: Path) -> Iterator[dict[str, Any]]:
    config = demo_copy(tmp_path, NET)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    # A lock left by an `up` that died: must be taken over, not obeyed.
    (run_dir / "up.lock").write_text(json.dumps({"pid": 2**22 + 1, "config": "gone"}))
    debug = f"127.0.0.1:{free_port()}"
    argv = [
        sys.executable, "-m", "xds_server.cli", "up", str(config),
        "--run-dir", str(run_dir),
        "--ca-dir", str(tmp_path / "ca"),
        "--xds-address", f"127.0.0.1:{free_port()}",
        "--debug-address", debug,
    ]  # fmt: skip
    out = (tmp_path / "up.out").open("w+")
    shm_before = shm_files()
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        yield {
            "proc": proc,
            "out": tmp_path / "up.out",
            "argv": argv,
            "debug": debug,
            "shm_before": shm_before,
            "config": config,
        }
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                for child in children_of(proc.pid):
                    os.kill(child, signal.SIGKILL)
                proc.kill()
                proc.wait(5)
        out.close()


def wait_for_summary(up: dict[str, Any]) -> str:
    proc: subprocess.Popen[str] = up["proc"]

    def summary() -> str | None:
        assert proc.poll() is None, f"up exited early:\n{up['out'].read_text()}"
        text = up["out"].read_text()
        return text if "Ctrl-C stops everything" in text else None

    try:
        return str(wait_until(summary, timeout=120, interval=0.1, what="the summary of `up`"))
    except AssertionError as err:
        raise AssertionError(f"{err}\n--- up's output:\n{up['out'].read_text()}") from None


def test_up_serves_the_demo_chain_and_sigterm_leaves_nothing(up: dict[str, Any]) -> None:
    proc: subprocess.Popen[str] = up["proc"]
    text = wait_for_summary(up)
    assert "took over a stale lock" in text
    url = re.search(r"Open:\s+curl (\S+)", text)
    assert url, text
    assert url.group(1) == f"http://{NET}.10:8080/", text  # the ingress gateway
    for name in ("ingressgateway", "productpage", "reviews-v1", "reviews-v2", "ratings"):
        assert f"{name}.default" in text

    # The demo's answer: gateway → productpage → reviews (v2 or v3, 50/50) → ratings,
    # every hop over mutual TLS, each app seeing its caller's SPIFFE identity.
    seen: dict[str, Any] = {}
    for _ in range(16):
        status, body = get(url.group(1))
        assert status == 200, body
        page = json.loads(body)
        assert page["app"] == "productpage"
        assert page["caller"]["uri"] == f"{SPIFFE}/ingressgateway", page["caller"]
        (reviews,) = page["upstreams"]
        assert reviews["status"] == 200, reviews
        answer = reviews["answer"]
        assert answer["app"] == "reviews"
        assert answer["caller"]["uri"] == f"{SPIFFE}/productpage"
        # The request id follows the request down the chain.
        assert answer["headers"]["x-request-id"] == page["headers"]["x-request-id"]
        (ratings,) = answer["upstreams"]
        assert ratings["status"] == 200 and ratings["answer"]["app"] == "ratings", ratings
        assert ratings["answer"]["caller"]["uri"] == f"{SPIFFE}/reviews"
        seen[answer["version"]] = answer
    assert set(seen) == {"v2", "v3"}, f"expected the 50/50 split, saw {sorted(seen)}"

    # STRICT mTLS: a plaintext request straight to a sidecar is refused.
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        get(f"http://{NET}.4:9080/")
    # The AuthorizationPolicy: productpage may not call ratings.
    assert via_proxy(f"{NET}.1:15001", "http://ratings:9080/")[0] == 403

    # Editing a file changes the live mesh: all of reviews to v1.
    traffic = up["config"] / "traffic.yaml"
    traffic.write_text(
        traffic.read_text()
        .replace("subset: v2}\n      weight: 50", "subset: v1}\n      weight: 100")
        .replace("subset: v3}\n      weight: 50", "subset: v3}\n      weight: 0")
    )

    def reviews_version() -> str:
        return json.loads(get(url.group(1))[1])["upstreams"][0]["answer"]["version"]

    wait_until(lambda: reviews_version() == "v1", timeout=20, what="reviews v1 after the edit")
    assert {reviews_version() for _ in range(8)} == {"v1"}

    # The operator's view of the same mesh.
    status_out = subprocess.run(
        [sys.executable, "-m", "xds_server.cli", "status", "--debug-address", up["debug"]],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    assert status_out.count("productpage.default") == 1, status_out

    # A second `up` on the same run directory says who holds it and starts nothing.
    second = subprocess.run(up["argv"], capture_output=True, text=True, timeout=60)
    assert second.returncode == 3, second
    assert f"already running (pid {proc.pid}" in second.stderr, second.stderr
    assert "Mesh is up" not in second.stdout

    children = children_of(proc.pid)
    assert len(children) == 12, children  # control plane, 5 apps, 6 Envoys
    shm = shm_files_of(children)

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, up["out"].read_text()
    assert "stopped." in up["out"].read_text()
    assert [pid for pid in children if alive(pid)] == []
    assert [f for f in shm if os.path.exists(f)] == []
    # Other tests' Envoys may run meanwhile: only files no live process maps are leftovers.
    assert shm_files() - up["shm_before"] - shm_in_use() == set()
    assert not (Path(up["argv"][up["argv"].index("--run-dir") + 1]) / "up.lock").exists()


def test_children_die_with_up_even_when_it_is_killed(up: dict[str, Any]) -> None:
    proc: subprocess.Popen[str] = up["proc"]
    wait_for_summary(up)
    children = children_of(proc.pid)
    assert children
    proc.kill()  # no chance to clean up: the kernel's parent-death signal must do it
    proc.wait(10)
    wait_until(
        lambda: not [pid for pid in children if alive(pid)],
        timeout=20,
        what="every child of the killed `up` to exit",
    )


def test_invalid_config_starts_nothing_and_says_where(tmp_path: Path) -> None:
    config = demo_copy(tmp_path, NET)
    workloads = config / "workloads.yaml"
    workloads.write_text(workloads.read_text().replace(f"address: {NET}.3", "address: 300.1"))
    result = subprocess.run(
        [sys.executable, "-m", "xds_server.cli", "up", str(config), "--run-dir", str(tmp_path),
         "--ca-dir", str(tmp_path / "ca")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1, result
    assert re.search(
        r"workloads\.yaml:\d+: WorkloadEntry default/reviews-v2: spec\.address", result.stderr
    ), result.stderr
    assert "nothing started" in result.stderr
    assert not (tmp_path / "logs").exists()
