"""Fuzzing the sans-IO stream machines with generated request sequences (hypothesis
stateful testing), SotW and Delta, against a config that changes under them.

A client here is anything: nonces it was sent, stale ones, ones never sent ("from the
future") and garbage; ACKs, NACKs (endless ones too), subscription changes with
unknown names and wildcards; types the stream does not serve. The invariants:

* nothing but `ProtocolError` / `LimitExceeded` (which end the stream with a gRPC
  status) ever escapes, and `status()` always answers;
* never a response newer than the snapshot: every resource sent is the current view's
  (or, for make-before-break, one this stream sent before);
* never a resend of a rejected version while the config has not changed since the NACK;
* nonces are unique, and each response is for a type the client asked for.
"""

from __future__ import annotations

from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from tests.protocol.helpers import cluster, dreq, endpoints, listener, req, route
from xds_server import xds_types as T
from xds_server.cache.resource import Resource
from xds_server.protocol.delta import DeltaStream
from xds_server.protocol.errors import LimitExceeded, ProtocolError
from xds_server.protocol.events import Acked, DeltaResponse, Nacked, SotwResponse
from xds_server.protocol.sotw import SotwStream
from xds_server.protocol.view import StaticView

NAMES = ("a", "b", "c")
# Two contents of each resource: a config change is a change of variant or presence.
VARIANTS: dict[str, dict[tuple[str, int], Resource]] = {
    T.CLUSTER: {(n, v): cluster(n, timeout=v) for n in NAMES for v in (1, 2)},
    T.ENDPOINT: {(n, v): endpoints(n, 100 + v) for n in NAMES for v in (1, 2)},
    T.LISTENER: {(n, v): listener(n, 15000 + v) for n in NAMES for v in (1, 2)},
    T.ROUTE: {(n, v): route(n, vhosts=v) for n in NAMES for v in (1, 2)},
}
TYPES = tuple(VARIANTS)
GARBAGE_TYPES = ("", "type.googleapis.com/nope", "\x00\n" * 3, T.SECRET + "x")

config_of_type = st.dictionaries(st.sampled_from(NAMES), st.sampled_from((1, 2)), max_size=3)
config = st.fixed_dictionaries({t: config_of_type for t in TYPES})
names = st.lists(st.sampled_from((*NAMES, "*", "unknown", "")), max_size=5)
messages = st.one_of(st.just(""), st.text(max_size=30), st.just("x" * 5000 + "\nforged"))


def build_view(cfg: dict[str, dict[str, int]], generation: int) -> StaticView:
    by_type = {t: {n: VARIANTS[t][(n, v)] for n, v in sorted(cfg[t].items())} for t in TYPES}
    return StaticView(by_type, generation)


