"""The SotW stream state machine, driven with plain requests."""

from __future__ import annotations

import pytest

from tests.protocol.helpers import (
    ack,
    cluster,
    decode,
    endpoints,
    listener,
    names,
    req,
    responses,
    route,
    view,
)
from xds_server import xds_types as T
from xds_server.protocol.errors import ProtocolError
from xds_server.protocol.events import Acked, Nacked, SyncState
from xds_server.protocol.sotw import SotwStream

BASE = (
    cluster("a"),
    cluster("b"),
    endpoints("a", 1),
    endpoints("b", 2),
    listener("l"),
    route("r"),
)


def connected(v=None) -> tuple[SotwStream, dict]:
    """A stream that went through Envoy's connect sequence and ACKed everything."""
    s = SotwStream(v or view(*BASE))
    sent = {}
    for type_url, names_ in (
        (T.CLUSTER, ()),
        (T.ENDPOINT, ("a", "b")),
        (T.LISTENER, ()),
        (T.ROUTE, ("r",)),
    ):
        (resp,) = responses(s.on_request(req(type_url, names_, node=True)))
        assert s.on_request(ack(resp, names_)) == [Acked(type_url, resp.version_info, resp.nonce)]
        sent[type_url] = resp
    return s, sent


def test_legacy_wildcard_sends_everything_and_encodes_like_protobuf() -> None:
    s = SotwStream(view(*BASE))
    (resp,) = responses(s.on_request(req(T.CLUSTER)))
    assert names(resp) == ["a", "b"]
    wire = decode(resp)
    assert wire.type_url == T.CLUSTER
    assert wire.nonce == resp.nonce and wire.version_info == resp.version_info
    assert [r.type_url for r in wire.resources] == [T.CLUSTER, T.CLUSTER]


def test_explicit_wildcard_and_named_subscription() -> None:
    s = SotwStream(view(*BASE))
    (resp,) = responses(s.on_request(req(T.LISTENER, ("*",))))
    assert names(resp) == ["l"]
    (resp,) = responses(s.on_request(req(T.ENDPOINT, ("b",))))
    assert names(resp) == ["b"]


def test_empty_wildcard_state_still_answers_so_envoy_can_initialize() -> None:
    s = SotwStream(view())
    (resp,) = responses(s.on_request(req(T.LISTENER)))
    assert resp.resources == ()


def test_ack_sends_nothing_more() -> None:
    s, _ = connected()
    assert s.on_view(view(*BASE, generation=2)) == []
    assert {st.state for st in s.status()} == {SyncState.SYNCED}


def test_versions_are_content_hashes_stable_across_streams() -> None:
    _, first = connected()
    _, second = connected(view(*BASE, generation=7))
    assert {t: r.version_info for t, r in first.items()} == {
        t: r.version_info for t, r in second.items()
    }


def test_reconnect_with_current_version_gets_nothing_new() -> None:
    _, sent = connected()
    s = SotwStream(view(*BASE))
    assert s.on_request(req(T.CLUSTER, version=sent[T.CLUSTER].version_info, node=True)) == []
    assert s.on_request(req(T.ENDPOINT, ("a", "b"), version=sent[T.ENDPOINT].version_info)) == []
    # ...but a reconnect with an older version is answered.
    (resp,) = responses(s.on_request(req(T.LISTENER, version="old")))
    assert names(resp) == ["l"]


def test_nack_keeps_last_good_and_never_resends_the_rejected_version() -> None:
    s, sent = connected()
    bad = view(*BASE[:-1], route("r", vhosts=2), generation=2)
    (resp,) = responses(s.on_view(bad))
    events = s.on_request(req(T.ROUTE, ("r",), version=sent[T.ROUTE].version_info,
                              nonce=resp.nonce, error="duplicate domain"))  # fmt: skip
    assert events == [Nacked(T.ROUTE, resp.version_info, resp.nonce, "duplicate domain", ("r",))]
    route_status = next(st for st in s.status() if st.type_url == T.ROUTE)
    assert route_status.state == SyncState.ERROR
    assert route_status.nack_message == "duplicate domain"
    # No loop: the same config again sends nothing, and so does a repeated NACK.
    assert s.on_view(view(*BASE[:-1], route("r", vhosts=2), generation=3)) == []
    # A new config is sent, and its ACK clears the error.
    (fixed,) = responses(s.on_view(view(*BASE[:-1], route("r", vhosts=3), generation=4)))
    s.on_request(ack(fixed, ("r",)))
    assert next(st for st in s.status() if st.type_url == T.ROUTE).state == SyncState.SYNCED


def test_stale_nonce_is_ignored() -> None:
    s, sent = connected()
    (newer,) = responses(s.on_view(view(*BASE[:-1], route("r", 2), generation=2)))
    # A NACK for an older nonce is not a NACK of the newer response.
    assert s.on_request(req(T.ROUTE, ("r",), nonce=sent[T.ROUTE].nonce, error="old")) == []
    assert next(st for st in s.status() if st.type_url == T.ROUTE).state == SyncState.STALE
    assert s.on_request(ack(newer, ("r",))) == [Acked(T.ROUTE, newer.version_info, newer.nonce)]


