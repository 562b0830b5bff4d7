"""What the stream handler tells an observer: the seam for push timing and telemetry.

The handler calls these as things happen on a stream; an observer does no I/O and
must be quick (it runs on the stream's own path). `xds_server.pushes.PushTracker`
is the real one: convergence, queue and push times, rejects, expired nonces.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from xds_server.grpc_api.connections import Connection
    from xds_server.protocol.events import Event


class StreamObserver(Protocol):
    def opened(self, conn: Connection, node: Any) -> None:
        """A stream was accepted; `node` is the first request's envoy Node."""

    def closed(self, conn: Connection) -> None: ...

    def request(self, conn: Connection, request: Any) -> None:
        """A (Delta)DiscoveryRequest arrived, before the state machine sees it."""

    def event(self, conn: Connection, event: Event, nbytes: int, seconds: float) -> None:
        """The machine's event was acted on: a response written (`nbytes` in
        `seconds`, encoding included), or an ACK / NACK (0, 0.0)."""

    def pushed(self, conn: Connection, queued: float) -> None:
        """A config change reached the stream: its new view was handed to the machine
        and every response written, `queued` seconds after the stream was woken."""


class NullObserver:
    def opened(self, conn: Connection, node: Any) -> None:
        pass

    def closed(self, conn: Connection) -> None:
        pass

    def request(self, conn: Connection, request: Any) -> None:
        pass

    def event(self, conn: Connection, event: Event, nbytes: int, seconds: float) -> None:
        pass

    def pushed(self, conn: Connection, queued: float) -> None:
        pass
