"""Protobuf wire encoding of discovery responses from pre-serialized resources.

A response is a few scalar fields around resources that every proxy shares.
Concatenating their cached bytes is exactly what `SerializeToString` would
produce, without copying each resource into a new message per proxy.
"""

from __future__ import annotations

from collections.abc import Iterable

_LEN = 2  # wire type: length-delimited
RESOURCES_FIELD = 2  # `resources` in DiscoveryResponse and DeltaDiscoveryResponse


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    """One length-delimited field (string, bytes or embedded message)."""
    return _varint(number << 3 | _LEN) + _varint(len(payload)) + payload


def string_field(number: int, value: str) -> bytes:
    return field(number, value.encode()) if value else b""


def any_message(type_url: str, value: bytes) -> bytes:
    """google.protobuf.Any{type_url=1, value=2}."""
    return string_field(1, type_url) + field(2, value)


# envoy.service.discovery.v3.DiscoveryResponse field numbers.
def discovery_response(
    *,
    version_info: str,
    resources: Iterable[bytes] = (),
    type_url: str,
    nonce: str,
    encoded_resources: bytes = b"",
) -> bytes:
    """`resources` are serialized Any messages; or pass `encoded_resources`, the
    resource fields already framed (see Resource.sotw_entry)."""
    body = [string_field(1, version_info), encoded_resources]
    body.extend(field(RESOURCES_FIELD, r) for r in resources)
    body.append(string_field(4, type_url))
    body.append(string_field(5, nonce))
    return b"".join(body)


# envoy.service.discovery.v3.Resource field numbers: version=1, resource=2, name=3.
def delta_resource(*, name: str, version: str, any_bytes: bytes) -> bytes:
    return string_field(1, version) + field(2, any_bytes) + string_field(3, name)


# envoy.service.discovery.v3.DeltaDiscoveryResponse field numbers.
def delta_discovery_response(
    *,
    system_version_info: str,
    resources: Iterable[bytes] = (),
    type_url: str,
    nonce: str,
    removed_resources: Iterable[str],
    encoded_resources: bytes = b"",
) -> bytes:
    """`resources` are serialized envoy.service.discovery.v3.Resource messages; or pass
    `encoded_resources`, already framed (see Resource.delta_entry)."""
    body = [string_field(1, system_version_info), encoded_resources]
    body.extend(field(RESOURCES_FIELD, r) for r in resources)
    body.append(string_field(4, type_url))
    body.append(string_field(5, nonce))
    body.extend(field(6, name.encode()) for name in removed_resources)
    return b"".join(body)
