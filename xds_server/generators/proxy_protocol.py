"""DestinationRule `trafficPolicy.proxyProtocol`: a PROXY protocol header (v1 text or v2
binary) before the bytes of each upstream connection, telling the upstream who the
client was. Istio's applyUpstreamProxyProtocol: Envoy's upstream_proxy_protocol
transport socket wraps whatever the cluster speaks (raw bytes, TLS, mesh mTLS), so the
header goes first and the TLS handshake after it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from envoy.config.core.v3 import base_pb2, proxy_protocol_pb2
from envoy.extensions.transport_sockets.proxy_protocol.v3 import upstream_proxy_protocol_pb2
from envoy.extensions.transport_sockets.raw_buffer.v3 import raw_buffer_pb2

from xds_server.generators.typed_config import pack

__all__ = ["UPSTREAM_PROXY_PROTOCOL", "change_inner", "inner_socket", "with_proxy_protocol"]

UPSTREAM_PROXY_PROTOCOL: Final = "envoy.transport_sockets.upstream_proxy_protocol"
RAW_BUFFER: Final = "envoy.transport_sockets.raw_buffer"
VERSIONS: Final = {
    "V1": proxy_protocol_pb2.ProxyProtocolConfig.V1,
    "V2": proxy_protocol_pb2.ProxyProtocolConfig.V2,
}
Wrapper = upstream_proxy_protocol_pb2.ProxyProtocolUpstreamTransport


def with_proxy_protocol(
    socket: base_pb2.TransportSocket | None, version: str
) -> base_pb2.TransportSocket:
    """`socket` (None: plaintext) behind a PROXY protocol header of `version`."""
    inner = socket or base_pb2.TransportSocket(
        name=RAW_BUFFER, typed_config=pack(raw_buffer_pb2.RawBuffer())
    )
    wrapper = Wrapper(
        config=proxy_protocol_pb2.ProxyProtocolConfig(version=VERSIONS[version]),
        transport_socket=inner,
    )
    return base_pb2.TransportSocket(name=UPSTREAM_PROXY_PROTOCOL, typed_config=pack(wrapper))


def inner_socket(socket: base_pb2.TransportSocket) -> tuple[base_pb2.TransportSocket, str]:
    """(what the cluster speaks under any PROXY header, the header's version or '')."""
    if socket.name != UPSTREAM_PROXY_PROTOCOL:
        return socket, ""
    wrapper = Wrapper()
    socket.typed_config.Unpack(wrapper)
    version = proxy_protocol_pb2.ProxyProtocolConfig.Version.Name(wrapper.config.version)
    inner = wrapper.transport_socket
    if inner.name == RAW_BUFFER:
        return base_pb2.TransportSocket(), version
    return inner, version


def change_inner(
    socket: base_pb2.TransportSocket, change: Callable[[base_pb2.TransportSocket], bool]
) -> bool | None:
    """Apply `change` to the socket under a PROXY header, in place (None: `socket` has no
    PROXY header; else whether `change` changed it)."""
    if socket.name != UPSTREAM_PROXY_PROTOCOL:
        return None
    wrapper = Wrapper()
    socket.typed_config.Unpack(wrapper)
    if not change(wrapper.transport_socket):
        return False
    socket.typed_config.Pack(wrapper)
    return True
