"""Process supervision for `pocketmesh up`: one machine, no Docker.

`plan` decides what to run from the mesh config (a sidecar per WorkloadEntry, the
local apps its annotations ask for, the URL to open); `process` starts and stops
one child by PID with its own log; `lock` keeps a second `up` from clashing;
`supervisor` starts everything in order, shows progress, and stops it all.
"""

from xds_server.runner.lock import AlreadyRunning, RunLock
from xds_server.runner.plan import AppPlan, MeshPlan, PlanError, plan_mesh
from xds_server.runner.supervisor import Supervisor, UpOptions

__all__ = [
    "AlreadyRunning",
    "AppPlan",
    "MeshPlan",
    "PlanError",
    "RunLock",
    "Supervisor",
    "UpOptions",
    "plan_mesh",
]
