"""deploy/grafana's dashboard queries only metrics /metrics exposes, under the names it
exposes them (istiod's without `_total`, prometheus_client's with it)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from xds_server import metrics

DASHBOARD = (
    Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "pocketmesh-control-plane.json"
)
NAME = re.compile(r"\b((?:pilot|citadel|pocketmesh)_[a-z0-9_]+)")


def exposed() -> set[str]:
    import xds_server.identity.metrics  # noqa: F401  (registers pocketmesh_svids_issued)

    names = {c.name for c in metrics._exact}
    for family in metrics.registry.collect():
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + s for s in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
    return names


def exprs(panels: list[dict[str, Any]]) -> list[str]:
    found = []
    for panel in panels:
        found += [t["expr"] for t in panel.get("targets", [])]
        found += exprs(panel.get("panels", []))
    return found


def test_every_query_names_an_exposed_metric() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = exprs(dashboard["panels"])
    assert len(queries) >= 15
    available = exposed()
    used = {name for q in queries for name in NAME.findall(q)}
    assert used - available == set(), sorted(available)
    # The istiod metrics the dashboard is for are all on it.
    for name in (
        "pilot_xds",
        "pilot_proxy_convergence_time_bucket",
        "pilot_xds_pushes",
        "pilot_total_xds_rejects",
        "citadel_server_root_cert_expiry_timestamp",
    ):
        assert name in used, name


def test_panels_do_not_overlap_and_use_the_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["templating"]["list"][0]["name"] == "datasource"
    cells: set[tuple[int, int]] = set()
    ids = set()
    for panel in dashboard["panels"]:
        ids.add(panel["id"])
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24, panel["title"]
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not mine & cells, panel["title"]
        cells |= mine
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
    assert len(ids) == len(dashboard["panels"])
