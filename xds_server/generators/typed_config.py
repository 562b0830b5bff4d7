"""`pack`: a message as the `google.protobuf.Any` Envoy's `typed_config` fields hold."""

from __future__ import annotations

from google.protobuf import any_pb2, message


def pack(config: message.Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(config)
    return packed
