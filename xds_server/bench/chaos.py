"""`pocketmesh bench --chaos`: faults under steady traffic through real Envoys, measured.

Scenarios (see `chaos_mesh` for the mesh; every figure is from the run, nothing assumed):

restart     the control plane is killed (SIGKILL) and started again after `outage`
            seconds: requests sent/failed before, during and after; time from the
            restart to every proxy SYNCED; resource versions and certificates before and
            after (target: none changed); config updates Envoy applied across it. Run
            with the bootstrap's xDS retry policy and with Envoy's default backoff.
outlive     killed, and left down until every SVID the sidecars hold has expired
            (1-minute SVIDs): what traffic does, and how fast it recovers on restart.
pause       the process is stopped (SIGSTOP: a laptop asleep, a clock jump) past every
            SVID's expiry and continued: every expired SVID is renewed at once, traffic
            recovers, nothing restarted.
edits       live edits of a config file under traffic (the file watcher reloads each):
            requests sent and failed, config generations served.
hostile     hostile xDS clients against a fleet of simulated proxies (`chaos_clients`).
memory      RSS with a huge valid config, and after it is removed (`chaos_clients`).
config      the hostile config corpus through validate and a live reload.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from xds_server.bench import chaos_clients, hostile_config
from xds_server.bench.chaos_mesh import (
    App,
    ControlPlaneProcess,
    Sidecar,
    Traffic,
    address,
    bootstraps,
    edit,
    new_ca,
    synced,
    wait,
    write_config,
)
from xds_server.bench.report import machine

SCENARIOS = ("restart", "outlive", "pause", "edits", "hostile", "memory", "config")


class Mesh:
    def __init__(
        self,
        workdir: Path,
        services: int,
        svid_ttl: str,
        default_backoff: bool,
        watch: bool = False,
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.apps = [App(f"s{i}") for i in range(services)]
        write_config(workdir / "config", [a.port for a in self.apps])
        new_ca(workdir / "ca")
        self.plane = ControlPlaneProcess(
            workdir / "config", workdir / "ca", workdir / "control-plane.log", svid_ttl, watch
        )
        boots = bootstraps(
            workdir / "config", workdir / "ca", self.plane.xds_address,
            default_backoff=default_backoff,
        )  # fmt: skip
        self.sidecars = [Sidecar(boot, workdir, name) for name, boot in sorted(boots.items())]
        self.proxies = {f"{s.name}.default" for s in self.sidecars}
        paths = [(f"{address(0)}:15001", f"http://s{i}:9080/") for i in range(1, services)]
        paths.append((f"{address(1)}:15001", "http://s0:9080/"))
        self.traffic = Traffic(paths)

    def up(self) -> None:
        self.plane.start()
        self.plane.wait_ready()
        for sidecar in self.sidecars:
            sidecar.start()
        for sidecar in self.sidecars:
            sidecar.wait_ready()
        wait(lambda: synced(self.plane, self.proxies), 60, "every proxy SYNCED")
        self.traffic.start()
        # The fault's figures count from here: a mesh still warming up (a secret or an
        # endpoint not yet everywhere) is no fault of the scenario's.
        self.steady_since: float = wait(
            lambda: self.traffic.steady_after(0, 20), 30, "steady traffic"
        )

    def down(self) -> None:
        self.traffic.stop()
        for sidecar in self.sidecars:
            sidecar.stop()
        self.plane.stop()
        for app in self.apps:
            app.stop()

    def serials(self) -> dict[str, set[str]]:
        return {s.name: s.serials() for s in self.sidecars}

    def latest_expiry(self) -> float:
        return max(t for s in self.sidecars for t in s.expirations())


@contextmanager
def mesh(
    workdir: Path, services: int, svid_ttl: str, default_backoff: bool = False, watch: bool = False
) -> Iterator[Mesh]:
    m = Mesh(workdir, services, svid_ttl, default_backoff, watch)
    try:
        m.up()
        yield m
    finally:
        m.down()


def _changed(before: dict[str, dict[str, str]], after: dict[str, dict[str, str]]) -> list[str]:
    return [
        f"{proxy} {kind}: {version} -> {after.get(proxy, {}).get(kind)}"
        for proxy, kinds in before.items()
        for kind, version in kinds.items()
        if after.get(proxy, {}).get(kind) != version
    ]


def restart(workdir: Path, *, services: int = 3, outage: float = 5.0,
            default_backoff: bool = False, settle: float = 2.0) -> dict[str, Any]:  # fmt: skip
    """SIGKILL the control plane under traffic, start it again after `outage` seconds."""
    with mesh(workdir, services, "24h", default_backoff) as m:
        versions = wait(lambda: synced(m.plane, m.proxies), 30, "every proxy SYNCED")
        serials = m.serials()
        updates = {s.name: s.updates() for s in m.sidecars}
        time.sleep(settle)
        killed = m.plane.kill9()
        time.sleep(outage)
        # Nothing may change while no control plane runs (a foreign server that took
        # the port would show here; --xds-tls prevents that).
        during = sum(s.updates() - updates[s.name] for s in m.sidecars)
        restarted = m.plane.start()
        ready = m.plane.wait_ready()
        after = wait(lambda: synced(m.plane, m.proxies), 120, "every proxy SYNCED again")
        resynced = time.time()
        time.sleep(settle)
        end = time.time()
        metrics = m.plane.get("/metrics")
        return {
            "scenario": "restart",
            "bootstrap_retry_policy": not default_backoff,
            "services": services,
            "outage_s": round(restarted - killed, 2),
            "requests_before": m.traffic.between(m.steady_since, killed),
            "requests_during_outage": m.traffic.between(killed, restarted),
            "requests_after_restart": m.traffic.between(restarted, end),
            "restart_to_ready_s": round(ready - restarted, 3),
            "restart_to_all_synced_s": round(resynced - restarted, 3),
            "ready_to_all_synced_s": round(resynced - ready, 3),
            "versions_changed": _changed(versions, after),
            "certificates_changed": sorted(n for n, s in m.serials().items() if s != serials[n]),
            "envoy_config_updates_during_outage": during,
            "envoy_config_updates_across_restart": sum(
                s.updates() - updates[s.name] for s in m.sidecars
            ),
            "responses_sent_after_restart": _sum_metric(metrics, "pocketmesh_xds_pushes_total"),
            "svids_reused_after_restart": _sum_metric(metrics, "pocketmesh_svids_reused_total"),
            "svids_issued_after_restart": _sum_metric(metrics, "pocketmesh_svids_issued_total"),
        }


def outlive(workdir: Path, *, services: int = 3, margin: float = 3.0) -> dict[str, Any]:
    """Down longer than every SVID's remaining life (1-minute SVIDs), then restarted."""
    with mesh(workdir, services, "1m") as m:
        killed = m.plane.kill9()
        expired = m.latest_expiry()
        time.sleep(max(0.0, expired + margin - time.time()))
        restarted = m.plane.start()
        ready = m.plane.wait_ready()
        wait(lambda: synced(m.plane, m.proxies), 120, "every proxy SYNCED again")
        resynced = time.time()
        steady = wait(lambda: m.traffic.steady_after(restarted), 60, "steady traffic again")
        time.sleep(1)
        first = m.traffic.first_ok_after(restarted)
        return {
            "scenario": "outlive",
            "svid_ttl_s": 60,
            "down_s": round(restarted - killed, 1),
            "requests_down_before_expiry": m.traffic.between(killed, expired),
            "requests_down_after_expiry": m.traffic.between(expired, restarted),
            "requests_after_restart": m.traffic.between(restarted, time.time()),
            "restart_to_ready_s": round(ready - restarted, 3),
            "restart_to_all_synced_s": round(resynced - restarted, 3),
            "restart_to_first_ok_s": None if first is None else round(first - restarted, 3),
            "restart_to_steady_traffic_s": round(steady - restarted, 3),
        }


