"""Policy files for end-to-end tests, applied and then known to be in force.

A policy edit is in force for a caller only once (1) the control plane published
it, (2) the proxy ACKed it, and (3) the listener it replaced has drained: a caller's
pooled connection keeps the old filter chain until then, so polling for the new
answer alone can be fooled by an old connection (or, when the new answer is also
the old one, prove nothing). `Policies.write` waits for all three.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable
from pathlib import Path

from tests.e2e.harness import ControlPlaneThread, Envoy, wait_acked, wait_until


class Policies:
    def __init__(self, plane: ControlPlaneThread, config: Path, envoys: Iterable[Envoy]) -> None:
        self.plane = plane
        self.config = config
        self.envoys = list(envoys)
        self.original: dict[Path, str | None] = {}  # each file written: its text before

    def write(self, name: str, text: str | None, *, accepted: bool = True) -> None:
        """Write (None: remove) `<name>.yaml`; reload; wait until it is in force.
        `accepted=False`: the config must be refused instead (nothing changes)."""
        path = self.config / f"{name}.yaml"
        if path not in self.original:
            self.original[path] = path.read_text() if path.exists() else None
        if text is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(textwrap.dedent(text))
        ok = self.plane.call(self.plane.plane.reload)
        errors = self.plane.plane.config_status.errors
        assert ok == accepted, errors
        if accepted:
            self.settle()

    def clear(self) -> None:
        """Every file written back as it was (removed if it was not there)."""
        for path, text in self.original.items():
            if text is None:
                path.unlink(missing_ok=True)
            else:
                path.write_text(text)
        self.original.clear()
        assert self.plane.call(self.plane.plane.reload), self.plane.plane.config_status.errors
        self.settle()

    def settle(self) -> None:
        generation = self.plane.plane.config_status.generation
        for envoy in self.envoys:
            # Envoy applies an LDS response before it ACKs it: from the ACK on, a
            # replaced listener or filter chain counts as draining until its
            # connections are gone.
            wait_acked(self.plane, envoy.name, generation)
            wait_until(lambda e=envoy: settled(e), timeout=15, what=f"{envoy.name} drained")


def settled(envoy: Envoy) -> bool:
    """No listener warming, and no replaced listener or filter chain still holding
    connections (an in-place update drains only the changed filter chains)."""
    stats = envoy.stats("listener_manager.total_")
    return not any(
        stats.get(f"listener_manager.total_{what}", 0)
        for what in ("listeners_warming", "listeners_draining", "filter_chains_draining")
    )
