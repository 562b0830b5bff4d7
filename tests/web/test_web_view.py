"""The web view in headless Chromium against `pocketmesh up` running the demo with real
Envoys: every workload, live traffic on the edges, the 50/50 split's weights, locks
on mutual TLS, a deny mark where the AuthorizationPolicy refuses productpage, and a
config error with its file and line; then the push that fixed it, ACKed by every
proxy. Screenshots (wide and narrow) go to test-artifacts/web/."""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.harness import get, via_proxy, wait_until
from tests.web import browser
from tests.web.up_mesh import ARTIFACTS, Traffic, UpMesh

NET = "127.0.151"
WORKLOADS = {
    "ingressgateway.default",
    "productpage.default",
    "ratings.default",
    "reviews-v1.default",
    "reviews-v2.default",
    "reviews-v3.default",
}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpMesh]:
    up = UpMesh(tmp_path_factory.mktemp("web"), NET)
    try:
        yield up.start()
    finally:
        up.stop()


@pytest.fixture(scope="module")
def page(mesh: UpMesh, tmp_path_factory: pytest.TempPathFactory) -> Iterator[browser.Chromium]:
    with browser.page_at(f"http://{mesh.debug}/", tmp_path_factory.mktemp("chromium")) as page:
        yield page


def shoot(page: browser.Chromium, name: str, width: int) -> None:
    path = page.screenshot(ARTIFACTS / name, width=width)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, path


def state(mesh: UpMesh) -> dict[str, Any]:
    return dict(json.loads(get(f"http://{mesh.debug}/ui/state")[1]))


def edge_label(page: browser.Chromium, source: str, target: str) -> str:
    return str(
        page.evaluate(
            f"""(() => {{
              const l = document.querySelector(
                '.edge-label[data-source="{source}"][data-target="{target}"] text');
              return l ? l.textContent : "";
            }})()"""
        )
    )


def rps(label: str) -> float:
    match = re.match(r"([0-9.]+) rps", label)
    return float(match.group(1)) if match else 0.0


def test_the_page_draws_every_workload_and_the_traffic_that_flows(
    mesh: UpMesh, page: browser.Chromium
) -> None:
    nodes = page.wait_for(
        "(() => { const n = [...document.querySelectorAll('.node')].map(n => n.dataset.node);"
        f" return n.length >= {len(WORKLOADS)} ? n : null; }})()",
        what="every workload drawn",
    )
    assert set(nodes) == WORKLOADS
    # Nothing is served from elsewhere: the page and its script come from the debug address.
    sources = page.evaluate(
        "[...document.querySelectorAll('script[src], link[href]')].map(e => e.src || e.href)"
    )
    assert sources and all(s.startswith(f"http://{mesh.debug}/") for s in sources), sources

    # productpage may not call ratings (AuthorizationPolicy default/ratings): 403.
    assert via_proxy(f"{NET}.1:15001", "http://ratings:9080/")[0] == 403
    with Traffic(mesh.gateway) as traffic:
        label = wait_until(
            lambda: (lambda t: t if rps(t) > 0 else None)(
                edge_label(page, "productpage.default", "reviews-v2.default")
            ),
            timeout=40,
            interval=0.3,
            what="live requests on productpage → reviews-v2",
        )
        assert re.fullmatch(r"[0-9.]+ rps · 0% 5xx", label), label
        for source, target in [
            ("ingressgateway.default", "productpage.default"),
            ("productpage.default", "reviews-v3.default"),
            ("reviews-v2.default", "ratings.default"),
        ]:
            page.wait_for(
                f"""(() => {{ const l = document.querySelector(
                  '.edge-label[data-source="{source}"][data-target="{target}"] text');
                  return l && parseFloat(l.textContent) > 0; }})()""",
                what=f"live requests on {source} → {target}",
                timeout=20,
            )
        # The 50/50 split of the demo's VirtualService, by each arrow into reviews.
        for target in ("reviews-v2.default", "reviews-v3.default"):
            weight = page.evaluate(
                f"""document.querySelector(
                  '.weight[data-source="productpage.default"][data-target="{target}"] text')
                  ?.textContent"""
            )
            assert weight == "50%", (target, weight)
        # mTLS everywhere inside the mesh: a lock on every edge between proxies.
        locks = page.evaluate(
            """[...document.querySelectorAll('.edge-label')]
                 .filter(l => l.dataset.source !== 'clients')
                 .map(l => [l.dataset.source, l.dataset.target, !!l.querySelector('.lock-icon')])"""
        )
        assert locks and all(lock for _, _, lock in locks), locks
        # The request the policy refused is marked, and names the policy.
        deny = page.wait_for(
            "document.querySelector('.deny title')?.textContent",
            what="a deny mark on productpage → ratings",
        )
        assert "default/ratings" in deny, deny
        denied = [
            e
            for e in state(mesh)["mesh"]["edges"]
            if e["denied"] and e["target"] == "ratings.default"
        ]
        assert [e["source"] for e in denied] == ["productpage.default"], denied
        # The page agrees with what Envoy counted: requests flowed while we looked.
        assert traffic.statuses.get(200, 0) > 0, traffic.statuses
        shoot(page, "mesh-wide.png", 1280)
        shoot(page, "mesh-narrow.png", 390)
        page.viewport(1280, 900)
    # Per proxy: all five types SYNCED, and the SVID each serves (no key anywhere).
    rows = page.evaluate(
        """[...document.querySelectorAll('tr[data-proxy]')].map(r => [
             r.dataset.proxy,
             [...r.querySelectorAll('.state')].map(s => s.textContent),
             r.querySelector('.svid').textContent])"""
    )
    assert {proxy for proxy, _, _ in rows} == WORKLOADS
    for proxy, states, svid in rows:
        assert states == ["SYNCED"] * 5, (proxy, states)
        assert "spiffe://cluster.local/ns/default/sa/" in svid and "serial" in svid, svid
    assert "PRIVATE KEY" not in get(f"http://{mesh.debug}/ui/state")[1]


