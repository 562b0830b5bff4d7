"""The Delta stream state machine, driven with plain requests."""

from __future__ import annotations

import pytest

from tests.protocol.helpers import (
    cluster,
    decode_delta,
    delta_responses,
    dreq,
    endpoints,
    listener,
    names,
    route,
    view,
)
from xds_server import xds_types as T
from xds_server.protocol.delta import DeltaStream
from xds_server.protocol.errors import ProtocolError
from xds_server.protocol.events import Acked, Nacked, SyncState

BASE = (cluster("a"), cluster("b"), endpoints("a", 1), endpoints("b", 2), listener("l"), route("r"))


def connected(v=None) -> DeltaStream:
    s = DeltaStream(v or view(*BASE))
    for type_url, sub in ((T.CLUSTER, ()), (T.ENDPOINT, ("a", "b")), (T.LISTENER, ()),
                          (T.ROUTE, ("r",))):  # fmt: skip
        (resp,) = delta_responses(s.on_request(dreq(type_url, sub)))
        assert s.on_request(dreq(type_url, nonce=resp.nonce))[0] == Acked(
            type_url, resp.system_version_info, resp.nonce
        )
    return s


def test_wildcard_sends_all_and_encodes_like_protobuf() -> None:
    s = DeltaStream(view(*BASE))
    (resp,) = delta_responses(s.on_request(dreq(T.CLUSTER)))
    assert names(resp) == ["a", "b"]
    wire = decode_delta(resp)
    assert [r.name for r in wire.resources] == ["a", "b"]
    assert [r.version for r in wire.resources] == [r.version for r in resp.resources]
    assert wire.resources[0].resource.type_url == T.CLUSTER


def test_explicit_wildcard_subscribe_and_unsubscribe() -> None:
    s = DeltaStream(view(*BASE))
    (resp,) = delta_responses(s.on_request(dreq(T.ENDPOINT, ("*",))))
    assert names(resp) == ["a", "b"]
    s.on_request(dreq(T.ENDPOINT, nonce=resp.nonce))
    s.on_request(dreq(T.ENDPOINT, ("a",), ("*",)))
    # No longer wildcard: a change to b is not sent, a change to a is.
    out = delta_responses(s.on_view(view(*BASE[:2], endpoints("a", 9), endpoints("b", 9),
                                         *BASE[4:], generation=2)))  # fmt: skip
    assert [names(r) for r in out] == [["a"]]


def test_empty_wildcard_state_still_answers() -> None:
    (resp,) = delta_responses(DeltaStream(view()).on_request(dreq(T.LISTENER)))
    assert resp.resources == () and resp.removed == ()


def test_only_changes_are_sent() -> None:
    s = connected()
    changed = view(*BASE[:2], endpoints("a", 7), *BASE[3:], generation=2)
    (resp,) = delta_responses(s.on_view(changed))
    assert (resp.type_url, names(resp)) == (T.ENDPOINT, ["a"])


def test_removed_resources_for_deleted_ones() -> None:
    s = connected()
    cds, eds = delta_responses(s.on_view(view(BASE[0], BASE[2], *BASE[4:], generation=2)))
    assert cds.type_url == T.CLUSTER and cds.removed == ("b",) and cds.resources == ()
    assert eds.type_url == T.ENDPOINT and eds.removed == ("b",) and eds.resources == ()


def test_reconnect_with_initial_resource_versions_gets_only_what_changed() -> None:
    held = {"a": BASE[0].version, "b": "stale"}
    s = DeltaStream(view(*BASE))
    (resp,) = delta_responses(s.on_request(dreq(T.CLUSTER, initial=held)))
    assert names(resp) == ["b"]
    # Up to date on everything: nothing at all.
    s2 = DeltaStream(view(*BASE))
    up_to_date = {"a": BASE[0].version, "b": BASE[1].version}
    assert delta_responses(s2.on_request(dreq(T.CLUSTER, initial=up_to_date))) == []
    # Holding something that is gone: it is removed.
    s3 = DeltaStream(view(*BASE))
    (resp,) = delta_responses(s3.on_request(dreq(T.CLUSTER, initial={**up_to_date, "z": "1"})))
    assert resp.removed == ("z",) and resp.resources == ()


