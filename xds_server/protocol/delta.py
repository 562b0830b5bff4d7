"""Incremental (Delta) xDS, one stream, no I/O.

Each type tracks the version of every resource the client holds. A response
carries only what differs from that, plus `removed_resources` for what the
client holds that is gone. On reconnect `initial_resource_versions` seeds that
map, so an Envoy that is up to date is sent nothing.

NACKs roll the client's map back to what it held before, and the rejected
(name, version) pairs are never sent again. Envoy sends nothing after it
rebuilds a changed cluster, so on ADS the endpoints of changed clusters always
follow the clusters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from envoy.service.discovery.v3.discovery_pb2 import DeltaDiscoveryRequest

from xds_server import xds_types
from xds_server.cache.resource import Resource
from xds_server.protocol import encoding
from xds_server.protocol.events import (
    Acked,
    DeltaResponse,
    Event,
    Nacked,
    SyncState,
    TypeStatus,
)
from xds_server.protocol.machine import MAX_SUBSCRIBED_NAMES, StreamMachine
from xds_server.protocol.untrusted import bounded
from xds_server.protocol.view import ProxyView

WILDCARD = "*"


@dataclass(slots=True)
class _Pending:
    """One response awaiting ACK: what it changed, to roll back on NACK."""

    version: str
    changes: dict[str, str | None]  # name -> version sent (None: removed)
    before: dict[str, str | None]  # name -> version held before


@dataclass(slots=True)
class _TypeState:
    type_url: str
    names: set[str] = field(default_factory=set)
    wildcard: bool = False
    held: dict[str, str] = field(default_factory=dict)  # what the client holds (optimistic)
    pending: dict[str, _Pending] = field(default_factory=dict)  # nonce -> changes
    rejected: dict[str, str] = field(default_factory=dict)  # name -> version Envoy NACKed
    told_missing: set[str] = field(default_factory=set)  # subscribed names reported absent
    force: set[str] = field(default_factory=set)
    answered: bool = False  # the first request got its response
    sent_version: str = ""
    acked_version: str = ""
    nack_message: str = ""
    errored: bool = False


class DeltaStream(StreamMachine[_TypeState]):
    state_type = _TypeState

    # -- inputs -------------------------------------------------------------

    def on_request(self, request: DeltaDiscoveryRequest) -> list[Event]:
        type_url = request.type_url
        state, first = self._state_for(type_url)
        if first:
            self._check_names(type_url, request.initial_resource_versions)
            state.held.update(request.initial_resource_versions)
        events: list[Event] = []
        self._subscribe(state, request, first)

        nonce = request.response_nonce
        pending = state.pending.pop(nonce, None) if nonce else None
        if pending is not None:
            if request.HasField("error_detail"):
                for name, version in pending.changes.items():
                    if version is not None:
                        state.rejected[name] = version
                    previous = pending.before.get(name)
                    if previous is None:
                        state.held.pop(name, None)
                    else:
                        state.held[name] = previous
                message = bounded(request.error_detail.message)
                state.errored = True
                state.nack_message = message
                rejected = tuple(sorted(pending.changes))
                events.append(Nacked(type_url, pending.version, nonce, message, rejected))
            else:
                state.acked_version = pending.version
                if not state.pending:
                    state.errored = False
                    state.nack_message = ""
                events.append(Acked(type_url, pending.version, nonce))
        return self._respond(state, events, initial=first)

    def on_view(self, view: ProxyView) -> list[Event]:
        self._view = view
        events: list[Event] = []
        # Make-before-break: clusters and their endpoints leave only after the
        # listeners and routes that may use them have been updated.
        deferred = (xds_types.CLUSTER, xds_types.ENDPOINT) if self._ads else ()
        for type_url in xds_types.PUSH_ORDER:
            state = self._types.get(type_url)
            if state is not None:
                # A rejected version stays rejected only until the config moves on.
                available = view.resources(type_url)
                state.rejected = {
                    n: v
                    for n, v in state.rejected.items()
                    if n in available and available[n].version == v
                }
                if not state.rejected:
                    # The config moved past what Envoy rejected (or back to what it holds).
                    state.errored = False
                self._respond(state, events, defer_removals=type_url in deferred)
        for type_url in deferred:
            state = self._types.get(type_url)
            if state is not None:
                self._respond(state, events)
        return events

    def status(self) -> list[TypeStatus]:
        out = []
        for s in self._types.values():
            if s.errored:
                sync = SyncState.ERROR
            elif not s.sent_version:
                sync = SyncState.NOT_SENT
            elif s.pending:
                sync = SyncState.STALE
            else:
                sync = SyncState.SYNCED
            out.append(
                TypeStatus(
                    type_url=s.type_url,
                    state=sync,
                    sent_version=s.sent_version,
                    acked_version=s.acked_version,
                    nack_message=s.nack_message,
                    subscribed=tuple(sorted(s.names)),
                    wildcard=s.wildcard,
                )
            )
        return out

    # -- internals ------------------------------------------------------------

    def _subscribe(self, state: _TypeState, request: DeltaDiscoveryRequest, first: bool) -> None:
        subscribe = set(request.resource_names_subscribe)
        unsubscribe = set(request.resource_names_unsubscribe)
        if first and not subscribe and state.type_url in xds_types.WILDCARD_TYPES:
            state.wildcard = True  # legacy wildcard
        if WILDCARD in subscribe:
            state.wildcard = True
        if WILDCARD in unsubscribe:
            state.wildcard = False
        subscribe.discard(WILDCARD)
        unsubscribe.discard(WILDCARD)
        if len(state.names) + len(subscribe) > MAX_SUBSCRIBED_NAMES:
            self._check_names(state.type_url, (state.names | subscribe) - unsubscribe)
        state.names |= subscribe
        state.names -= unsubscribe
        state.told_missing -= unsubscribe
        for name in unsubscribe:
            # The client forgets what it unsubscribed from; so do we.
            if not state.wildcard:
                state.held.pop(name, None)

    def _in_scope(self, state: _TypeState) -> Mapping[str, Resource]:
        available = self._view.resources(state.type_url)
        if state.wildcard or state.names.issuperset(available):
            return available  # Envoy's EDS subscription names every cluster it has
        return {n: available[n] for n in state.names if n in available}

    def _respond(
        self,
        state: _TypeState,
        events: list[Event],
        *,
        initial: bool = False,
        defer_removals: bool = False,
    ) -> list[Event]:
        scope = self._in_scope(state)
        changed: list[Resource] = []
        if not state.held and not state.rejected:
            # First response (the common case, 1,000s of resources): all of it.
            changed = [scope[name] for name in sorted(scope)]
        for name in sorted(scope) if not changed else ():
            resource = scope[name]
            if state.rejected.get(name) == resource.version:
                continue
            if state.held.get(name) != resource.version or name in state.force:
                changed.append(resource)
        state.force.clear()
        available = self._view.resources(state.type_url)
        removed = sorted(
            n
            for n in state.held
            if n not in available and (state.wildcard or n in state.names) and not defer_removals
        )
        # Subscribed names that do not exist: say so once, so Envoy need not wait.
        missing = sorted(state.names - available.keys() - state.held.keys() - state.told_missing)
        state.told_missing.update(missing)
        if not changed and not removed and not missing and not (initial and not state.answered):
            return events
        if initial and not state.answered and not (changed or removed or missing) and state.held:
            # Reconnect and the client is up to date: nothing to say.
            state.answered = True
            return events
        state.answered = True

        nonce = self._next_nonce()
        before: dict[str, str | None] = {}
        changes: dict[str, str | None] = {}
        if not state.held:
            changes = {r.name: r.version for r in changed}
            before = dict.fromkeys(changes)
            state.held.update(changes)  # type: ignore[arg-type]  # no None among them
        else:
            for r in changed:
                before[r.name] = state.held.get(r.name)
                changes[r.name] = state.held[r.name] = r.version
        for name in removed:
            before[name] = state.held.pop(name)
            changes[name] = None
        # Everything the client holds, nothing removed: `version` names exactly this set.
        whole = not removed and not missing and len(changed) == len(state.held)
        if whole and len(changed) == len(scope):
            # The client now holds exactly `scope`, a mapping the snapshot shares
            # between proxies: its version is usually a memo hit by identity.
            version = encoding.versions.of_resources(scope)
        else:
            version = encoding.versions.of_versions(state.held)
        state.sent_version = version
        state.pending[nonce] = _Pending(version, changes, before)
        events.append(
            DeltaResponse(
                state.type_url,
                version,
                nonce,
                tuple(changed),
                tuple(removed) + tuple(missing),
                version if whole else "",
            )
        )
        if self._ads and state.type_url == xds_types.CLUSTER:
            rebuilt = {n for n, v in changes.items() if v is not None and before.get(n) is not None}
            eds = self._types.get(xds_types.ENDPOINT)
            if rebuilt and eds is not None:
                eds.force |= rebuilt & eds.names
                if eds.force:
                    self._respond(eds, events)
        return events
