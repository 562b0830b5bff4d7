"""The graph's skeleton from the demo's real generated resources: groups, versions,
splits in percent, mutual TLS per cluster, and columns in the direction of traffic."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from xds_server.cache.snapshot import MeshSnapshot
from xds_server.galley.loader import load_paths
from xds_server.web import topology as topo

DEMO = Path(__file__).resolve().parents[2] / "config" / "demo"


def demo_topology(*, identity: bool) -> topo.Topology:
    config = load_paths([DEMO]).config
    assert config is not None
    config = dataclasses.replace(config, workload_identity=identity)
    snapshot = MeshSnapshot(config, 1)

    def resources(node_id: str, type_url: str) -> Any:
        return snapshot.view(node_id).resources(type_url)

    return topo.build(snapshot.mesh, resources)


@pytest.fixture(scope="module")
def demo() -> topo.Topology:
    return demo_topology(identity=True)


def test_every_workload_is_a_node_grouped_by_its_service(demo: topo.Topology) -> None:
    assert set(demo.nodes) == {
        "ingressgateway.default",
        "productpage.default",
        "ratings.default",
        "reviews-v1.default",
        "reviews-v2.default",
        "reviews-v3.default",
    }
    reviews = demo.groups["default/reviews.default.svc.cluster.local"]
    assert reviews == ["reviews-v1.default", "reviews-v2.default", "reviews-v3.default"]
    assert [demo.nodes[n].version for n in reviews] == ["v1", "v2", "v3"]
    gateway = demo.nodes["ingressgateway.default"]
    assert gateway.kind == "gateway" and gateway.group == "gateway:default/bookinfo-gateway"
    assert topo.group_label(gateway.group) == "bookinfo-gateway"
    assert topo.group_label("default/reviews.default.svc.cluster.local") == "reviews"
    assert demo.by_address["127.0.10.3"] == "reviews-v2.default"
    assert demo.policies["ratings.default"] == ["default/ratings (ALLOW)"]
    assert demo.policies["productpage.default"] == []


def test_the_split_weights_and_mutual_tls_come_from_what_envoy_is_sent(demo: topo.Topology) -> None:
    v2_name = "outbound|9080|v2|reviews.default.svc.cluster.local"
    v3_name = "outbound|9080|v3|reviews.default.svc.cluster.local"
    v2 = demo.cluster("productpage.default", v2_name)
    v3 = demo.cluster("productpage.default", v3_name)
    assert v2 is not None and v3 is not None
    assert (v2.host, v2.subset, v2.port) == ("reviews.default.svc.cluster.local", "v2", 9080)
    assert v2.addresses == ("127.0.10.3",)
    assert v2.mtls and v3.mtls
    weights = demo.weights("productpage.default")
    assert weights == {v2_name: [50.0], v3_name: [50.0]}
    ratings = demo.cluster(
        "productpage.default", "outbound|9080||ratings.default.svc.cluster.local"
    )
    assert ratings is not None and ratings.addresses == ("127.0.10.4",)
    # The gateway routes to productpage with no split; inbound clusters are not outbound.
    assert demo.weights("ingressgateway.default") == {}
    assert demo.cluster("productpage.default", "inbound|9080||") is None
    # Read once per shared resource: every sidecar's v2 cluster is the same object.
    assert demo.cluster("reviews-v1.default", v2_name) is v2


def test_without_identities_nothing_is_mutual_tls() -> None:
    plain = demo_topology(identity=False)
    name = "outbound|9080|v2|reviews.default.svc.cluster.local"
    info = plain.cluster("productpage.default", name)
    assert info is not None and not info.mtls


def test_an_address_outside_the_mesh_is_its_service(demo: topo.Topology) -> None:
    node_id = demo.node_for(
        "productpage.default", "outbound|9080||ratings.default.svc.cluster.local", "10.9.9.9"
    )
    assert node_id == "svc:ratings.default.svc.cluster.local"
    assert demo.nodes[node_id].kind == "external"
    assert demo.node_for("productpage.default", "no-such-cluster", "10.9.9.9") is None


def test_columns_follow_the_traffic_and_survive_cycles() -> None:
    kinds = {"gw": "gateway", "clients": "clients"}
    groups = ["a", "b", "c", "gw", "clients", "idle"]
    edges = [("clients", "gw"), ("gw", "a"), ("a", "b"), ("b", "c"), ("a", "c"), ("c", "a")]
    columns = topo.layers(groups, kinds, edges)
    assert columns == {"clients": 0, "gw": 1, "a": 2, "b": 3, "c": 4, "idle": 2}
    # No gateway: the callers come first.
    assert topo.layers(["x", "y"], {}, [("y", "x")]) == {"y": 0, "x": 1}
