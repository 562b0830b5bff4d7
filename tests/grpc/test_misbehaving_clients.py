"""A misbehaving xDS client gets a clear gRPC error; the server keeps serving others."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.service.cluster.v3 import cds_pb2_grpc
from envoy.service.discovery.v3 import ads_pb2_grpc
from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest, DiscoveryResponse

from tests.e2e.harness import AdsStream, ControlPlaneThread, wait_until
from xds_server import xds_types

DEMO = Path(__file__).resolve().parents[2] / "config" / "demo"


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlaneThread]:
    config = tmp_path_factory.mktemp("grpc") / "config"
    shutil.copytree(DEMO, config)
    plane = ControlPlaneThread(config, watch=False).start()
    try:
        yield plane
    finally:
        plane.stop()


def _exchange(plane: ControlPlaneThread, stub_of, method: str, *requests: DiscoveryRequest):
    with grpc.insecure_channel(plane.xds_address) as channel:
        call = getattr(stub_of(channel), method)(iter(requests), timeout=5)
        return next(call)


def test_first_request_without_node_is_invalid_argument(plane: ControlPlaneThread) -> None:
    with pytest.raises(grpc.RpcError) as err:
        _exchange(
            plane,
            ads_pb2_grpc.AggregatedDiscoveryServiceStub,
            "StreamAggregatedResources",
            DiscoveryRequest(type_url=xds_types.CLUSTER),
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "node.id" in err.value.details()


def test_wrong_type_on_a_per_type_service_is_invalid_argument(plane: ControlPlaneThread) -> None:
    request = DiscoveryRequest(type_url=xds_types.LISTENER)
    request.node.id = "productpage.default"
    with pytest.raises(grpc.RpcError) as err:
        _exchange(plane, cds_pb2_grpc.ClusterDiscoveryServiceStub, "StreamClusters", request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert xds_types.LISTENER in err.value.details()


def test_well_behaved_client_still_served(plane: ControlPlaneThread) -> None:
    request = DiscoveryRequest(type_url=xds_types.CLUSTER)
    request.node.id = "productpage.default"
    response: DiscoveryResponse = _exchange(
        plane, ads_pb2_grpc.AggregatedDiscoveryServiceStub, "StreamAggregatedResources", request
    )
    assert response.type_url == xds_types.CLUSTER
    assert response.nonce and response.version_info
    assert len(response.resources) > 0


def test_unknown_proxy_gets_an_empty_config_not_an_error(plane: ControlPlaneThread) -> None:
    request = DiscoveryRequest(type_url=xds_types.LISTENER)
    request.node.id = "nobody.default"
    response: DiscoveryResponse = _exchange(
        plane, ads_pb2_grpc.AggregatedDiscoveryServiceStub, "StreamAggregatedResources", request
    )
    assert response.type_url == xds_types.LISTENER and len(response.resources) == 0


# -- hostile clients: each gets a clear status or nothing; the log stays one bounded line


def cds(node: str = "productpage.default", **fields: Any) -> DiscoveryRequest:
    request = DiscoveryRequest(type_url=xds_types.CLUSTER, **fields)
    if node:
        request.node.id = node
    return request


def test_nonces_from_the_future_and_endless_nacks_cause_no_resend(
    plane: ControlPlaneThread, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pocketmesh.xds")
    stream = AdsStream(plane.xds_address).send(cds())
    try:
        first = stream.next()
        assert isinstance(first, DiscoveryResponse)
        stream.send(cds("", response_nonce="999999", version_info="v-from-nowhere"))
        forged = "bad config\n2030-01-01 00:00:00 ERROR pocketmesh: forged line\n"
        for _ in range(20):  # NACK, again and again, even a stale nonce
            nack = cds("", response_nonce=first.nonce, version_info=first.version_info)
            nack.error_detail.code = 13
            nack.error_detail.message = forged + "x" * 3_000_000
            stream.send(nack)
        assert stream.quiet_for(1.5), "the server answered a NACK or a future nonce"
        # Still served: a subscription change is answered.
        stream.send(cds("", resource_names=["*"], response_nonce=first.nonce))
    finally:
        stream.stop()
    nack_lines = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert len(nack_lines) == 1, "one log line for the first NACK; repeats are not rejections"
    (line,) = nack_lines
    assert "\n" not in line and "\\n2030-01-01" in line and len(line) < 2000


def test_huge_requests_and_node_ids_get_clear_statuses(
    plane: ControlPlaneThread, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pocketmesh.xds")
    names = [f"c{i}" for i in range(100_000)]
    cases = [
        (cds(resource_names=names), grpc.StatusCode.RESOURCE_EXHAUSTED, "100000 cluster names"),
        (cds("n\n" * 100_000), grpc.StatusCode.INVALID_ARGUMENT, "node.id is 200000 characters"),
        (
            DiscoveryRequest(type_url="type.googleapis.com/\x1b[2Jgarbage\n", node={"id": "x"}),
            grpc.StatusCode.INVALID_ARGUMENT,
            "is not served",
        ),
    ]
    for request, code, text in cases:
        stream = AdsStream(plane.xds_address).send(request)
        try:
            err = stream.next()
        finally:
            stream.stop()
        assert isinstance(err, grpc.RpcError), err
        assert err.code() == code and text in (err.details() or ""), err
    lines = [r.getMessage() for r in caplog.records if r.name == "pocketmesh.xds"]
    refusals = [line for line in lines if " from ipv4:" in line]
    assert len(refusals) == len(cases), lines  # one line each
    assert all("\n" not in line and len(line) < 2000 for line in lines), lines


def test_garbage_bytes_get_a_status_and_the_server_carries_on(plane: ControlPlaneThread) -> None:
    with grpc.insecure_channel(plane.xds_address) as channel:
        method = channel.stream_stream(
            "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        with pytest.raises(grpc.RpcError) as err:
            next(method(iter([b"\xff\xfe garbage \x00" * 100]), timeout=5))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "undecodable request" in (err.value.details() or "")
    test_well_behaved_client_still_served(plane)


def test_stalled_and_many_streams_do_not_stop_others(plane: ControlPlaneThread) -> None:
    """Streams that never read, and hundreds at once: a well-behaved client is still
    answered and a config push still reaches it (figures: `pocketmesh bench --chaos`)."""
    stalled = [
        AdsStream(plane.xds_address, read=False).send(cds(f"stalled-{i}.default"))
        for i in range(50)
    ]
    many = [AdsStream(plane.xds_address).send(cds(f"many-{i}.default")) for i in range(300)]
    try:
        for stream in many:
            assert isinstance(stream.next(timeout=30), DiscoveryResponse)
        plane.call(plane.plane.reload)  # a publish wakes every stream, stalled ones too
        test_well_behaved_client_still_served(plane)
        assert len(plane.plane.connections) >= 350
    finally:
        for stream in stalled + many:
            stream.stop()
    wait_until(lambda: len(plane.plane.connections) == 0, timeout=30, what="every stream closed")


def test_streams_past_the_limit_get_resource_exhausted_and_others_carry_on(
    tmp_path: Path,
) -> None:
    """A client holding many streams (silent ones too) hits `--max-streams`: new streams
    get RESOURCE_EXHAUSTED, once some close the server takes streams again."""
    config = tmp_path / "config"
    shutil.copytree(DEMO, config)
    plane = ControlPlaneThread(config, watch=False, max_streams=20).start()
    held = [AdsStream(plane.xds_address).send(cds(f"held-{i}.default")) for i in range(20)]
    try:
        for stream in held:
            assert isinstance(stream.next(timeout=30), DiscoveryResponse)
        with pytest.raises(grpc.RpcError) as err:
            _exchange(plane, cds_pb2_grpc.ClusterDiscoveryServiceStub, "StreamClusters",
                      cds("one-too-many.default"))  # fmt: skip
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "--max-streams" in (err.value.details() or "")
        for stream in held[:5]:
            stream.stop()
        wait_until(lambda: plane.plane.handler.active <= 15, timeout=30, what="5 streams gone")
        answer = _exchange(plane, cds_pb2_grpc.ClusterDiscoveryServiceStub, "StreamClusters",
                           cds("productpage.default"))  # fmt: skip
        assert isinstance(answer, DiscoveryResponse)
    finally:
        for stream in held:
            stream.stop()
        plane.stop()
