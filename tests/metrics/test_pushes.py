"""PushTracker without gRPC: plain connections, a fake clock, events as the handler
reports them. Convergence, rejects, drops, timeouts, expired nonces, secrets pushes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3.discovery_pb2 import DeltaDiscoveryRequest, DiscoveryRequest
from google.protobuf import struct_pb2

from xds_server import metrics, xds_types
from xds_server.grpc_api.connections import Connection, Connections
from xds_server.protocol.events import (
    Acked,
    DeltaResponse,
    Nacked,
    SotwResponse,
    SyncState,
    TypeStatus,
)
from xds_server.pushes import PushTracker, PushTrigger, admin_port

CDS, LDS = xds_types.CLUSTER, xds_types.LISTENER


class Machine:
    """Stands in for a stream machine: the states the test sets."""

    def __init__(self) -> None:
        self.states: dict[str, SyncState] = {CDS: SyncState.SYNCED, LDS: SyncState.SYNCED}

    def status(self) -> list[TypeStatus]:
        return [TypeStatus(t, s, "v", "v", "", (), True) for t, s in self.states.items()]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def sample(name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
def setup() -> tuple[PushTracker, Connections, Clock]:
    clock = Clock()
    conns = Connections()
    tracker = PushTracker(conns, clock=clock, wall=clock, timeout=30)
    return tracker, conns, clock


def connect(
    tracker: PushTracker, conns: Connections, node_id: str, *, delta: bool = False
) -> Connection:
    conn = conns.add(node_id, "ADS", delta, "ipv4:127.0.0.1:1", Machine())
    conn.generation = 1
    tracker.opened(conn, base_pb2.Node(id=node_id))
    return conn


def machine(conn: Connection) -> Machine:
    assert isinstance(conn.machine, Machine)
    return conn.machine


def push(tracker: PushTracker, conn: Connection, generation: int, clock: Clock) -> None:
    """The stream takes generation `generation`: CDS goes out and is STALE until ACKed."""
    conn.generation = generation
    machine(conn).states[CDS] = SyncState.STALE
    tracker.event(conn, SotwResponse(CDS, "v2", "2", ()), 120, 0.001)
    tracker.pushed(conn, 0.002)


def ack(tracker: PushTracker, conn: Connection) -> None:
    machine(conn).states[CDS] = SyncState.SYNCED
    tracker.event(conn, Acked(CDS, "v2", "2"), 0, 0.0)


def test_a_push_converges_when_every_target_has_acked(
    setup: tuple[PushTracker, Connections, Clock],
) -> None:
    tracker, conns, clock = setup
    a, b, c = (connect(tracker, conns, n) for n in ("a.default", "b.default", "c.default"))
    count = sample("pilot_proxy_convergence_time_count")
    trigger = PushTrigger("config", "traffic.yaml changed", clock.now - 0.5)  # edited 0.5 s ago
    record = tracker.begin(2, carried={"c.default"}, trigger=trigger)
    assert record.targets == 2 and record.proxies == ["a.default", "b.default"]
    push(tracker, a, 2, clock)
    push(tracker, b, 2, clock)
    clock.now += 0.25
    ack(tracker, a)
    assert record.converged == 1 and not record.done
    clock.now += 0.25
    ack(tracker, b)
    assert record.done and record.converged == 2
    # From the edit, not from the publish: 0.5 s before begin, 0.5 s after.
    assert record.last_ack == pytest.approx(1.0)
    assert sample("pilot_proxy_convergence_time_count") == count + 2
    assert c.generation == 1  # carried: never waited for
    (shown,) = [r for r in tracker.records() if r["number"] == record.number]
    assert shown["converged"] == 2 and shown["pending"] == 0 and shown["last_ack_seconds"] == 1.0


def test_a_stream_whose_view_did_not_change_converges_at_once(
    setup: tuple[PushTracker, Connections, Clock],
) -> None:
    tracker, conns, clock = setup
    a = connect(tracker, conns, "a.default")
    record = tracker.begin(2, (), PushTrigger.now("config", "x", wall=clock))
    a.generation = 2
    tracker.pushed(a, 0.0)  # the machine had nothing to send
    assert record.done and record.converged == 1


def test_a_nack_settles_the_proxy_as_rejected_and_counts_istiods_rejects(
    setup: tuple[PushTracker, Connections, Clock],
) -> None:
    tracker, conns, clock = setup
    a = connect(tracker, conns, "nacker.default")
    total = metrics.total_xds_rejects.value("cds")
    record = tracker.begin(2, (), PushTrigger.now("config", "x", wall=clock))
    push(tracker, a, 2, clock)
    request = DiscoveryRequest(type_url=CDS, response_nonce="2")
    request.error_detail.code = 13
    request.error_detail.message = "bad cluster"
    tracker.request(a, request)
    machine(a).states[CDS] = SyncState.ERROR
    tracker.event(a, Nacked(CDS, "v2", "2", "bad cluster", ("c1",)), 0, 0.0)
    assert record.done and record.rejected == 1 and record.converged == 0
    assert metrics.total_xds_rejects.value("cds") == total + 1
    assert sample("pilot_xds_cds_reject", node="nacker.default", err="13") >= 1


def test_a_target_that_disconnects_or_never_acks_is_not_waited_for_forever(
    setup: tuple[PushTracker, Connections, Clock],
) -> None:
    tracker, conns, clock = setup
    a = connect(tracker, conns, "a.default")
    b = connect(tracker, conns, "b.default")
    record = tracker.begin(2, (), PushTrigger.now("config", "x", wall=clock))
    push(tracker, a, 2, clock)
    push(tracker, b, 2, clock)
    conns.remove(a)
    tracker.closed(a)
    assert record.dropped == 1 and not record.done
    clock.now += 31
    tracker.expire()
    assert record.done and record.timed_out == 1 and record.converged == 0


def test_expired_nonces_are_counted_by_type(setup: tuple[PushTracker, Connections, Clock]) -> None:
    tracker, conns, _ = setup
    sotw = connect(tracker, conns, "sotw.default")
    delta = connect(tracker, conns, "delta.default", delta=True)
    before = metrics.expired_nonce.value("cds")
    tracker.event(sotw, SotwResponse(CDS, "v1", "1", ()), 10, 0.0)
    tracker.event(sotw, SotwResponse(CDS, "v2", "2", ()), 10, 0.0)
    tracker.request(sotw, DiscoveryRequest(type_url=CDS, response_nonce="1"))  # superseded
    tracker.request(sotw, DiscoveryRequest(type_url=CDS, response_nonce="2"))  # the latest
    tracker.request(sotw, DiscoveryRequest(type_url=CDS))  # no nonce: a first request
    assert metrics.expired_nonce.value("cds") == before + 1
    # Delta: every response is answered on its own; a nonce answered twice is expired.
    tracker.event(delta, DeltaResponse(CDS, "v1", "7", (), ()), 10, 0.0)
    tracker.event(delta, DeltaResponse(CDS, "v2", "8", (), ()), 10, 0.0)
    tracker.request(delta, DeltaDiscoveryRequest(type_url=CDS, response_nonce="7"))
    tracker.event(delta, Acked(CDS, "v1", "7"), 0, 0.0)
    tracker.request(delta, DeltaDiscoveryRequest(type_url=CDS, response_nonce="8"))
    tracker.event(delta, Acked(CDS, "v2", "8"), 0, 0.0)
    assert metrics.expired_nonce.value("cds") == before + 1
    tracker.request(delta, DeltaDiscoveryRequest(type_url=CDS, response_nonce="7"))
    assert metrics.expired_nonce.value("cds") == before + 2


def test_a_secrets_change_opens_its_own_push(setup: tuple[PushTracker, Connections, Clock]) -> None:
    tracker, conns, _ = setup
    a = connect(tracker, conns, "a.default")
    b = connect(tracker, conns, "b.default")
    triggers = metrics.push_triggers.value("secret")
    a.secret_epoch = b.secret_epoch = 1
    tracker.pushed(a, 0.01)
    (record,) = [r for r in tracker.records() if r["trigger"] == "secret"]
    assert record["targets"] == 2 and record["converged"] == 1  # a had nothing stale
    tracker.pushed(b, 0.01)
    (record,) = [r for r in tracker.records() if r["trigger"] == "secret"]
    assert record["converged"] == 2 and record["pending"] == 0
    assert metrics.push_triggers.value("secret") == triggers + 1


def test_a_rejected_config_is_a_record_with_its_reason(
    setup: tuple[PushTracker, Connections, Clock],
) -> None:
    tracker, _, clock = setup
    tracker.rejected(PushTrigger.now("config", "traffic.yaml changed", wall=clock), 2, serving=4)
    (record,) = tracker.records()
    assert record["error"] == "2 errors: still serving generation 4"
    assert record["targets"] == 0


def test_the_admin_port_comes_from_istios_node_metadata() -> None:
    node = base_pb2.Node(id="a.default")
    assert admin_port(node) == 15000
    assert "PROXY_CONFIG" not in node.metadata.fields  # looking did not insert it
    node.metadata.update({"PROXY_CONFIG": {"proxyAdminPort": 15123}})
    assert admin_port(node) == 15123
    node.metadata.fields["PROXY_CONFIG"].struct_value.fields["proxyAdminPort"].CopyFrom(
        struct_pb2.Value(string_value="15124")
    )
    assert admin_port(node) == 15124
    node.metadata.update({"PROXY_CONFIG": {"proxyAdminPort": 70000}})
    assert admin_port(node) == 15000


def test_the_envoy_version_labels_pilot_xds(setup: tuple[PushTracker, Connections, Clock]) -> None:
    tracker, conns, _ = setup
    node = base_pb2.Node(id="v.default")
    node.user_agent_build_version.version.major_number = 1
    node.user_agent_build_version.version.minor_number = 40
    before = sample("pilot_xds", version="envoy-1.40.0")
    conn = conns.add("v.default", "ADS", False, "", Machine())
    tracker.opened(conn, node)
    assert sample("pilot_xds", version="envoy-1.40.0") == before + 1
    tracker.closed(conn)
    assert sample("pilot_xds", version="envoy-1.40.0") == before


def test_edited_files_date_the_change_from_their_mtime(tmp_path: Path) -> None:
    edited = tmp_path / "traffic.yaml"
    edited.write_text("x")
    now = time.time()
    os.utime(edited, (now - 0.3, now - 0.3))
    count = sample("pilot_debounce_time_count")
    trigger = PushTrigger.for_files([str(edited), str(tmp_path / "gone.yaml")], tmp_path)
    assert trigger.type == "config"
    assert trigger.what == "gone.yaml, traffic.yaml changed"
    assert now - 0.31 <= trigger.changed_at <= now - 0.29
    assert sample("pilot_debounce_time_count") == count + 1
    # A file copied with an old mtime does not date the change back to then.
    os.utime(edited, (now - 3600, now - 3600))
    assert PushTrigger.for_files([str(edited)], tmp_path).changed_at >= now
