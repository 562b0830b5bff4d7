"""What the stream state machines hand back: responses to write, things to log."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from xds_server.cache.resource import Resource
from xds_server.protocol import encoding, wire


@dataclass(frozen=True, slots=True)
class SotwResponse:
    type_url: str
    version_info: str
    nonce: str
    resources: tuple[Resource, ...]
    # The content version of exactly `resources`, when the machine knows it: equal
    # sets sent to many proxies are then joined once (see protocol.encoding).
    cache_key: str = field(default="", compare=False, repr=False)

    def encode(self) -> bytes:
        return wire.discovery_response(
            version_info=self.version_info,
            encoded_resources=_joined(self.type_url, self.cache_key, False, self.resources),
            type_url=self.type_url,
            nonce=self.nonce,
        )


@dataclass(frozen=True, slots=True)
class DeltaResponse:
    type_url: str
    system_version_info: str
    nonce: str
    resources: tuple[Resource, ...]
    removed: tuple[str, ...]
    cache_key: str = field(default="", compare=False, repr=False)  # as SotwResponse's

    def encode(self) -> bytes:
        return wire.delta_discovery_response(
            system_version_info=self.system_version_info,
            encoded_resources=_joined(self.type_url, self.cache_key, True, self.resources),
            type_url=self.type_url,
            nonce=self.nonce,
            removed_resources=self.removed,
        )


def _joined(type_url: str, key: str, delta: bool, resources: tuple[Resource, ...]) -> bytes:
    def join() -> bytes:
        if delta:
            return b"".join([r.delta_entry for r in resources])
        return b"".join([r.sotw_entry for r in resources])

    # A few resources join faster than the shared cache is looked up (and kept).
    if not key or len(resources) < encoding.VersionMemo.SMALL:
        return join()
    return encoding.shared.get((type_url, key, delta), join)


@dataclass(frozen=True, slots=True)
class Acked:
    type_url: str
    version: str
    nonce: str


@dataclass(frozen=True, slots=True)
class Nacked:
    """Envoy rejected a response. `message` is Envoy's text: show it, never parse it."""

    type_url: str
    version: str  # the version Envoy rejected
    nonce: str
    message: str
    resource_names: tuple[str, ...]


Response = SotwResponse | DeltaResponse
Event = SotwResponse | DeltaResponse | Acked | Nacked


class SyncState(StrEnum):
    """As `istioctl proxy-status` says it."""

    SYNCED = "SYNCED"
    STALE = "STALE"  # sent, not yet acknowledged
    NOT_SENT = "NOT SENT"
    ERROR = "ERROR"  # the last response was rejected


@dataclass(frozen=True, slots=True)
class TypeStatus:
    type_url: str
    state: SyncState
    sent_version: str
    acked_version: str
    nack_message: str
    subscribed: tuple[str, ...]
    wildcard: bool
