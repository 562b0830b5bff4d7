"""The sans-process parts of `pocketmesh up` and the demo app: the plan drawn from a
config, the run lock, and the caller identity read from x-forwarded-client-cert."""

from __future__ import annotations

import asyncio
import json
import os
import textwrap
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.harness import free_port
from xds_server.demo_app import DemoApp, Settings, parse_xfcc
from xds_server.galley.loader import load_paths
from xds_server.runner import AlreadyRunning, MeshPlan, PlanError, RunLock, plan_mesh

DEMO = Path(__file__).resolve().parents[2] / "config" / "demo"


def test_demo_plan_runs_an_app_per_workload_where_its_sidecar_forwards() -> None:
    config = load_paths([DEMO]).config
    assert config is not None
    plan = plan_mesh(config, DEMO)
    assert [w.proxy_id for w in plan.workloads] == [w.proxy_id for w in config.workload_entries]
    apps = {a.name: a for a in plan.apps}
    assert apps["productpage"].listen == "127.0.0.1:19080"
    assert apps["productpage"].proxy == "127.0.10.1:15001"
    assert apps["productpage"].calls == ("http://reviews:9080/",)
    assert apps["reviews-v1"].calls == ()
    assert apps["reviews-v2"].calls == apps["reviews-v3"].calls == ("http://ratings:9080/",)
    argv = apps["reviews-v2"].argv(["pocketmesh"])
    assert argv[:2] == ["pocketmesh", "demo-app"]
    assert argv[argv.index("--service") + 1 :][:3] == ["reviews", "--version", "v2"]
    # The entry is the ingress gateway's first server.
    assert plan.entry is not None
    assert plan.entry.url == "http://127.0.10.10:8080/"
    assert plan.entry.curl == "curl http://127.0.10.10:8080/"
    assert "ingressgateway.default" in plan.entry.via


def test_without_a_gateway_the_entry_is_the_sidecar_of_the_app_nobody_calls(
    tmp_path: Path,
) -> None:
    for path in DEMO.glob("*.yaml"):
        if path.name != "gateway.yaml":
            (tmp_path / path.name).write_text(path.read_text())
    config = load_paths([tmp_path]).config
    assert config is not None
    plan = plan_mesh(config, tmp_path)
    assert plan.entry is not None
    assert plan.entry.url == "http://127.0.10.1:9080/"
    assert "productpage.default" in plan.entry.via


def write(tmp_path: Path, workload_extra: str, address: str = "127.0.9.1") -> Path:
    (tmp_path / "mesh.yaml").write_text(
        textwrap.dedent(f"""\
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {{name: web}}
        spec:
          hosts: [web.default.svc.cluster.local]
          ports: [{{number: 8080, name: http, protocol: HTTP}}]
          workloadSelector: {{labels: {{app: web}}}}
        ---
        apiVersion: networking.istio.io/v1
        kind: WorkloadEntry
        metadata:
          name: web
        {textwrap.indent(workload_extra, "  ")}
        spec: {{address: {address}, labels: {{app: web}}}}
        """)
    )
    return tmp_path


def plan_of(path: Path, **kw: bool) -> MeshPlan:
    config = load_paths([path]).config
    assert config is not None
    return plan_mesh(config, path, **kw)


def test_without_a_sidecar_the_app_listens_on_localhost_at_the_service_port(
    tmp_path: Path,
) -> None:
    plan = plan_of(write(tmp_path, "annotations: {pocketmesh.io/app: demo-app}"))
    (app,) = plan.apps
    assert app.listen == "127.0.0.1:8080" and app.proxy == "127.0.9.1:15001"


def test_unknown_app_is_an_error_pointing_at_the_workload_entry(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match=r"mesh\.yaml:\d+: WorkloadEntry default/web: .*'nginx'"):
        plan_of(write(tmp_path, "annotations: {pocketmesh.io/app: nginx}"))


def test_workload_off_this_machine_is_refused_unless_not_local(tmp_path: Path) -> None:
    write(tmp_path, "labels: {}", address="10.0.0.7")
    with pytest.raises(PlanError, match=r"10\.0\.0\.7 is not a loopback address"):
        plan_of(tmp_path)
    assert plan_of(tmp_path, local=False).apps == ()


