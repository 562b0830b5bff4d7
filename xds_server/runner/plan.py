"""What `pocketmesh up` runs for a mesh config: a sidecar per WorkloadEntry, the local
apps the config asks for, and the URL to open.

A WorkloadEntry asks for a local app with annotations:

    metadata:
      annotations:
        pocketmesh.io/app: demo-app                  # the built-in `pocketmesh demo-app`
        pocketmesh.io/calls: http://reviews:9080/    # upstreams it calls (comma-separated)

The app listens where the sidecar hands inbound traffic (the Sidecar's ingress
`defaultEndpoint`, else 127.0.0.1:<port>), exactly as the generators plan it, and
calls upstreams through the sidecar's HTTP proxy on `<workload address>:15001`.
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from xds_server.galley.model import MeshConfig, WorkloadEntry
from xds_server.generators import naming
from xds_server.generators.push_context import InboundPlan, PushContext

APP_ANNOTATION = "pocketmesh.io/app"
CALLS_ANNOTATION = "pocketmesh.io/calls"
# The apps `up` knows how to run, and the module that runs each with `python -m`.
APPS = {"demo-app": "xds_server.commands.demo_app"}
YAML_SUFFIXES = (".yaml", ".yml")


class PlanError(Exception):
    """The config is valid Istio, but `up` cannot run it on this machine."""


@dataclass(frozen=True, slots=True)
class AppPlan:
    workload: WorkloadEntry
    app: str
    listen: str  # host:port the sidecar forwards inbound traffic to
    proxy: str  # the sidecar's outbound HTTP proxy
    calls: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.workload.meta.name

    def argv(self, pocketmesh: Sequence[str] | None = None) -> list[str]:
        """The app's command line: `pocketmesh` is how to invoke the CLI (docker-compose
        says ["pocketmesh"]); by default the app's own module, lighter than the CLI."""
        labels = self.workload.labels
        if pocketmesh is None:
            argv = [sys.executable, "-m", APPS[self.app]]
        else:
            argv = [*pocketmesh, self.app]
        argv += ["--service", labels.get("app", self.name), "--version", labels.get("version", "")]
        argv += ["--workload", self.name, "--listen", self.listen, "--proxy", self.proxy]
        for url in self.calls:
            argv += ["--call", url]
        return argv


@dataclass(frozen=True, slots=True)
class Entry:
    """Where a user starts: the ingress gateway if there is one, else the root app."""

    url: str
    via: str  # which workload answers it, and why it was chosen
    host: str = ""  # the Host header to send, when the gateway routes by host

    @property
    def curl(self) -> str:
        return f"curl -H 'Host: {self.host}' {self.url}" if self.host else f"curl {self.url}"


@dataclass(frozen=True, slots=True)
class MeshPlan:
    workloads: tuple[WorkloadEntry, ...]  # one Envoy each
    apps: tuple[AppPlan, ...]
    entry: Entry | None


def plan_mesh(
    config: MeshConfig, sources: Path | Sequence[Path], *, local: bool = True
) -> MeshPlan:
    """`sources`: the config's files or directories (annotations are read from them).
    `local`: every workload must run on this machine (loopback addresses)."""
    ctx = PushContext.build(config)
    annotations = read_annotations(sources)
    apps: list[AppPlan] = []
    inbound: dict[str, InboundPlan] = {}
    listening: dict[str, str] = {}
    for we in config.workload_entries:
        if local:
            _check_local(we)
        proxy = ctx.proxy(we.proxy_id)
        plans = proxy.inbound if proxy else ()
        if plans:
            inbound[we.proxy_id] = next((p for p in plans if naming.is_http(p.protocol)), plans[0])
        notes = annotations.get((we.meta.namespace, we.meta.name), {})
        app = notes.get(APP_ANNOTATION)
        if app is None:
            continue
        where = f"{we.meta.source}: WorkloadEntry {we.meta.key}: metadata.annotations"
        if app not in APPS:
            raise PlanError(
                f"{where}.{APP_ANNOTATION}: unknown app {app!r} (known: {', '.join(APPS)})"
            )
        if we.proxy_id not in inbound:
            raise PlanError(f"{where}: no inbound port for the app (add a ServiceEntry or Sidecar)")
        target = inbound[we.proxy_id]
        listen = f"{target.upstream_host}:{target.upstream_port}"
        if listen in listening:
            raise PlanError(f"{where}: app would listen on {listen}, as {listening[listen]} does")
        listening[listen] = we.meta.key
        calls = tuple(u.strip() for u in notes.get(CALLS_ANNOTATION, "").split(",") if u.strip())
        proxy_address = f"{we.address}:{naming.OUTBOUND_HTTP_PORT}"
        apps.append(AppPlan(we, app, listen, proxy_address, calls))
    entry = _gateway_entry(config) or _root_app_entry(apps, inbound)
    return MeshPlan(config.workload_entries, tuple(apps), entry)


