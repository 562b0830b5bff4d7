"""The live cache: the current snapshot, and the streams watching it.

Publishing swaps in a new, already-checked snapshot and wakes every watcher;
a watcher then asks for its proxy's view and diffs it against what it sent.
Nothing here knows about gRPC or asyncio: a watcher is a plain callback.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol

from xds_server.cache.config_source import ADS
from xds_server.cache.overlay import SecretOverlayView, SecretSource
from xds_server.cache.snapshot import MeshSnapshot, Transform
from xds_server.galley.model import MeshConfig
from xds_server.protocol.view import StaticView

log = logging.getLogger(__name__)


class HeldView(Protocol):
    """What a stream holds: whose view, and the config generation it was built in."""

    node_id: str
    flavour: str
    generation: int


Watcher = Callable[[], None]
_Watch = tuple[Watcher, str | None]


class SnapshotCache:
    def __init__(self, *, transform: Transform | None = None) -> None:
        # Test seam (see snapshot.Transform); applies from the next build on.
        self.transform = transform
        self._snapshot = MeshSnapshot(MeshConfig(), 0)
        self._watchers: set[_Watch] = set()
        self._lock = threading.Lock()
        self._published = False
        # Per-proxy SDS secrets, laid over every view (see cache.overlay).
        self.secrets: SecretSource | None = None

    @property
    def snapshot(self) -> MeshSnapshot:
        return self._snapshot

    @property
    def ready(self) -> bool:
        """True once a config has been published."""
        return self._published

    def build(self, mesh: MeshConfig) -> MeshSnapshot:
        """Build and check a snapshot without publishing it (raises if inconsistent)."""
        return MeshSnapshot(
            mesh, self._snapshot.generation + 1, transform=self.transform, previous=self._snapshot
        )

    def publish(self, snapshot: MeshSnapshot) -> None:
        with self._lock:
            self._snapshot = snapshot
            self._published = True
            watchers = list(self._watchers)
        # A carried-over view is the very object the stream already holds: with
        # 2,000 streams, waking them all costs more than the change itself.
        carried = snapshot.carried
        for wake, node_id in watchers:
            if node_id is None or node_id not in carried:
                wake()

    def update(self, mesh: MeshConfig) -> MeshSnapshot:
        snapshot = self.build(mesh)
        self.publish(snapshot)
        return snapshot

    def view(self, node_id: str, flavour: str = ADS) -> StaticView | SecretOverlayView:
        snapshot = self._snapshot
        base = snapshot.view(node_id, flavour)
        if self.secrets is None:
            return base
        secrets = self.secrets.resources(node_id, snapshot)
        return SecretOverlayView(base, secrets, self.secrets.epoch)

    def current_generation(self, held: HeldView) -> int:
        """The newest config generation a stream holding this view is current with: a
        view carried over unchanged into the live snapshot is as good as a rebuilt one."""
        snapshot = self._snapshot
        if snapshot.view(held.node_id, held.flavour).generation == held.generation:
            return snapshot.generation
        return held.generation

    def secrets_changed(self) -> None:
        """Wake every watcher after the SecretSource's epoch moved (only SDS differs)."""
        with self._lock:
            watchers = list(self._watchers)
        for wake, _ in watchers:
            wake()

    def watch(self, wake: Watcher, node_id: str | None = None) -> Callable[[], None]:
        """Call `wake` after every publish that may change `node_id`'s view (every
        publish if None), and after every secrets change; returns the function that
        stops it."""
        entry = (wake, node_id)
        with self._lock:
            self._watchers.add(entry)

        def cancel() -> None:
            with self._lock:
                self._watchers.discard(entry)

        return cancel