def test_second_lock_holder_is_told_who_runs(tmp_path: Path) -> None:
    first = RunLock(tmp_path).acquire({"config": "config/demo"})
    try:
        with pytest.raises(AlreadyRunning) as err:
            RunLock(tmp_path).acquire({"config": "other"})
        assert f"pid {os.getpid()}" in str(err.value) and "config/demo" in str(err.value)
    finally:
        first.release()
    assert not (tmp_path / "up.lock").exists()
    # Released: the next one gets it.
    RunLock(tmp_path).acquire({}).release()


def test_stale_lock_of_a_dead_holder_is_taken_over(tmp_path: Path) -> None:
    (tmp_path / "up.lock").write_text(json.dumps({"pid": 123456789, "config": "x"}))
    lock = RunLock(tmp_path).acquire({"config": "mine"})
    try:
        assert lock.stale == {"pid": 123456789, "config": "x"}
        assert json.loads((tmp_path / "up.lock").read_text())["pid"] == os.getpid()
    finally:
        lock.release()


def test_xfcc_gives_the_nearest_hops_identity() -> None:
    value = (
        "By=spiffe://cluster.local/ns/default/sa/gateway;URI=spiffe://cluster.local/ns/x/sa/y,"
        "By=spiffe://cluster.local/ns/default/sa/reviews;"
        'Hash=abc123;Subject="CN=a,O=b;c";URI=spiffe://cluster.local/ns/default/sa/productpage'
    )
    assert parse_xfcc(value) == {
        "by": "spiffe://cluster.local/ns/default/sa/reviews",
        "hash": "abc123",
        "subject": "CN=a,O=b;c",
        "uri": "spiffe://cluster.local/ns/default/sa/productpage",
    }
    assert parse_xfcc("") is None
    assert parse_xfcc("garbage") is None


def test_demo_app_answers_with_caller_headers_and_upstream_failures() -> None:
    dead_proxy = f"127.0.0.1:{free_port()}"  # bound then closed: nothing listens

    async def scenario() -> dict[str, Any]:
        app = DemoApp(
            Settings("reviews", "v2", "reviews-v2", "127.0.0.1:0", dead_proxy, ("http://ratings/",))
        )
        port = await app.start()
        try:
            async with aiohttp.ClientSession() as session:
                headers = {"x-forwarded-client-cert": "By=spiffe://a;URI=spiffe://b"}
                url = f"http://127.0.0.1:{port}/x?y=1"
                async with session.get(url, headers=headers) as resp:
                    assert resp.status == 200
                    return dict(await resp.json())
        finally:
            await app.stop()

    body = asyncio.run(scenario())
    assert (body["app"], body["version"], body["workload"]) == ("reviews", "v2", "reviews-v2")
    assert body["path"] == "/x?y=1"
    assert body["caller"] == {"by": "spiffe://a", "uri": "spiffe://b"}
    assert body["headers"]["x-forwarded-client-cert"] == "By=spiffe://a;URI=spiffe://b"
    (upstream,) = body["upstreams"]
    assert upstream["url"] == "http://ratings/" and upstream["status"] is None
    assert upstream["error"].startswith("ClientProxyConnectionError"), upstream


def test_gateway_for_named_hosts_gets_a_curl_with_the_host_header(tmp_path: Path) -> None:
    for path in DEMO.glob("*.yaml"):
        text = path.read_text()
        if path.name == "gateway.yaml":
            text = text.replace('hosts: ["*"]                      # any Host header',
                                "hosts: [bookinfo.example.com]")  # fmt: skip
            assert "bookinfo.example.com" in text
        (tmp_path / path.name).write_text(text)
    config = load_paths([tmp_path]).config
    assert config is not None
    entry = plan_mesh(config, tmp_path).entry
    assert entry is not None
    assert entry.curl == "curl -H 'Host: bookinfo.example.com' http://127.0.10.10:8080/"
