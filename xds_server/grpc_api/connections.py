"""Which proxies are connected, on which streams, and how in sync they are."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from xds_server.cache.config_source import ADS
from xds_server.protocol.events import TypeStatus
from xds_server.protocol.view import ProxyView


class HasStatus(Protocol):
    def status(self) -> list[TypeStatus]: ...


@dataclass(slots=True)
class Connection:
    stream_id: int
    node_id: str
    service: str  # "ADS", "CDS", ...
    delta: bool
    peer: str
    machine: HasStatus
    connected_at: float = field(default_factory=time.time)
    flavour: str = ADS
    # The view last handed to the machine: the config generation it was built in (a
    # view carried over unchanged keeps its own) and the secrets epoch laid over it.
    generation: int = 0
    secret_epoch: int = 0

    def status(self) -> list[TypeStatus]:
        return self.machine.status()

    def hold(self, view: ProxyView) -> None:
        self.secret_epoch = getattr(view, "secret_epoch", 0)
        self.generation = view.generation - self.secret_epoch

    def holds(self, view: ProxyView) -> bool:
        return view.generation == self.generation + self.secret_epoch


class Connections:
    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._open: dict[int, Connection] = {}

    def add(
        self, node_id: str, service: str, delta: bool, peer: str, machine: HasStatus
    ) -> Connection:
        conn = Connection(next(self._ids), node_id, service, delta, peer, machine)
        self._open[conn.stream_id] = conn
        return conn

    def remove(self, conn: Connection) -> None:
        self._open.pop(conn.stream_id, None)

    def __iter__(self) -> Iterator[Connection]:
        return iter(list(self._open.values()))

    def __len__(self) -> int:
        return len(self._open)

    def for_node(self, node_id: str) -> list[Connection]:
        return [c for c in self._open.values() if c.node_id == node_id]
