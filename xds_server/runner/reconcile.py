"""What must change on this machine when the config changes (no I/O).

`up` runs one unit per WorkloadEntry: its sidecar, started from a bootstrap, and the
app its annotations ask for. Comparing the running units with those the new config
plans gives the work: workloads added (start app, then sidecar), removed (stop them
once no proxy routes there), and changed: a different bootstrap (address, labels,
service account) restarts the sidecar, a different app command restarts the app.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from xds_server.galley.model import WorkloadEntry
from xds_server.runner.plan import AppPlan, MeshPlan


@dataclass(frozen=True, slots=True)
class Unit:
    workload: WorkloadEntry
    bootstrap: str  # the sidecar's bootstrap, rendered
    app: AppPlan | None

    @property
    def proxy_id(self) -> str:
        return self.workload.proxy_id

    @property
    def app_argv(self) -> tuple[str, ...] | None:
        return tuple(self.app.argv()) if self.app else None


@dataclass(frozen=True, slots=True)
class Changes:
    added: tuple[Unit, ...] = ()
    removed: tuple[Unit, ...] = ()
    sidecars_changed: tuple[Unit, ...] = ()  # the new unit; its sidecar restarts
    apps_changed: tuple[Unit, ...] = ()  # the new unit; its app (re)starts or stops

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.sidecars_changed or self.apps_changed)


def units(plan: MeshPlan, bootstrap_of: Callable[[WorkloadEntry], str]) -> dict[str, Unit]:
    return {
        we.proxy_id: Unit(we, bootstrap_of(we), plan.app_of(we.proxy_id)) for we in plan.workloads
    }


def diff(running: Mapping[str, Unit], desired: Mapping[str, Unit]) -> Changes:
    added = tuple(u for key, u in desired.items() if key not in running)
    removed = tuple(u for key, u in running.items() if key not in desired)
    kept = [(running[key], u) for key, u in desired.items() if key in running]
    return Changes(
        added=added,
        removed=removed,
        sidecars_changed=tuple(new for old, new in kept if old.bootstrap != new.bootstrap),
        apps_changed=tuple(new for old, new in kept if old.app_argv != new.app_argv),
    )