def test_a_config_error_shows_with_its_file_and_line_then_the_fix_is_pushed(
    mesh: UpMesh, page: browser.Chromium
) -> None:
    traffic = mesh.config / "traffic.yaml"
    good = traffic.read_text()
    traffic.write_text(good.replace("subset: v3}", "subset: v9}"))  # no such subset
    error = page.wait_for(
        "document.querySelector('#config-errors li')?.textContent",
        what="the config error on the page",
        timeout=20,
    )
    assert "traffic.yaml:" in error and "v9" in error, error
    assert page.evaluate("document.querySelector('#alert-config') !== null")
    pushes = state(mesh)["pushes"]
    assert pushes[0]["error"].startswith("1 error: still serving generation 1"), pushes[0]
    shoot(page, "config-error.png", 1280)

    # The fix: all of reviews to v1. The push reaches the proxies that route to reviews.
    traffic.write_text(
        good.replace("subset: v2}\n      weight: 50", "subset: v1}\n      weight: 100").replace(
            "subset: v3}\n      weight: 50", "subset: v3}\n      weight: 0"
        )
    )
    page.wait_for(
        "document.querySelector('#config-errors') === null"
        " && document.body.dataset.generation === '2'",
        what="the error gone and generation 2 served",
        timeout=20,
    )

    def converged() -> dict[str, Any] | None:
        latest = state(mesh)["pushes"][0]
        done = latest["generation"] == 2 and latest["targets"] and not latest["pending"]
        return latest if done else None

    push = wait_until(converged, timeout=20, what="generation 2 ACKed by every proxy it reached")
    assert push["converged"] == push["targets"] >= 5, push  # every sidecar sees reviews
    assert push["last_ack_seconds"] is not None and "traffic.yaml" in push["what"], push
    text = page.wait_for(
        "document.querySelector('.pushes li .result')?.textContent.includes('ACKed')"
        " && document.querySelector('.pushes li').textContent",
        what="the push on the page",
    )
    assert f"{push['targets']}/{push['targets']} proxies ACKed in" in text, text
    shoot(page, "pushed.png", 1280)


def test_the_page_needs_nothing_from_elsewhere(mesh: UpMesh) -> None:
    host, port = mesh.debug.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        html = response.read().decode()
        policy = response.getheader("Content-Security-Policy") or ""
    finally:
        conn.close()
    assert "default-src 'self'" in policy and "script-src 'self'" in policy, policy
    assert not re.search(r"""(src|href)=["']https?://""", html), html
    for path in ("/ui/app.js", "/ui/style.css", "/ui/icon.svg"):
        status, body = get(f"http://{mesh.debug}{path}")
        urls = set(re.findall(r"https?://[^\s\"'`]+", body))
        assert status == 200 and urls <= {"http://www.w3.org/2000/svg"}, (path, urls)
