"""The chaos scenarios at CI size (`pocketmesh bench --chaos --small`): real Envoys
through a `kill -9` of the control plane and through live edits, hostile xDS clients
beside a fleet, and the memory a huge config leaves. Targets that are not times are
checked here: no failed request, no version or certificate changed, a clear status for
every bad client.
`pocketmesh bench --chaos` runs them at full size, plus the SVID-expiry scenarios
(`outlive`, `pause`: a minute each), and reports every figure (docs/faults.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from xds_server.bench import chaos
from xds_server.cli import main

pytestmark = pytest.mark.chaos


def test_kill_9_and_restart_under_traffic_loses_nothing(tmp_path: Path) -> None:
    figures = chaos.restart(tmp_path, outage=2.0)
    for phase in ("requests_before", "requests_during_outage", "requests_after_restart"):
        assert figures[phase]["sent"] > 0, phase
        assert figures[phase]["failed"] == 0, (phase, figures[phase])
    assert figures["versions_changed"] == []
    assert figures["certificates_changed"] == []
    assert figures["envoy_config_updates_across_restart"] == 0
    assert figures["svids_issued_after_restart"] == 0
    assert figures["svids_reused_after_restart"] == 3


def test_live_edits_under_traffic_lose_nothing(tmp_path: Path) -> None:
    figures = chaos.edits(tmp_path, count=20, seconds=4.0)
    requests = figures["requests_during_and_after"]
    assert requests["sent"] > 0 and requests["failed"] == 0, requests
    assert figures["config_generations_served"] >= 1
    assert figures["config_errors"] == []


def test_hostile_clients_get_clear_statuses(tmp_path: Path) -> None:
    figures = chaos_clients_hostile(tmp_path)
    statuses = figures["statuses"]
    assert statuses["undecodable bytes"].startswith("INVALID_ARGUMENT")
    assert statuses["a type it does not serve"].startswith("INVALID_ARGUMENT")
    assert statuses["no node id"].startswith("INVALID_ARGUMENT")
    assert statuses["a huge node id"].startswith("INVALID_ARGUMENT")
    assert statuses["100k names"].startswith("RESOURCE_EXHAUSTED")
    assert figures["nack_forever_responses_received"] <= 2  # the config, then one change
    for run in ("route_change_without_hostile_clients", "route_change_with_hostile_clients"):
        assert figures[run]["proxies_updated"] >= 1
    assert figures["server_log_longest_line_bytes"] < 4096


def chaos_clients_hostile(workdir: Path) -> dict:
    from xds_server.bench import chaos_clients

    return chaos_clients.hostile(workdir, small=True)


def test_bench_chaos_command_writes_every_figure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "chaos.json"
    markdown = tmp_path / "chaos.md"
    args = ["bench", "--chaos", "memory", "--small", "--out", str(out), "--markdown", str(markdown)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "**memory**" in text and "rss_mb_small_config" in text
    assert '"scenario": "memory"' in out.read_text()
    assert markdown.read_text() in text
    assert main(["bench", "--chaos", "nonsense"]) == 2
