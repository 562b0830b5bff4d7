"""SotW: a type the client stops watching entirely gets no more responses.

When the last cluster naming an SDS secret goes, Envoy unsubscribes from every SDS
name (an empty, non-wildcard request) and ignores any SDS response that still
arrives, so it never ACKs it. The stream must neither send one nor wait for an ACK.
"""

from __future__ import annotations

from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

from tests.protocol.helpers import ack, req, responses, view
from xds_server import xds_types as T
from xds_server.cache.resource import Resource
from xds_server.protocol.events import SyncState
from xds_server.protocol.sotw import SotwStream


def secret(name: str, ca: str = "roots") -> Resource:
    message = secret_pb2.Secret(name=name)
    message.validation_context.trusted_ca.inline_string = ca
    return Resource(T.SECRET, name, message)


def sds_status(stream: SotwStream) -> SyncState:
    [status] = [s for s in stream.status() if s.type_url == T.SECRET]
    return status.state


def test_no_response_to_a_type_nobody_watches_and_no_ack_owed() -> None:
    stream = SotwStream(view(secret("file-root:/ca.crt")))
    [first] = responses(stream.on_request(req(T.SECRET, ("file-root:/ca.crt",), node=True)))
    stream.on_request(ack(first, ("file-root:/ca.crt",)))
    # The config drops the secret: the push races Envoy's unsubscription.
    [pushed] = responses(stream.on_view(view()))
    assert pushed.resources == ()
    assert sds_status(stream) is SyncState.STALE
    # Envoy unsubscribes (with the old nonce) and drops the push unread.
    assert responses(stream.on_request(req(T.SECRET, (), nonce=first.nonce))) == []
    assert sds_status(stream) is SyncState.NOT_SENT  # nothing outstanding
    # Later changes send nothing while nobody watches; a new subscription is answered.
    assert responses(stream.on_view(view(secret("file-root:/other.crt")))) == []
    [again] = responses(stream.on_request(req(T.SECRET, ("file-root:/other.crt",))))
    assert [r.name for r in again.resources] == ["file-root:/other.crt"]
