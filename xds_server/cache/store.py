"""The live cache: the current snapshot, and the streams watching it.

Publishing swaps in a new, already-checked snapshot and wakes every watcher;
a watcher then asks for its proxy's view and diffs it against what it sent.
Nothing here knows about gRPC or asyncio: a watcher is a plain callback.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from xds_server.cache.config_source import ADS
from xds_server.cache.overlay import SecretOverlayView, SecretSource
from xds_server.cache.snapshot import MeshSnapshot, Transform
from xds_server.galley.model import MeshConfig
from xds_server.protocol.view import StaticView

log = logging.getLogger(__name__)

Watcher = Callable[[], None]


class SnapshotCache:
    def __init__(self, *, transform: Transform | None = None) -> None:
        # Test seam (see snapshot.Transform); applies from the next build on.
        self.transform = transform
        self._snapshot = MeshSnapshot(MeshConfig(), 0)
        self._watchers: set[Watcher] = set()
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
        for wake in watchers:
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
        return SecretOverlayView(base, secrets, snapshot.generation + self.secrets.epoch)

    def secrets_changed(self) -> None:
        """Wake every watcher after the SecretSource's epoch moved (only SDS differs)."""
        with self._lock:
            watchers = list(self._watchers)
        for wake in watchers:
            wake()

    def watch(self, wake: Watcher) -> Callable[[], None]:
        """Call `wake` after every publish; returns the function that stops it."""
        with self._lock:
            self._watchers.add(wake)

        def cancel() -> None:
            with self._lock:
                self._watchers.discard(wake)

        return cancel
