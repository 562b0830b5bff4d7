"""What the SotW and Delta state machines share: per-type state, nonces, the view."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from xds_server import xds_types
from xds_server.protocol.errors import ProtocolError
from xds_server.protocol.view import ProxyView

S = TypeVar("S")


class StreamMachine(Generic[S]):
    """One xDS stream's state; subclasses say how requests and config changes play out."""

    # The per-type state class of the protocol: built from the type URL.
    state_type: Callable[[str], S]

    def __init__(
        self,
        view: ProxyView,
        *,
        allowed_types: frozenset[str] = xds_types.ALL_TYPES,
        ads: bool = True,
    ) -> None:
        self._view = view
        self._allowed = allowed_types
        self._ads = ads
        self._types: dict[str, S] = {}
        self._nonce = 0

    def _state_for(self, type_url: str) -> tuple[S, bool]:
        """The state of `type_url`, and whether this is its first request."""
        if type_url not in self._allowed:
            raise ProtocolError(f"type {type_url!r} is not served on this stream")
        state = self._types.get(type_url)
        if state is not None:
            return state, False
        state = self._types[type_url] = self.state_type(type_url)
        return state, True

    def _next_nonce(self) -> str:
        self._nonce += 1
        return str(self._nonce)
