"""State-of-the-World xDS, one stream, no I/O.

Feed it DiscoveryRequests (`on_request`) and config changes (`on_view`); it
returns the events to act on: responses to write, ACKs and NACKs to log.
One instance serves an ADS stream (every type) or a per-type stream.

The rules it keeps, from the xDS spec and from watching real Envoy:
- ACK and NACK are told apart by `error_detail`, and only for the latest nonce;
  a stale nonce carries no ACK/NACK meaning, but a change of subscribed names
  is honoured even then (Envoy sends subscription changes with old nonces).
- What to send is decided by comparing the content that would be sent now
  with the content last sent, not by nonces alone. Names requested before they
  exist are sent when they appear.
- A rejected version is never sent again; a new version is sent when the
  config changes. A NACK repeated for the same nonce is said (and logged) once.
- A request that repeats an already-ACKed nonce asks for the resources again:
  Envoy does this for EDS after rebuilding a changed cluster, and waits 15 s
  for an answer otherwise. On ADS the endpoints of changed clusters are also
  resent right after the clusters.
- Make-before-break: on ADS, clusters that leave the config stay in CDS until
  the listeners and routes that may still use them have been updated.
- A type the client unsubscribed from entirely (no names, no wildcard: an SDS
  secret no cluster names any more) gets no responses: Envoy ignores them and
  would never ACK.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest

from xds_server import xds_types
from xds_server.cache.resource import Resource
from xds_server.protocol import encoding
from xds_server.protocol.events import (
    Acked,
    Event,
    Nacked,
    SotwResponse,
    SyncState,
    TypeStatus,
)
from xds_server.protocol.machine import StreamMachine
from xds_server.protocol.untrusted import bounded
from xds_server.protocol.view import ProxyView

WILDCARD = "*"


@dataclass(slots=True)
class _TypeState:
    type_url: str
    names: frozenset[str] = frozenset()
    wildcard: bool = False
    requested: bool = False  # any request seen for this type
    # What the client holds, as far as we know: the last response sent (or, on
    # reconnect, the version it told us it has).
    sent_nonce: str = ""
    sent_version: str = ""
    sent: dict[str, Resource] = field(default_factory=dict)
    acked_nonce: str = ""
    acked_version: str = ""
    nacked_version: str = ""
    nacked_nonce: str = ""
    nack_message: str = ""
    # Names whose resources must go out again even if unchanged.
    force: set[str] = field(default_factory=set)


class SotwStream(StreamMachine[_TypeState]):
    state_type = _TypeState

    # -- inputs -------------------------------------------------------------

    def on_request(self, request: DiscoveryRequest) -> list[Event]:
        type_url = request.type_url
        state, first = self._state_for(type_url)
        events: list[Event] = []
        names_changed = self._subscribe(state, request.resource_names, first)
        nonce = request.response_nonce

        if nonce and nonce != state.sent_nonce:
            # Stale: no ACK/NACK meaning, only a possible subscription change.
            return self._respond(state, events) if names_changed else events

        if nonce:
            if request.HasField("error_detail"):
                if nonce == state.nacked_nonce and not names_changed:
                    return events  # the same NACK again: nothing new to say or send
                state.nacked_nonce = nonce
                message = bounded(request.error_detail.message)
                state.nacked_version = state.sent_version
                state.nack_message = message
                events.append(
                    Nacked(type_url, state.sent_version, nonce, message, tuple(sorted(state.sent)))
                )
                # Keep-last-good: nothing is sent until the config changes.
                return self._respond(state, events) if names_changed else events
            if state.acked_nonce == nonce and not names_changed:
                # An ACK repeated: Envoy asks for the resources again.
                state.force.update(state.sent)
            else:
                state.acked_nonce = nonce
                state.acked_version = state.sent_version
                state.nacked_version = ""
                state.nack_message = ""
                events.append(Acked(type_url, state.sent_version, nonce))
        elif first and request.version_info:
            # Reconnect: the client holds this version already.
            state.sent_version = state.acked_version = request.version_info
        state.requested = True
        return self._respond(state, events)

    def on_view(self, view: ProxyView) -> list[Event]:
        """The proxy's config changed: push what differs, in make-before-break order."""
        self._view = view
        events: list[Event] = []
        cds = self._types.get(xds_types.CLUSTER)
        removing = self._ads and cds is not None and cds.requested and self._drops(cds)
        for type_url in xds_types.PUSH_ORDER:
            state = self._types.get(type_url)
            if state is not None and state.requested:
                self._respond(state, events, keep_removed=removing and state is cds)
        if removing and cds is not None:
            self._respond(cds, events)  # now nothing routes to the removed clusters
        return events

    # -- state for the operator ----------------------------------------------

    def status(self) -> list[TypeStatus]:
        return [_status(s) for s in self._types.values()]

    # -- internals ------------------------------------------------------------

    def _subscribe(self, state: _TypeState, names: list[str] | object, first: bool) -> bool:
        requested: frozenset[str] = frozenset(names)  # type: ignore[arg-type]
        self._check_names(state.type_url, requested)
        if WILDCARD in requested:
            wildcard = True
        elif (
            not requested
            and (first or state.wildcard)
            and state.type_url in xds_types.WILDCARD_TYPES
        ):
            wildcard = True  # legacy wildcard: an empty first request
        else:
            wildcard = False
        explicit = requested - {WILDCARD}
        changed = wildcard != state.wildcard or explicit != state.names
        state.wildcard = wildcard
        state.names = explicit
        return changed and not first

    def _wanted(self, state: _TypeState) -> Mapping[str, Resource]:
        available = self._view.resources(state.type_url)
        if state.wildcard or state.names.issuperset(available):
            return available  # Envoy's EDS request names every cluster it has: all of them
        return {n: available[n] for n in state.names if n in available}

    def _drops(self, state: _TypeState) -> bool:
        available = self._view.resources(state.type_url)
        return any(name not in available for name in state.sent)

    def _respond(
        self, state: _TypeState, events: list[Event], *, keep_removed: bool = False
    ) -> list[Event]:
        if not state.wildcard and not state.names and state.requested:
            # The client watches no name of this type any more (a cluster that named an
            # SDS secret is gone): Envoy drops responses for it unread, so nothing is
            # sent and nothing sent before is still owed an ACK.
            state.sent, state.sent_version, state.force = {}, "", set()
            return events
        wanted = self._wanted(state)
        if keep_removed:
            wanted = {**state.sent, **wanted}
        version = encoding.versions.of_resources(wanted)
        forced = state.force & wanted.keys()
        state.force.clear()
        if not forced:
            if version == state.sent_version:
                return events
            if version == state.nacked_version:
                return events  # never resend what was rejected
        previous = state.sent
        nonce = self._next_nonce()
        resources = tuple(wanted[n] for n in sorted(wanted))
        state.sent_nonce = nonce
        state.sent_version = version
        state.sent = {r.name: r for r in resources}
        events.append(SotwResponse(state.type_url, version, nonce, resources, version))
        if self._ads and state.type_url == xds_types.CLUSTER:
            self._resend_endpoints_of_changed_clusters(previous, state.sent, events)
        return events

    def _resend_endpoints_of_changed_clusters(
        self, before: Mapping[str, Resource], after: Mapping[str, Resource], events: list[Event]
    ) -> None:
        eds = self._types.get(xds_types.ENDPOINT)
        if eds is None or not eds.requested or not before:
            return
        changed = {n for n, r in after.items() if n in before and before[n].version != r.version}
        if changed:
            eds.force.update(changed)
            self._respond(eds, events)


def _status(state: _TypeState) -> TypeStatus:
    if state.nacked_version and state.nacked_version == state.sent_version:
        sync = SyncState.ERROR
    elif not state.sent_version:
        sync = SyncState.NOT_SENT
    elif state.acked_version == state.sent_version:
        sync = SyncState.SYNCED
    else:
        sync = SyncState.STALE
    return TypeStatus(
        type_url=state.type_url,
        state=sync,
        sent_version=state.sent_version,
        acked_version=state.acked_version,
        nack_message=state.nack_message,
        subscribed=tuple(sorted(state.names)),
        wildcard=state.wildcard,
    )
