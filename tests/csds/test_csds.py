"""CSDS on the xDS port, asked with a plain gRPC client (the generated stub), against real
Envoys on SotW and Delta: one ClientConfig per proxy, per-type status agreeing with
/debug/syncz, node matchers, a NACK as ERROR with Envoy's message, streaming too."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from envoy.admin.v3 import config_dump_shared_pb2
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc
from envoy.type.matcher.v3 import node_pb2, string_pb2

from tests.web.inproc_mesh import Mesh, nack_mesh
from xds_server import xds_types
from xds_server.grpc_api.connections import Connections
from xds_server.grpc_api.csds import client_configs

NET = "127.0.154"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    names = ("productpage", "reviews-v1")
    with nack_mesh(tmp_path_factory.mktemp("csds"), NET, names, delta=("reviews-v1",)) as m:
        yield m


@pytest.fixture(scope="module")
def stub(mesh: Mesh) -> Iterator[Any]:
    with grpc.insecure_channel(mesh.plane.xds_address) as channel:
        yield csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel)


def by_node(response: Any) -> dict[str, Any]:
    return {config.node.id: config for config in response.config}


def by_type(config: Any) -> dict[str, Any]:
    return {entry.type_url: entry for entry in config.generic_xds_configs}


def node_id(**match: Any) -> Any:
    return node_pb2.NodeMatcher(node_id=string_pb2.StringMatcher(**match))


def test_every_proxy_answers_with_its_sync_state_per_type(mesh: Mesh, stub: Any) -> None:
    configs = by_node(stub.FetchClientStatus(csds_pb2.ClientStatusRequest(), timeout=5))
    assert set(configs) == {"productpage.default", "reviews-v1.default"}
    syncz = {c["proxy"]: c for c in mesh.syncz()}
    for proxy, config in configs.items():
        entries = by_type(config)
        assert list(entries) == list(xds_types.PUSH_ORDER)  # every type, in push order
        for type_url, entry in entries.items():
            expected = syncz[proxy]["types"][xds_types.short_name(type_url)]
            assert entry.config_status == csds_pb2.SYNCED, (proxy, type_url)
            assert entry.client_status == config_dump_shared_pb2.ACKED
            assert entry.version_info == expected["acked_version"]
            assert entry.last_updated.seconds > 0
            assert not entry.HasField("xds_config")  # status only: no resource contents
        assert config.node.cluster  # as the proxy's bootstrap names it (app.namespace)


def test_node_matchers_select_proxies_and_metadata_matchers_are_refused(
    mesh: Mesh, stub: Any
) -> None:
    def ids(*matchers: Any) -> set[str]:
        request = csds_pb2.ClientStatusRequest(node_matchers=list(matchers))
        return set(by_node(stub.FetchClientStatus(request, timeout=5)))

    assert ids(node_id(exact="productpage.default")) == {"productpage.default"}
    assert ids(node_id(prefix="reviews")) == {"reviews-v1.default"}
    assert ids(node_id(suffix=".DEFAULT", ignore_case=True)) == {
        "productpage.default",
        "reviews-v1.default",
    }
    regex = node_id(safe_regex={"regex": "prod.*"})
    assert ids(regex, node_id(exact="nobody")) == {"productpage.default"}
    assert ids(node_id(exact="nobody")) == set()
    metadata = node_pb2.NodeMatcher(node_metadatas=[{"path": [{"key": "NAMESPACE"}]}])
    with pytest.raises(grpc.RpcError) as refused:
        stub.FetchClientStatus(csds_pb2.ClientStatusRequest(node_matchers=[metadata]), timeout=5)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "node_metadatas" in str(refused.value.details())


def test_a_nack_is_an_error_with_envoys_message_on_the_stream_too(mesh: Mesh, stub: Any) -> None:
    try:
        mesh.nack(True)
        requests = [
            csds_pb2.ClientStatusRequest(node_matchers=[node_id(exact="productpage.default")]),
            csds_pb2.ClientStatusRequest(),
        ]
        first, second = list(stub.StreamClientStatus(iter(requests), timeout=10))
        (config,) = first.config
        route = by_type(config)[xds_types.ROUTE]
        (syncz,) = [c for c in mesh.syncz() if c["proxy"] == "productpage.default"]
        expected = syncz["types"]["route"]
        assert route.config_status == csds_pb2.ERROR
        assert route.client_status == config_dump_shared_pb2.NACKED
        assert route.error_state.details == expected["nack"] != ""  # verbatim
        assert route.error_state.version_info == expected["sent_version"]
        assert route.version_info == expected["acked_version"]  # what Envoy still runs
        assert by_type(config)[xds_types.CLUSTER].config_status == csds_pb2.SYNCED
        others = by_node(second)["reviews-v1.default"]
        assert {e.config_status for e in others.generic_xds_configs} == {csds_pb2.SYNCED}
    finally:
        mesh.nack(False)
    config = by_node(stub.FetchClientStatus(csds_pb2.ClientStatusRequest(), timeout=5))
    route = by_type(config["productpage.default"])[xds_types.ROUTE]
    assert route.config_status == csds_pb2.SYNCED and not route.error_state.details


def test_a_type_never_asked_for_is_listed_as_not_sent() -> None:
    class Quiet:
        def status(self) -> list[Any]:
            return []

    conns = Connections()
    conns.add("quiet.default", "ADS", False, "", Quiet())
    (config,) = client_configs(conns, None)
    assert [e.config_status for e in config.generic_xds_configs] == [csds_pb2.NOT_SENT] * 5
    assert config.node.id == "quiet.default"
