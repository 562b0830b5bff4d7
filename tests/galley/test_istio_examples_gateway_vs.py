"""Istio's own examples for Gateway and VirtualService, each validated on its own.

`istio_examples/gateway/` and `istio_examples/virtual_service/` hold one file per
example of Istio's API reference pages (gateway.proto, virtual_service.proto) and of
its tasks that use these kinds (secure ingress, SNI passthrough, TCP traffic shifting,
egress gateway for HTTPS), each with a `# Follows <page>` line and, below the example,
the context it needs (the ServiceEntries, Secrets, Gateways it names). Every one must
load without an error, warn of no feature it does not enforce, and translate for
every proxy: none refused as unsupported, none that Istio accepts rejected.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from xds_server.galley.loader import load_paths
from xds_server.galley.model import MeshConfig, ObjectMeta, Source, WorkloadEntry
from xds_server.generators import PushContext, generate

HERE = Path(__file__).parent / "istio_examples"
EXAMPLES = sorted([*HERE.glob("gateway/*.yaml"), *HERE.glob("virtual_service/*.yaml")])
# Warnings that only say the context is small (no workload behind a selector).
CONTEXT_WARNINGS = ("selects no WorkloadEntry", "selects no endpoint")


def test_every_page_has_its_examples() -> None:
    names = {p.parent.name for p in EXAMPLES}
    assert names == {"gateway", "virtual_service"}
    assert len([p for p in EXAMPLES if p.name.startswith("ref-")]) >= 29  # 7 + 22 files


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_istio_example_is_accepted_and_translated(path: Path) -> None:
    assert path.read_text().startswith("# Follows "), "name the page the example follows"
    result = load_paths([path])
    assert [str(e) for e in result.errors] == []
    other = [str(w) for w in result.warnings if not any(c in w.message for c in CONTEXT_WARNINGS)]
    assert other == []
    config = with_gateway_workloads(result.config_or_raise())
    ctx = PushContext.build(config)
    for proxy in ctx.proxies:
        generate(ctx, proxy)
    # A gateway proxy for every Gateway: only servers the example leaves unrouted (a TCP
    # server with no tcp route) may be skipped.
    assert [c for c in ctx.conflicts if "no VirtualService has a tcp route" not in c
            and "no server could be built" not in c] == []  # fmt: skip


def with_gateway_workloads(config: MeshConfig) -> MeshConfig:
    """The config plus a workload for each Gateway that selects none (its proxy is built)."""
    added = []
    for i, gateway in enumerate(config.gateways):
        if any(gateway.selects(w.labels) for w in config.workload_entries):
            continue
        meta = ObjectMeta("WorkloadEntry", f"gateway-{i}", gateway.meta.namespace, Source("", 0))
        added.append(WorkloadEntry(meta, f"127.0.99.{i + 1}", labels=dict(gateway.selector)))
    return dataclasses.replace(config, workload_entries=(*config.workload_entries, *added))