def pause(workdir: Path, *, services: int = 3, margin: float = 3.0) -> dict[str, Any]:
    """SIGSTOP past every SVID's expiry (the laptop-sleep case), then SIGCONT."""
    with mesh(workdir, services, "1m") as m:
        serials = m.serials()
        paused = m.plane.pause()
        expired = m.latest_expiry()
        time.sleep(max(0.0, expired + margin - time.time()))
        resumed = m.plane.resume()
        renewed = wait(
            lambda: all(m.serials()[n] != serials[n] for n in serials) and time.time(),
            60,
            "every sidecar holding a renewed SVID",
        )
        steady = wait(lambda: m.traffic.steady_after(resumed), 60, "steady traffic again")
        time.sleep(1)
        log = (workdir / "control-plane.log").read_text(errors="replace")
        stamps = _renewal_times(log, after=resumed)
        first = m.traffic.first_ok_after(resumed)
        return {
            "scenario": "pause",
            "svid_ttl_s": 60,
            "paused_s": round(resumed - paused, 1),
            "requests_paused_before_expiry": m.traffic.between(paused, expired),
            "requests_paused_after_expiry": m.traffic.between(expired, resumed),
            "requests_after_resume": m.traffic.between(resumed, time.time()),
            "svids_renewed_on_wake": len(stamps),
            "renewals_spread_s": round(max(stamps) - min(stamps), 3) if stamps else None,
            "resume_to_all_renewed_in_envoy_s": round(renewed - resumed, 3),
            "resume_to_first_ok_s": None if first is None else round(first - resumed, 3),
            "resume_to_steady_traffic_s": round(steady - resumed, 3),
        }


