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
    # One VirtualService per service, routing its host to itself with a 10 s timeout.
    assert len(config.virtual_services) == spec.services
    assert all(vs.http[0].timeout_ms == 10_000 for vs in config.virtual_services)
    assert (tmp_path / "virtualservices.yaml").is_file()
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
    before = load_paths([tmp_path]).config
    assert before is not None
    what = mesh.route_change(spec, tmp_path)
    assert what.startswith("VirtualService ns-0/svc-0")
    mesh.endpoint_change(spec, tmp_path)
    result = load_paths([tmp_path])
    assert result.config is not None, [str(e) for e in result.errors]
    assert not result.warnings, [str(w) for w in result.warnings]
    # The route change edits svc-0's VirtualService and nothing else.
    assert result.config.service_entries == before.service_entries
    vs = {v.meta.name: v for v in result.config.virtual_services}
    old = {v.meta.name: v for v in before.virtual_services}
    assert [n for n in vs if vs[n].http != old[n].http] == ["svc-0"]
    (route,) = vs["svc-0"].http
    assert route.timeout_ms == 5_000
    assert route.retries is not None and route.retries.attempts == 2
    assert route.retries.per_try_timeout_ms == 2_000
    moved = [we for we in result.config.workload_entries if we.address == "10.255.255.254"]
    assert len(moved) == 1
    # Scoped: the proxies that see svc-0 are those of its namespace.
    affected = mesh.affected_proxies(spec)
    assert affected and all(p.endswith("." + spec.namespace_of(0)) for p in affected)
