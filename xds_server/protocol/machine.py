"""What the SotW and Delta state machines share: per-type state, nonces, the view."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Final, Generic, TypeVar

from xds_server import xds_types
from xds_server.protocol.errors import LimitExceeded, ProtocolError
from xds_server.protocol.untrusted import shown
from xds_server.protocol.view import ProxyView

S = TypeVar("S")

# Names one stream may subscribe to, per type. Envoy names what it needs (an EDS
# request names every EDS cluster it has), so this is far above any real proxy's
# count; it keeps one client from making the server hold millions of names.
MAX_SUBSCRIBED_NAMES: Final = 50_000


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

    @property
    def view(self) -> ProxyView:
        """The proxy's resources as this stream last saw them."""
        return self._view

    def _state_for(self, type_url: str) -> tuple[S, bool]:
        """The state of `type_url`, and whether this is its first request."""
        if type_url not in self._allowed:
            raise ProtocolError(f"type {shown(repr(type_url))} is not served on this stream")
        state = self._types.get(type_url)
        if state is not None:
            return state, False
        state = self._types[type_url] = self.state_type(type_url)
        return state, True

    @staticmethod
    def _check_names(type_url: str, names: Collection[str]) -> None:
        if len(names) > MAX_SUBSCRIBED_NAMES:
            raise LimitExceeded(
                f"a subscription to {len(names)} {xds_types.short_name(type_url)} names is "
                f"more than one stream may hold ({MAX_SUBSCRIBED_NAMES})"
            )

    def _next_nonce(self) -> str:
        self._nonce += 1
        return str(self._nonce)