def edits(
    workdir: Path, *, services: int = 3, count: int = 50, seconds: float = 10.0
) -> dict[str, Any]:
    """`count` live edits of a config file in `seconds`, under traffic."""
    with mesh(workdir, services, "24h", watch=True) as m:
        generation = m.plane.get("/debug/config")["generation"]
        started = time.time()
        for number in range(count):
            edit(m.workdir / "config", number)
            time.sleep(seconds / count)
        wait(lambda: synced(m.plane, m.proxies), 60, "every proxy SYNCED after the edits")
        time.sleep(1)
        config = m.plane.get("/debug/config")
        return {
            "scenario": "edits",
            "edits": count,
            "over_s": seconds,
            "requests_during_and_after": m.traffic.between(started, time.time()),
            "config_generations_served": config["generation"] - generation,
            "config_errors": config["errors"],
        }


_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*renewed SVID for", re.M)


def _renewal_times(log: str, after: float) -> list[float]:
    from datetime import datetime

    stamps = []
    for match in _LOG_TIME.finditer(log):
        when = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if when >= after - 1:
            stamps.append(when)
    # Only the first burst after waking: later ones are the ordinary half-life renewals.
    return [s for s in stamps if stamps and s - stamps[0] < 5]


def _sum_metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def run(scenarios: tuple[str, ...], *, small: bool, workdir: Path | None = None) -> dict[str, Any]:
    """Every figure of the chosen scenarios; `small` is the CI size (seconds, not minutes)."""
    owned = None
    if workdir is None:
        owned = tempfile.TemporaryDirectory(prefix="pocketmesh-chaos-")
        workdir = Path(owned.name)
    out: dict[str, Any] = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "size": "small" if small else "full",
        "chaos": [],
    }
    outage = 2.0 if small else 15.0
    try:
        for name in scenarios:
            where = workdir / name
            if name == "restart":
                out["chaos"].append(restart(where / "retry-policy", outage=outage))
                if not small:
                    out["chaos"].append(
                        restart(where / "envoy-default", outage=outage, default_backoff=True)
                    )
            elif name == "outlive":
                out["chaos"].append(outlive(where))
            elif name == "pause":
                out["chaos"].append(pause(where))
            elif name == "edits":
                count, seconds = (20, 4.0) if small else (50, 10.0)
                out["chaos"].append(edits(where, count=count, seconds=seconds))
            elif name == "hostile":
                out["chaos"].append(chaos_clients.hostile(where, small=small))
            elif name == "memory":
                out["chaos"].append(chaos_clients.memory(where, small=small))
            elif name == "config":
                figures = hostile_config.run(
                    60 if small else None, where, live=15 if small else 60,
                    huge_mb=1 if small else 5,
                )  # fmt: skip
                out["chaos"].append({"scenario": "config", **figures})
            else:
                raise ValueError(f"unknown chaos scenario {name!r}; one of {SCENARIOS}")
    finally:
        if owned is not None:
            owned.cleanup()
        else:
            shutil.rmtree(workdir / "tmp", ignore_errors=True)
    out["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return out


def _flat(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, dict) and not (set(value) <= {"sent", "failed", "why"}):
        rows = []
        for key, child in value.items():
            rows += _flat(child, f"{prefix}{key}.")
        return rows
    return [(prefix.rstrip("."), value)]


def _show(value: Any) -> str:
    if isinstance(value, dict) and set(value) <= {"sent", "failed", "why"}:
        why = ", ".join(f"{k} x{v}" for k, v in value.get("why", {}).items())
        return f"{value['failed']} failed of {value['sent']}" + (f" ({why})" if why else "")
    if isinstance(value, list):
        return "none" if not value else "; ".join(str(v) for v in value[:5])
    return str(value)


def render(results: dict[str, Any]) -> str:
    """The figures as Markdown: one table per scenario."""
    m = results.get("machine", {})
    lines = [
        f"pocketmesh bench --chaos ({results.get('size')}): {m.get('nproc')} CPUs, "
        f"{m.get('cpu_model')}, {results.get('started_at')}"
    ]
    for scenario in results.get("chaos", []):
        title = scenario.get("scenario", "?")
        if title == "restart":
            policy = (
                "bootstrap retry policy"
                if scenario["bootstrap_retry_policy"]
                else ("Envoy's default backoff")
            )
            title = f"restart ({policy})"
        lines += ["", f"**{title}**", "", "| figure | value |", "|---|---|"]
        for key, value in scenario.items():
            if key == "scenario":
                continue
            for name, leaf in _flat({key: value}):
                lines.append(f"| {name} | {_show(leaf)} |")
    return "\n".join(lines) + "\n"