def read_annotations(sources: Path | Sequence[Path]) -> dict[tuple[str, str], dict[str, str]]:
    """WorkloadEntry annotations, by (namespace, name), from the raw YAML.

    Galley validates annotations but keeps them out of the mesh model (the
    generators have no use for them); `up` is their only reader.
    """
    found: dict[tuple[str, str], dict[str, str]] = {}
    paths: list[Path] = []
    for source in [sources] if isinstance(sources, Path) else sources:
        if source.is_file():
            paths.append(source)
            continue
        # As the loader does: hidden entries are backups, .git, a ConfigMap's ..data.
        for path in sorted(source.rglob("*")):
            if not any(part.startswith(".") for part in path.relative_to(source).parts):
                paths.append(path)
    for path in paths:
        if path.suffix not in YAML_SUFFIXES or not path.is_file():
            continue
        try:
            docs = list(yaml.safe_load_all(path.read_text()))
        except (OSError, yaml.YAMLError):
            continue  # the loader already reported it
        for doc in _flatten(docs):
            meta = doc.get("metadata")
            if doc.get("kind") != "WorkloadEntry" or not isinstance(meta, dict):
                continue
            notes = meta.get("annotations")
            if isinstance(notes, dict):
                key = (str(meta.get("namespace") or "default"), str(meta.get("name")))
                found[key] = {str(k): str(v) for k, v in notes.items()}
    return found


def _flatten(docs: list[Any]) -> list[Mapping[str, Any]]:
    out: list[Mapping[str, Any]] = []
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") == "List":
            out += [d for d in doc.get("items") or () if isinstance(d, dict)]
        elif isinstance(doc, dict):
            out.append(doc)
    return out


def _check_local(we: WorkloadEntry) -> None:
    try:
        loopback = ipaddress.ip_address(we.address).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise PlanError(
            f"{we.meta.source}: WorkloadEntry {we.meta.key}: spec.address: {we.address} is not "
            "a loopback address; `pocketmesh up` runs every workload on this machine (127.x)"
        )


def _gateway_entry(config: MeshConfig) -> Entry | None:
    """The first Gateway's first server, on the WorkloadEntry its selector picks."""
    for gateway in config.gateways:
        if not gateway.servers:
            continue
        server = gateway.servers[0]
        for we in config.workload_entries:
            if gateway.selects(we.labels):
                # A server for specific hosts routes by Host: the URL alone would get a 404.
                host = server.hosts[0].split("/", 1)[-1] if server.hosts else "*"
                return Entry(
                    f"http://{we.address}:{server.port}/",
                    f"{we.proxy_id}, Gateway {gateway.meta.key}",
                    "" if "*" in host else host,
                )
    return None


def _root_app_entry(apps: list[AppPlan], inbound: Mapping[str, InboundPlan]) -> Entry | None:
    """No gateway: the sidecar inbound of the first app that no other app calls."""
    called = {_host_of(url) for app in apps for url in app.calls}
    for app in apps:
        if app.workload.labels.get("app", app.name) not in called:
            plan = inbound[app.workload.proxy_id]
            return Entry(
                f"http://{plan.bind}:{plan.port}/", f"the sidecar of {app.workload.proxy_id}"
            )
    return None


def _host_of(url: str) -> str:
    authority = url.split("://", 1)[-1].split("/", 1)[0]
    return authority.rsplit(":", 1)[0].split(".", 1)[0]
