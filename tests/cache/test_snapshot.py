"""Snapshots: built once per config change, shared across proxies, content-versioned."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tests.generators.factory import bookinfo
from xds_server import xds_types as T
from xds_server.cache.snapshot import InconsistentSnapshot, MeshSnapshot, check_consistency
from xds_server.cache.store import SnapshotCache
from xds_server.galley.model import MeshConfig

PROXIES = ("productpage-v1.default", "reviews-v1.default")


def versions(snapshot: MeshSnapshot, node_id: str) -> dict[str, dict[str, str]]:
    view = snapshot.view(node_id)
    return {t: {n: r.version for n, r in view.resources(t).items()} for t in T.PUSH_ORDER}


@pytest.fixture
def mesh() -> MeshConfig:
    return bookinfo()


def test_shared_resources_are_one_object_serialized_once(mesh: MeshConfig) -> None:
    snapshot = MeshSnapshot(mesh, 1)
    a, b = (snapshot.view(p) for p in PROXIES)
    shared = set(a.resources(T.CLUSTER)) & set(b.resources(T.CLUSTER))
    outbound = {n for n in shared if n.startswith("outbound|")}
    assert outbound
    for name in outbound:
        assert a.resources(T.CLUSTER)[name] is b.resources(T.CLUSTER)[name]
    for name in a.resources(T.ENDPOINT):
        assert a.resources(T.ENDPOINT)[name] is b.resources(T.ENDPOINT)[name]
    distinct = {
        id(r)
        for node_id in snapshot.proxy_ids
        for t in T.PUSH_ORDER
        for r in snapshot.view(node_id).resources(t).values()
    }
    assert snapshot.serialized == len(distinct)


def test_same_config_gives_same_versions_after_a_restart(mesh: MeshConfig) -> None:
    first, second = MeshSnapshot(mesh, 1), MeshSnapshot(mesh, 9)
    for node_id in PROXIES:
        assert versions(first, node_id) == versions(second, node_id)


def test_endpoint_only_change_changes_only_endpoints_for_other_proxies(mesh: MeshConfig) -> None:
    before = MeshSnapshot(mesh, 1)
    workloads = tuple(
        dataclasses.replace(w, weight=7) if w.meta.name == "reviews-v2" else w
        for w in mesh.workload_entries
    )
    after = MeshSnapshot(dataclasses.replace(mesh, workload_entries=workloads), 2)
    old, new = versions(before, PROXIES[0]), versions(after, PROXIES[0])
    changed = {t for t in T.PUSH_ORDER if old[t] != new[t]}
    assert changed == {T.ENDPOINT}


def test_unknown_proxy_gets_an_empty_view(mesh: MeshConfig) -> None:
    view = MeshSnapshot(mesh, 1).view("nobody.default")
    assert all(not view.resources(t) for t in T.PUSH_ORDER)


def test_inconsistent_config_is_never_published(mesh: MeshConfig) -> None:
    def drop_endpoints(node_id: str, generated: dict) -> None:
        generated[T.ENDPOINT].clear()

    cache = SnapshotCache()
    cache.update(mesh)
    good = cache.snapshot
    cache.transform = drop_endpoints
    with pytest.raises(InconsistentSnapshot, match="has no endpoints"):
        cache.update(mesh)
    assert cache.snapshot is good


def test_consistency_check_names_the_missing_route_config(mesh: MeshConfig) -> None:
    view = MeshSnapshot(mesh, 1).view(PROXIES[0])
    by_type = {t: dict(view.resources(t)) for t in T.PUSH_ORDER}
    by_type[T.ROUTE].clear()
    with pytest.raises(InconsistentSnapshot, match="missing route config 15001"):
        check_consistency(PROXIES[0], by_type)


def test_demo_config_builds(tmp_path: Path) -> None:
    from xds_server.galley.loader import load_paths

    demo = Path(__file__).resolve().parents[2] / "config" / "demo"
    result = load_paths([demo])
    assert result.config is not None, [str(e) for e in result.errors]
    snapshot = MeshSnapshot(result.config, 1)
    assert len(snapshot.proxy_ids) == len(result.config.workload_entries)


TLS_DATA = Path(__file__).resolve().parents[2] / "tests" / "traffic" / "data"
SIMPLE_RULE = f"""\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: default}}
spec:
  host: reviews
  trafficPolicy:
    tls: {{mode: SIMPLE, caCertificates: {TLS_DATA / "ca.crt"}}}
"""


def _with_simple_rule(mesh: MeshConfig, tmp_path: Path) -> MeshConfig:
    from xds_server.galley.loader import load_paths

    (tmp_path / "rule.yaml").write_text(SIMPLE_RULE)
    rule = load_paths([tmp_path]).config_or_raise().destination_rules
    return dataclasses.replace(mesh, destination_rules=rule)


def test_a_cluster_naming_a_secret_nobody_serves_is_refused(
    mesh: MeshConfig, tmp_path: Path
) -> None:
    view = MeshSnapshot(_with_simple_rule(mesh, tmp_path), 1).view(PROXIES[0])
    by_type = {t: dict(view.resources(t)) for t in T.PUSH_ORDER}
    roots = f"file-root:{TLS_DATA / 'ca.crt'}"
    assert list(by_type[T.SECRET]) == [roots]  # the rule's roots, by SDS
    check_consistency(PROXIES[0], by_type)
    by_type[T.SECRET].clear()
    with pytest.raises(InconsistentSnapshot, match="names secret 'file-root:"):
        check_consistency(PROXIES[0], by_type)


def test_identity_secrets_lie_over_the_generated_ones(mesh: MeshConfig, tmp_path: Path) -> None:
    """With workload identity, a proxy gets its SVID and roots and the rule's secrets."""
    from xds_server.cache.overlay import SecretOverlayView
    from xds_server.cache.resource import Resource

    snapshot = MeshSnapshot(_with_simple_rule(mesh, tmp_path), 1)
    base = snapshot.view(PROXIES[0])
    identity = {
        "default": Resource(
            T.SECRET,
            "default",
            base.resources(T.SECRET)[f"file-root:{TLS_DATA / 'ca.crt'}"].message,
        )
    }
    overlay = SecretOverlayView(base, identity, epoch=3)
    assert set(overlay.resources(T.SECRET)) == {"default", f"file-root:{TLS_DATA / 'ca.crt'}"}
    assert overlay.resources(T.CLUSTER) is base.resources(T.CLUSTER)