def test_subscription_change_with_stale_nonce_is_honoured() -> None:
    v = view(*BASE, cluster("c"), endpoints("c", 3))
    s, sent = connected(v)
    # A push is in flight (nonce N2) when Envoy asks for "c" quoting nonce N1.
    (pending,) = responses(s.on_view(view(*BASE[:-1], route("r", 2), cluster("c"),
                                          endpoints("c", 3), generation=2)))  # fmt: skip
    stale = sent[T.ENDPOINT].nonce
    (resp,) = responses(s.on_request(req(T.ENDPOINT, ("a", "b", "c"), nonce=stale)))
    assert names(resp) == ["a", "b", "c"]
    assert pending.type_url == T.ROUTE


def test_names_requested_before_they_exist_are_sent_when_they_appear() -> None:
    s, sent = connected()
    assert responses(s.on_request(req(T.ROUTE, ("r", "later"), nonce=sent[T.ROUTE].nonce))) == []
    (resp,) = responses(s.on_view(view(*BASE, route("later"), generation=2)))
    assert names(resp) == ["later", "r"]


def test_unsubscribed_names_are_dropped() -> None:
    s, sent = connected()
    (resp,) = responses(s.on_request(req(T.ENDPOINT, ("a",), nonce=sent[T.ENDPOINT].nonce)))
    assert names(resp) == ["a"]
    later = view(BASE[0], BASE[1], endpoints("a", 1), endpoints("b", 99), *BASE[4:], generation=2)
    assert s.on_view(later) == []  # b is no longer wanted


def test_push_order_is_make_before_break() -> None:
    s, _ = connected()
    changed = view(
        cluster("a", 2), cluster("b"), endpoints("a", 5), endpoints("b", 2),
        listener("l", 15002), route("r", 2), generation=2,
    )  # fmt: skip
    order = [r.type_url for r in responses(s.on_view(changed))]
    assert order == [T.CLUSTER, T.ENDPOINT, T.LISTENER, T.ROUTE]


def test_endpoint_only_change_pushes_only_eds() -> None:
    s, _ = connected()
    changed = view(*BASE[:2], endpoints("a", 7), *BASE[3:], generation=2)
    (resp,) = responses(s.on_view(changed))
    assert resp.type_url == T.ENDPOINT


def test_changed_cluster_is_followed_by_its_endpoints_even_if_unchanged() -> None:
    s, sent = connected()
    changed = view(cluster("a", timeout=5), *BASE[1:], generation=2)
    cds, eds = responses(s.on_view(changed))
    assert (cds.type_url, eds.type_url) == (T.CLUSTER, T.ENDPOINT)
    assert names(eds) == ["a", "b"]
    assert eds.version_info == sent[T.ENDPOINT].version_info and eds.nonce != sent[T.ENDPOINT].nonce


def test_repeated_ack_is_a_request_to_resend() -> None:
    # A per-type EDS stream sees no CDS; Envoy repeats its ACK to ask again.
    s = SotwStream(view(*BASE), allowed_types=frozenset({T.ENDPOINT}), ads=False)
    (resp,) = responses(s.on_request(req(T.ENDPOINT, ("a",), node=True)))
    s.on_request(ack(resp, ("a",)))
    (again,) = responses(s.on_request(ack(resp, ("a",))))
    assert names(again) == ["a"] and again.nonce != resp.nonce
    # ...and the ACK of the resend is just an ACK: no loop.
    assert responses(s.on_request(ack(again, ("a",)))) == []


def test_removed_cluster_disappears_from_cds() -> None:
    s, _ = connected()
    (resp,) = responses(s.on_view(view(BASE[0], *BASE[2:], generation=2)))
    assert resp.type_url == T.CLUSTER and names(resp) == ["a"]


def test_per_type_stream_refuses_other_types() -> None:
    s = SotwStream(view(*BASE), allowed_types=frozenset({T.CLUSTER}), ads=False)
    with pytest.raises(ProtocolError):
        s.on_request(req(T.LISTENER))


def test_status_reports_not_sent_stale_synced() -> None:
    s = SotwStream(view(*BASE))
    (resp,) = responses(s.on_request(req(T.CLUSTER)))
    assert [st.state for st in s.status()] == [SyncState.STALE]
    s.on_request(ack(resp))
    assert [st.state for st in s.status()] == [SyncState.SYNCED]


def test_removed_clusters_leave_only_after_the_routes_changed() -> None:
    s, _ = connected()
    # b leaves the mesh, and the route that used it changes in the same push.
    after = view(BASE[0], BASE[2], BASE[4], route("r", 2), generation=2)
    out = responses(s.on_view(after))
    kinds = [(r.type_url, tuple(names(r))) for r in out]
    assert (T.ROUTE, ("r",)) in kinds
    assert kinds[-1] == (T.CLUSTER, ("a",))
    # No CDS without b goes out before the routes.
    route_at = kinds.index((T.ROUTE, ("r",)))
    assert all(k != (T.CLUSTER, ("a",)) for k in kinds[:route_at])