def test_names_requested_before_they_exist() -> None:
    s = connected()
    (resp,) = delta_responses(s.on_request(dreq(T.ROUTE, ("later",))))
    assert resp.resources == () and resp.removed == ("later",)  # "not there" said once
    s.on_request(dreq(T.ROUTE, nonce=resp.nonce))
    (resp,) = delta_responses(s.on_view(view(*BASE, route("later"), generation=2)))
    assert names(resp) == ["later"]


def test_nack_rolls_back_and_never_resends_the_rejected_version() -> None:
    s = connected()
    bad = view(*BASE[:-1], route("r", 2), generation=2)
    (resp,) = delta_responses(s.on_view(bad))
    events = s.on_request(dreq(T.ROUTE, nonce=resp.nonce, error="rejected"))
    assert events == [Nacked(T.ROUTE, resp.system_version_info, resp.nonce, "rejected", ("r",))]
    assert next(st for st in s.status() if st.type_url == T.ROUTE).state == SyncState.ERROR
    assert s.on_view(view(*BASE[:-1], route("r", 2), generation=3)) == []
    # Going back to the version Envoy holds is not "new" for Envoy, but a new one is.
    (fixed,) = delta_responses(s.on_view(view(*BASE[:-1], route("r", 3), generation=4)))
    s.on_request(dreq(T.ROUTE, nonce=fixed.nonce))
    assert next(st for st in s.status() if st.type_url == T.ROUTE).state == SyncState.SYNCED


def test_changed_cluster_is_followed_by_its_endpoints() -> None:
    s = connected()
    cds, eds = delta_responses(s.on_view(view(cluster("a", 5), *BASE[1:], generation=2)))
    assert (cds.type_url, names(cds)) == (T.CLUSTER, ["a"])
    assert (eds.type_url, names(eds)) == (T.ENDPOINT, ["a"])


def test_push_order() -> None:
    s = connected()
    changed = view(cluster("a", 3), cluster("b"), endpoints("a", 4), endpoints("b", 2),
                   listener("l", 99), route("r", 4), generation=2)  # fmt: skip
    assert [r.type_url for r in delta_responses(s.on_view(changed))] == [
        T.CLUSTER, T.ENDPOINT, T.LISTENER, T.ROUTE,
    ]  # fmt: skip


def test_unknown_nonce_is_not_an_ack() -> None:
    s = connected()
    assert s.on_request(dreq(T.CLUSTER, nonce="999")) == []


def test_per_type_stream_refuses_other_types() -> None:
    s = DeltaStream(view(), allowed_types=frozenset({T.ROUTE}), ads=False)
    with pytest.raises(ProtocolError):
        s.on_request(dreq(T.CLUSTER))


def test_removed_clusters_leave_only_after_the_routes_changed() -> None:
    s = connected()
    after = view(BASE[0], BASE[2], BASE[4], route("r", 2), generation=2)
    out = delta_responses(s.on_view(after))
    assert [(r.type_url, names(r), r.removed) for r in out] == [
        (T.ROUTE, ["r"], ()),
        (T.CLUSTER, [], ("b",)),
        (T.ENDPOINT, [], ("b",)),
    ]


def test_going_back_to_the_held_version_after_a_nack_is_in_sync() -> None:
    s = connected()
    (resp,) = delta_responses(s.on_view(view(*BASE[:-1], route("r", 2), generation=2)))
    s.on_request(dreq(T.ROUTE, nonce=resp.nonce, error="rejected"))
    # Back to the config Envoy kept: nothing to send, and nothing is wrong any more.
    assert s.on_view(view(*BASE, generation=3)) == []
    assert next(st for st in s.status() if st.type_url == T.ROUTE).state == SyncState.SYNCED
