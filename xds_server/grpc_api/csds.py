"""CSDS: envoy.service.status.v3.ClientStatusDiscoveryService on the xDS port.

Answers, per connected proxy, a `ClientConfig` the way istiod's syncz does: one
`GenericXdsConfig` per xDS type (no resource names, no contents: what a proxy holds
is at /debug/config_dump, keys redacted), with

- `config_status`: SYNCED / STALE / NOT_SENT / ERROR, as `pocketmesh status` says it;
- `client_status`: ACKED, NACKED, or REQUESTED (sent or asked for, not yet ACKed);
- `version_info`: the version the proxy last ACKed; `last_updated`: when;
- `error_state` on a NACK: Envoy's message verbatim and the version it rejected.

Every type a server may push is listed (NOT_SENT if the proxy never asked for it).
`node_matchers` select proxies by node id (exact, prefix, suffix, contains, regex);
matching on node metadata is refused, not ignored.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any

import grpc
from envoy.admin.v3 import config_dump_shared_pb2
from envoy.config.core.v3 import base_pb2
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc
from google.protobuf import timestamp_pb2

from xds_server import xds_types
from xds_server.protocol.events import SyncState, TypeStatus

if TYPE_CHECKING:
    from xds_server.grpc_api.connections import Connection, Connections
    from xds_server.pushes import PushTracker

_CONFIG_STATUS = {
    SyncState.SYNCED: csds_pb2.SYNCED,
    SyncState.STALE: csds_pb2.STALE,
    SyncState.NOT_SENT: csds_pb2.NOT_SENT,
    SyncState.ERROR: csds_pb2.ERROR,
}
_CLIENT_STATUS = {
    SyncState.SYNCED: config_dump_shared_pb2.ACKED,
    SyncState.STALE: config_dump_shared_pb2.REQUESTED,
    SyncState.NOT_SENT: config_dump_shared_pb2.REQUESTED,
    SyncState.ERROR: config_dump_shared_pb2.NACKED,
}


class UnsupportedMatcher(ValueError):
    pass


def client_configs(
    connections: Iterable[Connection], tracker: PushTracker | None, matchers: Iterable[Any] = ()
) -> list[Any]:
    """One ClientConfig per connected proxy that `matchers` select (all if none)."""
    match = _matcher(list(matchers))
    by_node: dict[str, list[Connection]] = {}
    for conn in connections:
        if match(conn.node_id):
            by_node.setdefault(conn.node_id, []).append(conn)
    return [_client_config(node_id, by_node[node_id], tracker) for node_id in sorted(by_node)]


def _client_config(node_id: str, conns: list[Connection], tracker: PushTracker | None) -> Any:
    node = base_pb2.Node(id=node_id)
    statuses: dict[str, tuple[Connection, TypeStatus]] = {}
    for conn in sorted(conns, key=lambda c: c.stream_id):  # the newest stream wins
        info = tracker.node(conn) if tracker is not None else None
        if info is not None and info.cluster:
            node.cluster = info.cluster
        for status in conn.status():
            statuses[status.type_url] = (conn, status)
    config = csds_pb2.ClientConfig(node=node)
    for type_url in xds_types.PUSH_ORDER:
        entry = config.generic_xds_configs.add(type_url=type_url)
        if type_url not in statuses:
            entry.config_status = csds_pb2.NOT_SENT
            continue
        conn, status = statuses[type_url]
        entry.config_status = _CONFIG_STATUS[status.state]
        entry.client_status = _CLIENT_STATUS[status.state]
        entry.version_info = status.acked_version
        acked_at = tracker.last_ack(conn, type_url) if tracker is not None else None
        if acked_at is not None:
            entry.last_updated.CopyFrom(_timestamp(acked_at))
        if status.state == SyncState.ERROR:
            entry.error_state.details = status.nack_message
            entry.error_state.version_info = status.sent_version
    return config


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def _matcher(matchers: list[Any]) -> Any:
    if not matchers:
        return lambda _node_id: True
    tests = []
    for m in matchers:
        if len(m.node_metadatas):
            raise UnsupportedMatcher("node_metadatas matchers are not supported: match node_id")
        if not m.HasField("node_id"):
            raise UnsupportedMatcher("a NodeMatcher needs node_id")
        tests.append(_string_matcher(m.node_id))
    return lambda node_id: any(test(node_id) for test in tests)


def _string_matcher(m: Any) -> Any:
    """envoy.type.matcher.v3.StringMatcher, for node ids."""
    kind = m.WhichOneof("match_pattern")
    fold = (lambda s: s.lower()) if m.ignore_case else (lambda s: s)
    if kind == "exact":
        return lambda s: fold(s) == fold(m.exact)
    if kind == "prefix":
        return lambda s: fold(s).startswith(fold(m.prefix))
    if kind == "suffix":
        return lambda s: fold(s).endswith(fold(m.suffix))
    if kind == "contains":
        return lambda s: fold(m.contains) in fold(s)
    if kind == "safe_regex":
        try:
            pattern = re.compile(m.safe_regex.regex)
        except re.error as err:
            raise UnsupportedMatcher(f"node_id regex: {err}") from None
        return lambda s: pattern.fullmatch(s) is not None
    raise UnsupportedMatcher(f"node_id matcher {kind!r} is not supported")


class ClientStatusService(csds_pb2_grpc.ClientStatusDiscoveryServiceServicer):
    def __init__(self, connections: Connections, tracker: PushTracker | None) -> None:
        self.connections = connections
        self.tracker = tracker

    def _answer(self, request: Any) -> Any:
        configs = client_configs(self.connections, self.tracker, request.node_matchers)
        return csds_pb2.ClientStatusResponse(config=configs)

    async def FetchClientStatus(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return self._answer(request)
        except UnsupportedMatcher as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))

    async def StreamClientStatus(
        self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        async for request in requests:
            try:
                yield self._answer(request)
            except UnsupportedMatcher as err:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))


def add_csds(server: grpc.aio.Server, connections: Connections, tracker: PushTracker) -> None:
    csds_pb2_grpc.add_ClientStatusDiscoveryServiceServicer_to_server(
        ClientStatusService(connections, tracker), server
    )
