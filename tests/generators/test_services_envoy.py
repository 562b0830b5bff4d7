"""Envoy accepts what the services and policies fields (issue 14c) generate.

Each field-coverage sample of DestinationRule, ServiceEntry and Sidecar fields added
for Istio's services & policies API is loaded into the coverage mesh; every proxy
whose resources it changes is checked by `envoy --mode validate`. (The traffic each
field shapes is proven through live Envoys in tests/services/.)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from tests.generators import envoy_harness as harness
from tests.generators.test_field_coverage import BASE, DESTINATION_RULE_14C, SERVICES_14C, Sample
from xds_server.galley.loader import load_paths
from xds_server.generators import PushContext, generate

# The coverage mesh without its TLS Secrets (they need a PKI; TLS is proven elsewhere).
MESH = BASE[: BASE.index("---\napiVersion: v1\nkind: Secret")]
SAMPLES = DESTINATION_RULE_14C + SERVICES_14C


def _serialized(ctx: PushContext) -> dict[str, dict[str, dict[str, bytes]]]:
    return {
        proxy.node_id: {
            t: {n: m.SerializeToString(deterministic=True) for n, m in items.items()}
            for t, items in generate(ctx, proxy).items()
        }
        for proxy in ctx.proxies
    }


def _context(folder: Path, extra: str) -> PushContext:
    folder.mkdir(parents=True)
    (folder / "base.yaml").write_text(MESH)
    (folder / "sample.yaml").write_text(extra)
    result = load_paths([folder])
    assert result.config is not None, [str(e) for e in result.errors]
    return PushContext.build(dataclasses.replace(result.config, workload_identity=False))


def _name(sample: Sample) -> str:
    first = yaml.safe_load(sample.docs.split("\n---\n")[0])
    return f"{first['kind']}-{first['metadata']['name']}-{SAMPLES.index(sample)}"


@pytest.mark.parametrize("sample", SAMPLES, ids=_name)
def test_every_changed_proxy_passes_envoy_validate(tmp_path: Path, sample: Sample) -> None:
    base = _serialized(_context(tmp_path / "base", ""))
    ctx = _context(tmp_path / "sample", sample.docs)
    changed = 0
    for proxy in ctx.proxies:
        resources = generate(ctx, proxy)
        serialized = {
            t: {n: m.SerializeToString(deterministic=True) for n, m in items.items()}
            for t, items in resources.items()
        }
        if base.get(proxy.node_id) == serialized:
            continue
        changed += 1
        workdir = tmp_path / proxy.node_id
        workdir.mkdir()
        harness.validate(harness.static_bootstrap(resources, proxy.node_id), workdir)
    assert changed, "the sample changed no proxy's config"
