"""The benchmark harness end to end at a tiny size, so it never rots.

Real processes throughout: pocketmesh and the floor server, proxy workers, and
one real Envoy. No figure is asserted against a time; only that each was measured
and that both servers delivered the same config.
"""

from __future__ import annotations

import json
from pathlib import Path

from xds_server.bench.mesh import MeshSpec, affected_proxies
from xds_server.bench.report import render, render_markdown, write_json
from xds_server.bench.run import BenchOptions, run
from xds_server.cli import build_parser
from xds_server.commands.bench import options_from

TINY = MeshSpec(services=4, endpoints=2, namespaces=2, proxies=6, sidecars=True)


def test_harness_end_to_end(tmp_path: Path) -> None:
    options = BenchOptions(
        meshes=[TINY],
        workers=2,
        envoy_clusters=(20,),
        envoy_runs=1,
        workdir=tmp_path,
        progress=False,
        quiet=0.2,
        timeout=60,
    )
    results = run(options)

    assert [g["protocol"] for g in results["fleet"]] == ["sotw", "delta"]
    expected = len(affected_proxies(TINY))
    for group in results["fleet"]:
        ours, floor = group["pocketmesh"], group["floor"]
        for figures in (ours, floor):
            assert figures["proxies"] == TINY.proxies
            assert figures["initial"]["all_acked_s"] > 0
            assert figures["server_peak_rss_mb"] > 0
            for change in ("route", "endpoint"):
                assert figures[change]["proxies_updated"] >= expected
                assert figures[change]["from_trigger_s"]["max"] > 0
        # Same resources from both servers: the floor is a fair floor.
        assert ours["initial"]["bytes_per_proxy"] > 0
        assert abs(ours["initial"]["bytes_per_proxy"] - floor["initial"]["bytes_per_proxy"]) < (
            0.05 * floor["initial"]["bytes_per_proxy"]
        )
        assert ours["route"]["build_and_publish_s"] > 0

    (envoy,) = results["envoy"]
    assert envoy["eds_clusters"] == 20
    assert envoy["xds_ready_s"] > 0 and envoy["static_ready_s"] > 0

    out = tmp_path / "bench.json"
    write_json(results, out)
    assert json.loads(out.read_text())["machine"]["nproc"] >= 1
    table = render(results)
    assert "initial sync, all ACKed" in table and "EDS clusters" in table
    assert "| initial sync, all ACKed |" in render_markdown(results)


def test_cli_options() -> None:
    args = build_parser().parse_args(
        ["bench", "--preset", "tiny", "--proxies", "3", "--protocol", "delta",
         "--envoy-clusters", "", "--no-floor"]
    )  # fmt: skip
    options = options_from(args)
    assert options.meshes[0].proxies == 3
    assert options.protocols == ("delta",)
    assert options.envoy_clusters == ()
    assert not options.floor
