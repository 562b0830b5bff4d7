"""Resources shared between proxies are read-only: an accidental change raises.

The push context builds each resource once and hands the same object to every
proxy that sees it, and the cache serializes it once, by identity. A generator (or
anyone holding a Resource) changing it in place would silently change what other
proxies are sent; instead it raises FrozenMessageError, and `copy()` gives a
changeable copy that changes nothing shared.
"""

from __future__ import annotations

import dataclasses

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2

from tests.generators.factory import bookinfo, workload
from xds_server import xds_types
from xds_server.cache.snapshot import MeshSnapshot
from xds_server.generators import FrozenMessageError, PushContext, generate

REVIEWS = "outbound|9080||reviews.default.svc.cluster.local"


@pytest.fixture
def ctx() -> PushContext:
    mesh = dataclasses.replace(
        bookinfo(workload("productpage-v2", address="127.0.0.9")),
        workload_identity=True,
    )
    return PushContext.build(mesh)


def _generated(ctx: PushContext, node: str) -> dict:
    proxy = ctx.proxy(node)
    assert proxy is not None
    return generate(ctx, proxy)


def test_every_generated_resource_is_shared_and_read_only(ctx: PushContext) -> None:
    one = _generated(ctx, "productpage-v1.default")
    two = _generated(ctx, "productpage-v2.default")
    cluster = one[xds_types.CLUSTER][REVIEWS]
    assert cluster is two[xds_types.CLUSTER][REVIEWS]  # one object for both proxies
    assert isinstance(cluster, cluster_pb2.Cluster)  # it reads like the message
    assert cluster.transport_socket.name == "envoy.transport_sockets.tls"
    attempts = [
        lambda: setattr(cluster, "name", "hijacked"),
        lambda: setattr(cluster.transport_socket, "name", "envoy.transport_sockets.raw_buffer"),
        lambda: cluster.ClearField("transport_socket"),
        lambda: cluster.CopyFrom(cluster_pb2.Cluster()),
        lambda: cluster.MergeFrom(cluster_pb2.Cluster()),
        lambda: cluster.transport_socket.typed_config.Pack(cluster_pb2.Cluster()),
        lambda: cluster.circuit_breakers.thresholds.add(),
        lambda: delattr(cluster, "name"),
    ]
    for attempt in attempts:
        with pytest.raises(FrozenMessageError):
            attempt()
    with pytest.raises(TypeError):  # map fields are read-only mappings
        cluster.typed_extension_protocol_options["x"] = None  # type: ignore[index]
    listener = one[xds_types.LISTENER]["127.0.0.2_15001"]
    assert isinstance(listener, listener_pb2.Listener)
    with pytest.raises(FrozenMessageError):
        listener.filter_chains[0].filters.append(listener.filter_chains[0].filters[0])
    endpoints = one[xds_types.ENDPOINT]
    assert endpoints is two[xds_types.ENDPOINT]  # a scope's endpoints: one mapping
    with pytest.raises(TypeError):
        endpoints[REVIEWS] = None
    # Nothing above changed anything: the other proxy still gets the cluster as built.
    assert two[xds_types.CLUSTER][REVIEWS].name == REVIEWS
    assert two[xds_types.CLUSTER][REVIEWS].transport_socket.name == "envoy.transport_sockets.tls"


def test_a_copy_can_change_without_touching_the_shared_one(ctx: PushContext) -> None:
    cluster = _generated(ctx, "productpage-v1.default")[xds_types.CLUSTER][REVIEWS]
    mine = cluster.copy()
    mine.ClearField("transport_socket")
    mine.name = "mine"
    again = _generated(ctx, "productpage-v2.default")[xds_types.CLUSTER][REVIEWS]
    assert again.name == REVIEWS and again.HasField("transport_socket")


def test_the_cache_holds_read_only_resources(ctx: PushContext) -> None:
    snapshot = MeshSnapshot(ctx.mesh, 1)
    resource = snapshot.view("productpage-v1.default").resources(xds_types.CLUSTER)[REVIEWS]
    before = resource.any_bytes
    with pytest.raises(FrozenMessageError):
        resource.message.name = "hijacked"  # type: ignore[misc]
    with pytest.raises(FrozenMessageError):
        resource.message.ClearField("transport_socket")
    assert resource.any_bytes == before
    assert resource.message.name == REVIEWS