class _StreamFuzz(RuleBasedStateMachine):
    delta = False

    def __init__(self) -> None:
        super().__init__()
        self.generation = 1
        self.view = build_view({t: {n: 1 for n in NAMES} for t in TYPES}, 1)
        self.streams = 0
        self._connect()

    def _connect(self) -> None:
        """A new stream (the first, or the one Envoy dials after a refusal)."""
        self.streams += 1
        self.machine: Any = (DeltaStream if self.delta else SotwStream)(self.view)
        self.closed = False
        self.nonces_seen: set[str] = set()
        self.last: dict[str, Any] = {}  # type -> last response
        self.by_nonce: dict[str, Any] = {}
        self.content = self._key({t: {n: 1 for n in NAMES} for t in TYPES})
        self.sent: dict[str, dict[str, str]] = {t: {} for t in TYPES}  # name -> versions
        self.sent_versions: dict[str, set[tuple[str, str]]] = {t: set() for t in TYPES}
        self.asked: set[str] = set()
        # SotW: type -> (rejected version, generation); Delta: (type, name, version) -> gen
        self.rejected: dict[Any, int] = {}

    @staticmethod
    def _key(cfg: dict[str, dict[str, int]]) -> tuple[Any, ...]:
        return tuple(tuple(sorted(cfg[t].items())) for t in TYPES)

    # -- driving -------------------------------------------------------------------

    def _run(self, call: Any, requested_type: str | None = None) -> None:
        try:
            events = call()
        except (ProtocolError, LimitExceeded):
            self.closed = True  # the servicer ends the stream with a status
            generation, content = self.generation, self.content
            self._connect()
            self.generation, self.content = generation, content
            return
        for event in events:
            if isinstance(event, SotwResponse | DeltaResponse):
                self._check_response(event)
            elif isinstance(event, Nacked):
                self._record_nack(event)
            elif isinstance(event, Acked) and not self.delta:
                self.rejected.pop(event.type_url, None)

    def _check_response(self, event: Any) -> None:
        type_url = event.type_url
        assert type_url in self.asked, f"a response for {type_url}, never asked for"
        assert event.nonce not in self.nonces_seen, f"nonce {event.nonce} reused"
        self.nonces_seen.add(event.nonce)
        current = self.view.resources(type_url)
        for resource in event.resources:
            fresh = resource.name in current and current[resource.name] is resource
            older = (resource.name, resource.version) in self.sent_versions[type_url]
            assert fresh or older, f"{type_url} {resource.name}: not in the snapshot"
            self.sent_versions[type_url].add((resource.name, resource.version))
        if self.delta:
            for resource in event.resources:
                key = (type_url, resource.name, resource.version)
                assert self.rejected.get(key) != self.generation, f"resent rejected {key}"
        else:
            rejected = self.rejected.get(type_url)
            assert rejected is None or rejected != (event.version_info, self.generation), (
                f"resent the rejected {type_url} version {event.version_info}"
            )
        self.last[type_url] = event
        self.by_nonce[event.nonce] = event

    def _record_nack(self, event: Nacked) -> None:
        if self.delta:
            response = self.by_nonce.get(event.nonce)
            if response is not None:
                for resource in response.resources:
                    key = (event.type_url, resource.name, resource.version)
                    self.rejected[key] = self.generation
        else:
            self.rejected[event.type_url] = (event.version, self.generation)

    # -- rules ---------------------------------------------------------------------

    @rule(
        type_url=st.sampled_from(TYPES),
        subscribe=names,
        unsubscribe=names,
        nonce=st.sampled_from(("", "last", "stale", "future", "garbage")),
        nack=st.booleans(),
        message=messages,
    )
    def request(
        self,
        type_url: str,
        subscribe: list[str],
        unsubscribe: list[str],
        nonce: str,
        nack: bool,
        message: str,
    ) -> None:
        last = self.last.get(type_url)
        nonce_value = {
            "": "",
            "last": last.nonce if last is not None else "",
            "stale": "1",
            "future": "999999",
            "garbage": "\n\x00nonce",
        }[nonce]
        error = (message or "rejected") if nack else ""
        self.asked.add(type_url)
        if self.delta:
            request = dreq(type_url, tuple(subscribe), tuple(unsubscribe), nonce=nonce_value,
                           error=error)  # fmt: skip
        else:
            version = last.version_info if last is not None else ""
            request = req(type_url, tuple(subscribe), version=version, nonce=nonce_value,
                          error=error)  # fmt: skip
        self._run(lambda: self.machine.on_request(request))

    @rule(type_url=st.sampled_from(GARBAGE_TYPES))
    def garbage_type(self, type_url: str) -> None:
        request = dreq(type_url) if self.delta else req(type_url)
        streams = self.streams
        self._run(lambda: self.machine.on_request(request))
        assert self.streams == streams + 1, f"type {type_url!r} was served"

    @rule(cfg=config)
    def config_changes(self, cfg: dict[str, dict[str, int]]) -> None:
        content = self._key(cfg)
        if content != self.content:  # "the config changed": what may lift a rejection
            self.generation += 1
            self.content = content
        self.view = build_view(cfg, self.generation)
        self._run(lambda: self.machine.on_view(self.view))

    @rule()
    def same_config_again(self) -> None:
        # A publish that does not change this proxy: nothing new may be sent for a NACK.
        self._run(lambda: self.machine.on_view(self.view))

    @invariant()
    def status_answers(self) -> None:
        for status in self.machine.status():
            assert len(status.nack_message) < 5000  # bounded, whatever the client sent


class SotwFuzz(_StreamFuzz):
    delta = False


class DeltaFuzz(_StreamFuzz):
    delta = True


FUZZ = settings(
    max_examples=150,
    stateful_step_count=40,
    suppress_health_check=[HealthCheck.too_slow],
    deadline=None,
)
TestSotwFuzz = SotwFuzz.TestCase
TestSotwFuzz.settings = FUZZ
TestDeltaFuzz = DeltaFuzz.TestCase
TestDeltaFuzz.settings = FUZZ
