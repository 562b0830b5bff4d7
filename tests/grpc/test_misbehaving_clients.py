"""A misbehaving xDS client gets a clear gRPC error; the server keeps serving others."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from envoy.service.cluster.v3 import cds_pb2_grpc
from envoy.service.discovery.v3 import ads_pb2_grpc
from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest, DiscoveryResponse

from tests.e2e.harness import ControlPlaneThread
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
