"""The interface between the cache and the streams: one proxy's resources."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from xds_server.cache.resource import Resource


class ProxyView(Protocol):
    """Every resource one proxy may see, by type and name. Immutable."""

    @property
    def generation(self) -> int: ...

    def resources(self, type_url: str) -> Mapping[str, Resource]: ...


EMPTY: Mapping[str, Resource] = {}


class StaticView:
    """A plain ProxyView over dicts; the cache's views and the tests use it."""

    __slots__ = ("by_type", "generation")

    def __init__(self, by_type: Mapping[str, Mapping[str, Resource]], generation: int = 0) -> None:
        self.by_type = by_type
        self.generation = generation

    def resources(self, type_url: str) -> Mapping[str, Resource]:
        return self.by_type.get(type_url, EMPTY)
