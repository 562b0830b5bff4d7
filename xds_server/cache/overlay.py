"""Secrets beside the snapshot: a per-proxy layer that changes on its own schedule.

Certificates renew on a clock, not on config edits, so they do not live in the
`MeshSnapshot` (rebuilding every listener to rotate one key would be waste).
A `SecretSource` hands out each proxy's SECRET resources and counts its changes
in `epoch`; the cache lays them over the snapshot's view. The overlay's
generation is the base view's generation plus the secret epoch: both only grow,
so the sum changes whenever either does and streams wake for both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from xds_server import xds_types
from xds_server.cache.resource import Resource
from xds_server.protocol.view import ProxyView

if TYPE_CHECKING:
    from xds_server.cache.snapshot import MeshSnapshot


class SecretSource(Protocol):
    @property
    def epoch(self) -> int: ...

    def resources(self, node_id: str, snapshot: MeshSnapshot) -> Mapping[str, Resource]: ...


class SecretOverlayView:
    """A snapshot view whose SECRET type also holds a SecretSource's resources."""

    __slots__ = ("_base", "_secrets", "generation", "secret_epoch")

    def __init__(self, base: ProxyView, secrets: Mapping[str, Resource], epoch: int) -> None:
        self._base = base
        # Secrets the generators built themselves (if any) stay; identity's win on a clash.
        built = base.resources(xds_types.SECRET)
        self._secrets = {**built, **secrets} if built else secrets
        self.generation = base.generation + epoch
        self.secret_epoch = epoch

    def resources(self, type_url: str) -> Mapping[str, Resource]:
        if type_url == xds_types.SECRET:
            return self._secrets
        return self._base.resources(type_url)
