"""`pocketmesh up` follows the config while it runs: a WorkloadEntry added gets its app
and sidecar before any proxy routes to it; one whose app or labels change has its app
or sidecar restarted while no proxy routes to it; one removed loses them only after
every proxy has stopped routing there. Traffic through the gateway loses no request
meanwhile. A rejected edit is printed located in the terminal, and `status` shows it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.e2e.harness import free_port, get, wait_until
from tests.run.demo_mesh import demo_copy, random_net
from tests.run.up_process import Traffic, running_up

REVIEWS_V4 = """\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: reviews-v4
  namespace: default
  annotations:
    pocketmesh.io/app: demo-app
    pocketmesh.io/calls: http://ratings:9080/
spec:
  address: {net}.6
  labels: {{app: reviews, version: v4}}
  serviceAccount: reviews
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: reviews-v4
  namespace: default
spec:
  workloadSelector:
    labels: {{app: reviews, version: v4}}
  ingress:
  - port: {{number: 9080, protocol: HTTP, name: http}}
    defaultEndpoint: 127.0.0.1:{port}
"""


def chain_failure(answer: tuple[int, str]) -> str | None:
    """Why a gateway answer is a failed request (any hop not 200), else None."""
    status, body = answer
    if status != 200:
        return f"gateway answered {status}: {body[:200]}"
    page = json.loads(body)
    for hop in page["upstreams"]:
        if hop["status"] != 200:
            return f"productpage -> reviews: {hop}"
        for inner in hop["answer"]["upstreams"]:
            if inner["status"] != 200:
                return f"{hop['answer']['workload']} -> ratings: {inner}"
    return None


def reviews_of(answer: tuple[int, str]) -> str:
    return str(json.loads(answer[1])["upstreams"][0]["answer"]["workload"])


def test_workloads_added_and_removed_while_up_runs_lose_no_request(tmp_path: Path) -> None:
    net = random_net()
    config = demo_copy(tmp_path, net)
    # Round robin over every reviews endpoint: a new one gets traffic at once.
    (config / "traffic.yaml").unlink()
    with running_up(tmp_path, [config]) as up:
        text = up.wait_summary()
        url = re.search(r"Open:\s+curl (\S+)", text)
        assert url, text
        gateway = url.group(1)
        with Traffic(lambda: get(gateway), chain_failure) as traffic:
            wait_until(lambda: len(traffic.answers) > 20, timeout=30, what="steady traffic")
            mark = len(up.text())
            extra = config / "reviews-v4.yaml"
            extra.write_text(REVIEWS_V4.format(net=net, port=free_port()))
            up.wait_for(r"^\s+\+ sidecar reviews-v4\.default", timeout=60, since=mark)
            assert re.search(r"^\s+\+ app reviews-v4 ", up.text()[mark:], re.M), up.text()
            wait_until(
                lambda: "reviews-v4" in {reviews_of(a) for a in traffic.answers[-30:]},
                timeout=30,
                what="traffic to reach reviews-v4",
            )
            # Its app changes (no more calls to ratings): restarted while held, no loss.
            mark = len(up.text())
            extra.write_text(
                extra.read_text().replace("    pocketmesh.io/calls: http://ratings:9080/\n", "")
            )
            up.wait_for(r"^\s+↻ app reviews-v4 ", timeout=60, since=mark)
            up.wait_for(r"↻ config generation \d+ applied", timeout=30, since=mark)
            wait_until(
                lambda: any(
                    reviews_of(a) == "reviews-v4"
                    and not json.loads(a[1])["upstreams"][0]["answer"]["upstreams"]
                    for a in traffic.answers[-30:]
                ),
                timeout=30,
                what="reviews-v4 answering without calling ratings",
            )
            # A new label: its bootstrap changes, the sidecar restarts while held, no loss.
            mark = len(up.text())
            extra.write_text(
                extra.read_text().replace(
                    "labels: {app: reviews, version: v4}",
                    "labels: {app: reviews, version: v4, track: canary}",
                )
            )
            up.wait_for(r"^\s+↻ sidecar reviews-v4\.default\s+restarted", timeout=60, since=mark)
            up.wait_for(r"↻ config generation \d+ applied", timeout=30, since=mark)
            seen = len(traffic.answers)
            wait_until(
                lambda: "reviews-v4" in {reviews_of(a) for a in traffic.answers[seen:]},
                timeout=30,
                what="traffic to reach the restarted reviews-v4",
            )
            mark = len(up.text())
            extra.unlink()
            up.wait_for(r"^\s+- sidecar reviews-v4\.default\s+stopped", timeout=60, since=mark)
            after = len(traffic.answers)
            wait_until(lambda: len(traffic.answers) > after + 30, timeout=30, what="more traffic")
            late = {reviews_of(a) for a in traffic.answers[after:]}
        assert "reviews-v4" not in late, late
        assert traffic.failures == [], (traffic.failures[:5], traffic.sent)
        assert traffic.sent > 100


def test_a_rejected_edit_is_printed_located_and_status_shows_it(tmp_path: Path) -> None:
    net = random_net()
    config = demo_copy(tmp_path, net)
    with running_up(tmp_path, [config]) as up:
        up.wait_summary()
        mark = len(up.text())
        workloads = config / "workloads.yaml"
        good = workloads.read_text()
        workloads.write_text(good.replace(f"address: {net}.3", f"address: {net}.300"))
        found = up.wait_for(r"✗ config change .* rejected, 1 error\(s\)", timeout=30, since=mark)
        located = up.wait_for(
            r"workloads\.yaml:\d+: WorkloadEntry default/reviews-v2: spec\.address: .*300",
            timeout=5,
            since=mark,
        )
        assert found and located
        status = subprocess.run(
            [sys.executable, "-m", "xds_server.cli", "status", "--debug-address", up.debug],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert status.returncode == 0, status.stderr
        assert "1 error(s), serving the last good config" in status.stdout
        assert located.group(0) in status.stdout, status.stdout
        # Fixed: applied, and the errors are gone from status.
        mark = len(up.text())
        workloads.write_text(good)
        up.wait_for(r"↻ config generation \d+ applied", timeout=30, since=mark)
        assert get(f"http://{up.debug}/debug/config")[1].count('"errors": []') == 1
