"""What a client sends is bounded: text kept or logged, and names one stream may hold."""

from __future__ import annotations

import pytest

from tests.protocol.helpers import cluster, dreq, endpoints, req, responses, view
from xds_server import xds_types as T
from xds_server.protocol.delta import DeltaStream
from xds_server.protocol.errors import LimitExceeded, ProtocolError
from xds_server.protocol.events import Nacked
from xds_server.protocol.machine import MAX_SUBSCRIBED_NAMES
from xds_server.protocol.sotw import SotwStream
from xds_server.protocol.untrusted import KEEP_LIMIT, LOG_LIMIT, bounded, shown


def test_shown_escapes_what_could_forge_a_log_line_and_bounds_it() -> None:
    assert shown("a\nWARNING forged") == "a\\nWARNING forged"
    assert shown("\x1b[31mred\r\u2028") == "\\x1b[31mred\\r\\u2028"
    assert shown("productpage.default") == "productpage.default"
    assert shown("réseau ✓") == "réseau ✓"  # printable text stays readable
    long = shown("x" * 3_000_000)
    assert len(long) < LOG_LIMIT + 50 and long.endswith("[3000000 characters in all]")
    # Escaping can grow a text: the bound holds after escaping.
    assert len(shown("\x00" * LOG_LIMIT)) < LOG_LIMIT + 50


def test_bounded_keeps_the_start_and_says_how_much_is_gone() -> None:
    assert bounded("short") == "short"
    cut = bounded("y" * (KEEP_LIMIT + 10))
    assert cut.startswith("y" * KEEP_LIMIT) and cut.endswith("[10 more characters]")


def test_a_huge_nack_message_is_kept_bounded() -> None:
    s = SotwStream(view(cluster("a")))
    (resp,) = responses(s.on_request(req(T.CLUSTER)))
    huge = "bad\n" * 750_000  # 3 MB
    (nack,) = s.on_request(req(T.CLUSTER, nonce=resp.nonce, error=huge))
    assert isinstance(nack, Nacked) and len(nack.message) < KEEP_LIMIT + 50
    (status,) = s.status()
    assert status.nack_message == nack.message
    d = DeltaStream(view(cluster("a")))
    (dresp,) = d.on_request(dreq(T.CLUSTER))
    (dnack,) = d.on_request(dreq(T.CLUSTER, nonce=dresp.nonce, error=huge))
    assert isinstance(dnack, Nacked) and len(dnack.message) < KEEP_LIMIT + 50


def test_too_many_names_on_one_stream_is_a_limit() -> None:
    too_many = tuple(f"c{i}" for i in range(MAX_SUBSCRIBED_NAMES + 1))
    s = SotwStream(view(cluster("a"), endpoints("a", 1)))
    s.on_request(req(T.ENDPOINT, ("a",)))
    with pytest.raises(LimitExceeded, match=f"{MAX_SUBSCRIBED_NAMES + 1} endpoint names"):
        s.on_request(req(T.ENDPOINT, too_many))
    # Delta accumulates subscriptions over requests: the sum is what counts.
    d = DeltaStream(view(cluster("a"), endpoints("a", 1)))
    half = len(too_many) // 2
    d.on_request(dreq(T.ENDPOINT, too_many[:half]))
    with pytest.raises(LimitExceeded):
        d.on_request(dreq(T.ENDPOINT, too_many[half:]))
    # ... and so does what a reconnecting client says it holds.
    fresh = DeltaStream(view(cluster("a")))
    with pytest.raises(LimitExceeded):
        fresh.on_request(dreq(T.CLUSTER, initial=dict.fromkeys(too_many, "v")))
    # Unsubscribing makes room again.
    d2 = DeltaStream(view(cluster("a"), endpoints("a", 1)))
    d2.on_request(dreq(T.ENDPOINT, too_many[:half]))
    d2.on_request(dreq(T.ENDPOINT, too_many[half:], too_many[:half]))


def test_a_garbage_type_url_is_named_escaped_in_the_error() -> None:
    with pytest.raises(ProtocolError) as err:
        SotwStream(view()).on_request(req("type.googleapis.com/x\nFORGED" + "z" * 10_000))
    message = str(err.value)
    assert "\n" not in message and "\\nFORGED" in message and len(message) < 1000
