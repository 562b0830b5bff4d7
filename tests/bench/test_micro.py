"""Micro-benchmarks (pytest-benchmark): translation, snapshot build, config load, SVIDs.

The normal test run passes --benchmark-disable (pyproject addopts): each body runs
once, at a small size, so the benchmarks cannot rot. Measure with
    python -m pytest tests/bench --benchmark-enable -p no:randomly
which runs them at full size (1,000 services). Never a timed assertion here.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ca import CertificateAuthority
from xds_server.bench.mesh import MeshSpec, write
from xds_server.cache.snapshot import MeshSnapshot
from xds_server.galley import parse_cache
from xds_server.galley.loader import load_paths
from xds_server.galley.model import MeshConfig
from xds_server.generators import PushContext, generate

FULL = MeshSpec(services=1000, endpoints=2, namespaces=100, proxies=2000, sidecars=True)
SMALL = MeshSpec(services=20, endpoints=2, namespaces=4, proxies=40, sidecars=True)


@pytest.fixture(scope="module")
def spec(request: pytest.FixtureRequest) -> MeshSpec:
    # addopts has --benchmark-disable; --benchmark-enable on the command line wins.
    enabled = request.config.getoption("benchmark_enable", default=False)
    disabled = request.config.getoption("benchmark_disable", default=True)
    return FULL if enabled or not disabled else SMALL


@pytest.fixture(scope="module")
def config_dir(spec: MeshSpec, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mesh")
    write(spec, path)
    return path


@pytest.fixture(scope="module")
def mesh(config_dir: Path) -> MeshConfig:
    result = load_paths([config_dir])
    assert result.config is not None, result.errors
    return result.config


def _translate(mesh: MeshConfig) -> int:
    ctx = PushContext.build(mesh)
    count = 0
    for we in mesh.workload_entries:
        proxy = ctx.proxy(we.proxy_id)
        assert proxy is not None
        count += sum(len(items) for items in generate(ctx, proxy).values())
    return count


def test_translate_every_proxy(benchmark, mesh: MeshConfig, spec: MeshSpec) -> None:
    """PushContext + every proxy's resources: 1,000 services, 2,000 sidecars, scoped."""
    count = benchmark.pedantic(_translate, args=(mesh,), rounds=3, iterations=1)
    # Each proxy sees its namespace's services: clusters, endpoints, listeners, routes.
    per_ns = spec.services // spec.namespaces
    assert count >= len(mesh.workload_entries) * (2 * per_ns + 2)


def test_snapshot_build(benchmark, mesh: MeshConfig) -> None:
    """Translation + serialization + consistency check: what a reload costs after parsing."""
    snapshot = benchmark.pedantic(MeshSnapshot, args=(mesh, 1), rounds=3, iterations=1)
    assert len(snapshot.proxy_ids) == len(mesh.workload_entries)


def test_load_config(benchmark, config_dir: Path, spec: MeshSpec) -> None:
    """Galley: YAML with line numbers -> validated model, nothing parsed before."""
    result = benchmark.pedantic(
        load_paths, args=([config_dir],), setup=parse_cache.clear, rounds=3, iterations=1
    )
    assert result.config is not None
    assert len(result.config.service_entries) == spec.services


def test_svid_issuance(benchmark) -> None:
    """X.509-SVIDs per second (EC P-256 keys): the target is 2,000/s or more."""
    authority = CertificateAuthority.in_memory()
    names = iter(range(10**9))

    def issue() -> object:
        return authority.issue_svid(f"spiffe://cluster.local/ns/default/sa/sa-{next(names)}")

    svid = benchmark(issue)
    assert svid is not None


@pytest.mark.parametrize("change", ["route", "endpoint"])
def test_reload_after_one_change(
    benchmark, config_dir: Path, spec: MeshSpec, tmp_path: Path, change: str
) -> None:
    """What the scoped change targets pay in process: re-load the edited directory and
    rebuild from the previous snapshot (only the proxies that see svc-0 are rebuilt)."""
    from xds_server.bench import mesh as bench_mesh

    edited = tmp_path / "mesh"
    shutil.copytree(config_dir, edited)
    previous = MeshSnapshot(load_paths([edited]).config_or_raise(), 1)
    getattr(bench_mesh, f"{change}_change")(spec, edited)

    def reload() -> MeshSnapshot:
        return MeshSnapshot(load_paths([edited]).config_or_raise(), 2, previous=previous)

    # One round: a second would find the edited file parsed already.
    snapshot = benchmark.pedantic(reload, rounds=1, iterations=1)
    rebuilt = set(snapshot.proxy_ids) - snapshot.carried
    assert rebuilt == set(bench_mesh.affected_proxies(spec))
