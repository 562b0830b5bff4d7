"""A NACK on the page: Envoy's message verbatim under the proxy's ERROR state, the alert
at the top, and the push that caused it counted as rejected. Sidecars on random admin
ports: the page finds their stats through the port their node metadata names."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.harness import get, wait_until
from tests.web import browser
from tests.web.inproc_mesh import Mesh, nack_mesh
from tests.web.up_mesh import ARTIFACTS

NET = "127.0.152"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with nack_mesh(tmp_path_factory.mktemp("nack"), NET, ("productpage", "reviews-v1")) as m:
        yield m


@pytest.fixture(scope="module")
def page(mesh: Mesh, tmp_path_factory: pytest.TempPathFactory) -> Iterator[browser.Chromium]:
    with browser.page_at(mesh.plane.debug_url + "/", tmp_path_factory.mktemp("chromium")) as page:
        yield page


def ui_state(mesh: Mesh) -> dict[str, Any]:
    return dict(json.loads(get(mesh.plane.debug_url + "/ui/state")[1]))


def test_the_admin_port_a_proxy_announces_is_where_its_stats_are_read(
    mesh: Mesh, page: browser.Chromium
) -> None:
    page.wait_for("document.querySelectorAll('tr[data-proxy]').length === 2", what="both rows")

    def polled() -> list[dict[str, Any]] | None:
        proxies = ui_state(mesh)["proxies"]
        return proxies if all(p["admin"] and not p["stats_error"] for p in proxies) else None

    proxies = wait_until(polled, timeout=15, what="both proxies' admin endpoints polled")
    for proxy in proxies:
        envoy = mesh.envoys[proxy["proxy"]]
        assert envoy.admin == "http://" + proxy["admin"], (envoy.admin, proxy["admin"])
        assert not envoy.admin.endswith(":15000")


def test_a_nack_shows_envoys_message_under_the_proxys_error(
    mesh: Mesh, page: browser.Chromium
) -> None:
    try:
        mesh.nack(True)
        text = page.wait_for(
            """(() => {
              const row = document.querySelector('tr[data-proxy="productpage.default"]');
              const rds = row && row.querySelector('.state[data-type="RDS"]');
              const next = row && row.nextElementSibling;
              const box = next && next.querySelector('.nack-box');
              return rds && rds.textContent === 'ERROR' && box ? box.textContent : null;
            })()""",
            what="productpage's RDS in ERROR with its NACK",
        )
        (nack,) = [
            c["types"]["route"]["nack"] for c in mesh.syncz() if c["proxy"] == "productpage.default"
        ]
        assert nack and nack in text, (nack, text)  # Envoy's words, verbatim
        assert text.startswith("RDS rejected version"), text
        alert = page.evaluate("document.querySelector('#alert-nacks')?.textContent")
        assert alert and "productpage.default RDS" in alert and nack in alert, alert
        others = page.evaluate(
            """[...document.querySelectorAll('tr[data-proxy="reviews-v1.default"] .state')]
                 .map(s => s.textContent)"""
        )
        assert others == ["SYNCED"] * 5, others
        push = wait_until(
            lambda: (lambda r: r if r["rejected"] and not r["pending"] else None)(
                ui_state(mesh)["pushes"][0]
            ),
            timeout=10,
            what="the push counted as rejected",
        )
        assert push["trigger"] == "debugtrigger" and push["rejected"] == 1, push
        page.wait_for(
            "document.querySelector('.pushes li .result')?.textContent.includes('1 NACKed')",
            what="the push shown as NACKed",
        )
        path = page.screenshot(ARTIFACTS / "nack.png", width=1280)
        assert path.read_bytes()[:4] == b"\x89PNG"
    finally:
        mesh.nack(False)
    page.wait_for(
        "document.querySelector('#alert-nacks') === null"
        " && document.querySelectorAll('.state.ERROR').length === 0",
        what="the NACK gone after the fix",
    )
