"""The benchmark's generated meshes are valid Istio config, shaped as documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from xds_server.bench import mesh
from xds_server.galley.loader import load_paths

SPECS = {
    "scoped": mesh.MeshSpec(services=6, endpoints=2, namespaces=3, proxies=15, sidecars=True),
    "unscoped": mesh.MeshSpec(services=6, endpoints=2, namespaces=3, proxies=4, sidecars=False),
    "inline": mesh.MeshSpec(
        services=5, endpoints=2, namespaces=1, proxies=1, sidecars=False,
        network="127.77", inline_endpoints=True,
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(SPECS))
def test_generated_mesh_validates(name: str, tmp_path: Path) -> None:
    spec = SPECS[name]
    mesh.write(spec, tmp_path)
    result = load_paths([tmp_path])
    assert result.config is not None, [str(e) for e in result.errors]
    assert not result.warnings, [str(w) for w in result.warnings]
    config = result.config
    assert len(config.service_entries) == spec.services
    assert len(config.sidecars) == (spec.namespaces if spec.sidecars else 0)
    # Every proxy id names a WorkloadEntry (or the server would send it nothing).
    workloads = {we.proxy_id for we in config.workload_entries}
    assert set(mesh.proxy_ids(spec)) <= workloads
    assert len(mesh.proxy_ids(spec)) == spec.proxies
    if spec.inline_endpoints:
        assert len(workloads) == spec.proxies
        assert all(len(se.endpoints) == spec.endpoints for se in config.service_entries)


def test_changes_validate_and_touch_one_service(tmp_path: Path) -> None:
    spec = SPECS["scoped"]
    mesh.write(spec, tmp_path)
    mesh.route_change(spec, tmp_path)
    mesh.endpoint_change(spec, tmp_path)
    result = load_paths([tmp_path])
    assert result.config is not None, [str(e) for e in result.errors]
    svc0 = next(se for se in result.config.service_entries if se.meta.name == "svc-0")
    assert [p.number for p in svc0.ports] == [mesh.PORT, mesh.PORT + 1]
    moved = [we for we in result.config.workload_entries if we.address == "10.255.255.254"]
    assert len(moved) == 1
    # Scoped: the proxies that see svc-0 are those of its namespace.
    affected = mesh.affected_proxies(spec)
    assert affected and all(p.endswith("." + spec.namespace_of(0)) for p in affected)
