"""One built xDS resource: serialized once, versioned by its content."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import cast

from google.protobuf.message import Message

from xds_server.generators.frozen import Frozen, freeze, peek
from xds_server.protocol import wire


def content_hash(*parts: bytes) -> str:
    h = hashlib.blake2b(digest_size=8)
    for part in parts:
        h.update(part)
    return h.hexdigest()


class Resource:
    """A named resource with its wire bytes. Shared by every proxy that sees it.

    Equal content gives an equal version, also across restarts, so a
    reconnecting Envoy that already has it is sent nothing. `message` is read-only
    (`generators.frozen`): changing it raises; `message.copy()` gives one to change.
    """

    __slots__ = (
        "_delta_bytes",
        "_delta_entry",
        "_sotw_entry",
        "any_bytes",
        "message",
        "name",
        "type_url",
        "version",
    )

    def __init__(self, type_url: str, name: str, message: Message | Frozen[Message]) -> None:
        self.type_url = type_url
        self.name = name
        # A read-only stand-in for the message (it passes isinstance checks).
        self.message: Message = cast(Message, freeze(message))
        value = peek(message).SerializeToString(deterministic=True)
        self.any_bytes = wire.any_message(type_url, value)
        self.version = content_hash(value)
        self._delta_bytes: bytes | None = None
        self._sotw_entry: bytes | None = None
        self._delta_entry: bytes | None = None

    @property
    def delta_bytes(self) -> bytes:
        """The envoy.service.discovery.v3.Resource wrapper, built on first Delta use."""
        if self._delta_bytes is None:
            self._delta_bytes = wire.delta_resource(
                name=self.name, version=self.version, any_bytes=self.any_bytes
            )
        return self._delta_bytes

    @property
    def sotw_entry(self) -> bytes:
        """This resource as it sits in a DiscoveryResponse: field 2, length-prefixed."""
        if self._sotw_entry is None:
            self._sotw_entry = wire.field(wire.RESOURCES_FIELD, self.any_bytes)
        return self._sotw_entry

    @property
    def delta_entry(self) -> bytes:
        """This resource as it sits in a DeltaDiscoveryResponse: field 2, length-prefixed."""
        if self._delta_entry is None:
            self._delta_entry = wire.field(wire.RESOURCES_FIELD, self.delta_bytes)
        return self._delta_entry

    def __repr__(self) -> str:
        return f"Resource({self.type_url.rsplit('.', 1)[-1]} {self.name!r} v={self.version})"


def set_version(items: Iterable[tuple[str, str]]) -> str:
    """Version of a set of (name, version) pairs: what SotW calls version_info.

    Hashes "name\0version\n" for each pair in order, as one buffer: one hash update
    instead of four per resource (this runs for every response to every proxy).
    """
    text = "".join([f"{name}\0{version}\n" for name, version in sorted(items)])
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()
