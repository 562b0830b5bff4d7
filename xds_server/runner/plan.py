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
`pocketmesh.io/app: tcp-echo` runs Istio's tcp-echo instead (for TCP services), and
`pocketmesh.io/app: ext-authz` Istio's ext_authz sample (its HTTP API on the workload's
HTTP port, its gRPC API on its GRPC port).

Any document may carry `pocketmesh.io/try: <one command>`: `up` prints it under the
URL, as the thing to try first (an example's documented effect); `{dir}` in it
becomes the directory of its file, `{logs}` the directory of the apps' logs.
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from xds_server.galley.model import MeshConfig, ServiceEntry, WorkloadEntry, labels_match
from xds_server.generators import naming
from xds_server.generators.push_context import InboundPlan, PushContext

APP_ANNOTATION = "pocketmesh.io/app"
CALLS_ANNOTATION = "pocketmesh.io/calls"
TRY_ANNOTATION = "pocketmesh.io/try"
# The apps `up` knows how to run: the module each runs with `python -m`, the CLI
# command, and its protocol.
APPS = {
    "demo-app": ("xds_server.commands.demo_app", "demo-app", "http"),
    "tcp-echo": ("xds_server.commands.demo_app", "demo-app", "tcp"),
    "ext-authz": ("xds_server.commands.ext_authz", "ext-authz", "http"),
}
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
    grpc_listen: str = ""  # ext-authz: where its gRPC API listens (the GRPC port's target)

    @property
    def name(self) -> str:
        return self.workload.meta.name

    @property
    def protocol(self) -> str:
        return APPS[self.app][2]

    def argv(self, pocketmesh: Sequence[str] | None = None) -> list[str]:
        """The app's command line: `pocketmesh` is how to invoke the CLI (docker-compose
        says ["pocketmesh"]); by default the app's own module, lighter than the CLI."""
        labels = self.workload.labels
        module, command, protocol = APPS[self.app]
        argv = [sys.executable, "-m", module] if pocketmesh is None else [*pocketmesh, command]
        argv += ["--service", labels.get("app", self.name), "--version", labels.get("version", "")]
        argv += ["--workload", self.name, "--listen", self.listen, "--proxy", self.proxy]
        if protocol != "http":
            argv += ["--protocol", protocol]
        for url in self.calls:
            argv += ["--call", url]
        if self.grpc_listen:
            argv += ["--grpc-listen", self.grpc_listen]
        return argv


@dataclass(frozen=True, slots=True)
class Entry:
    """Where a user starts: the ingress gateway if there is one, else the root app."""

    url: str
    via: str  # which workload answers it, and why it was chosen
    host: str = ""  # the Host header to send, when the gateway routes by host
    proxy: str = ""  # a client sidecar's HTTP proxy to send it through (curl -x)
    tcp: bool = False  # a TCP service: no URL, a connection
    resolve: str = ""  # HTTPS: the address the URL's name stands for (curl --resolve)

    @property
    def curl(self) -> str:
        if self.resolve:
            authority = self.url.split("://", 1)[1].split("/", 1)[0]
            return f"curl -k --resolve {authority}:{self.resolve} {self.url}"
        if self.tcp:
            return f"echo hello | curl -s telnet://{self.url}"
        if self.proxy:
            return f"curl -x http://{self.proxy} {self.url}"
        return f"curl -H 'Host: {self.host}' {self.url}" if self.host else f"curl {self.url}"


@dataclass(frozen=True, slots=True)
class MeshPlan:
    workloads: tuple[WorkloadEntry, ...]  # one Envoy each
    apps: tuple[AppPlan, ...]
    entry: Entry | None
    tries: tuple[str, ...] = ()  # the `pocketmesh.io/try` lines, in file order

    def app_of(self, proxy_id: str) -> AppPlan | None:
        return next((a for a in self.apps if a.workload.proxy_id == proxy_id), None)


def plan_mesh(
    config: MeshConfig, sources: Path | Sequence[Path], *, local: bool = True
) -> MeshPlan:
    """`sources`: the config's files or directories (annotations are read from them).
    `local`: every workload must run on this machine (loopback addresses)."""
    ctx = PushContext.build(config)
    annotations, tries = _scan(sources)
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
        grpc_listen = ""
        if app == "ext-authz":  # both APIs: HTTP on the HTTP port, gRPC on the GRPC one
            http1 = [
                p for p in plans if naming.is_http(p.protocol) and not naming.is_http2(p.protocol)
            ]
            grpc = [p for p in plans if naming.is_http2(p.protocol)]
            if not http1:  # `up` proves the app is its own on the HTTP port
                raise PlanError(f"{where}: ext-authz needs an HTTP port (and a GRPC one)")
            target = http1[0]
            grpc_listen = f"{grpc[0].upstream_host}:{grpc[0].upstream_port}" if grpc else ""
        listen = f"{target.upstream_host}:{target.upstream_port}"
        for address in (listen, grpc_listen):
            if address and address in listening:
                raise PlanError(
                    f"{where}: app would listen on {address}, as {listening[address]} does"
                )
            if address:
                listening[address] = we.meta.key
        calls = tuple(u.strip() for u in notes.get(CALLS_ANNOTATION, "").split(",") if u.strip())
        proxy_address = f"{we.address}:{naming.OUTBOUND_HTTP_PORT}"
        apps.append(AppPlan(we, app, listen, proxy_address, calls, grpc_listen))
    entry = _gateway_entry(config) or _client_entry(config, apps) or _root_app_entry(apps, inbound)
    return MeshPlan(config.workload_entries, tuple(apps), entry, tuple(tries))


Annotations = dict[tuple[str, str], dict[str, str]]


def read_annotations(sources: Path | Sequence[Path]) -> Annotations:
    """WorkloadEntry annotations, by (namespace, name), from the raw YAML."""
    return _scan(sources)[0]


def _scan(sources: Path | Sequence[Path]) -> tuple[Annotations, list[str]]:
    """WorkloadEntry annotations, and every `pocketmesh.io/try` line of any document in
    file order.

    Galley validates annotations but keeps them out of the mesh model (the
    generators have no use for them); `up` is their only reader.
    """
    found: dict[tuple[str, str], dict[str, str]] = {}
    tries: list[str] = []
    seen: set[Path] = set()
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
        if path.suffix not in YAML_SUFFIXES or not path.is_file() or path.resolve() in seen:
            continue
        seen.add(path.resolve())  # as the loader does: a file linked twice is read once
        try:
            docs = list(yaml.safe_load_all(path.read_text()))
        except (OSError, yaml.YAMLError):
            continue  # the loader already reported it
        for doc in _flatten(docs):
            meta = doc.get("metadata")
            notes = meta.get("annotations") if isinstance(meta, dict) else None
            if not isinstance(meta, dict) or not isinstance(notes, dict):
                continue
            if TRY_ANNOTATION in notes:
                line = str(notes[TRY_ANNOTATION]).strip()
                tries.append(line.replace("{dir}", str(path.parent)))
            if doc.get("kind") == "WorkloadEntry":
                key = (str(meta.get("namespace") or "default"), str(meta.get("name")))
                found[key] = {str(k): str(v) for k, v in notes.items()}
    return found, tries


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
    """The first Gateway's first server, on the WorkloadEntry its selector picks; the
    path is the first one a VirtualService bound to that Gateway routes (`/` else)."""
    for gateway in config.gateways:
        if not gateway.servers:
            continue
        server = gateway.servers[0]
        for we in config.workload_entries:
            if not gateway.selects(we.labels):
                continue
            # A server for specific hosts routes by Host: the URL alone would get a 404.
            host = server.hosts[0].split("/", 1)[-1] if server.hosts else "*"
            host = "" if "*" in host else host
            path = _routed_path(config, gateway.meta.namespace, gateway.meta.name)
            via = f"{we.proxy_id}, Gateway {gateway.meta.key}"
            if server.protocol == "TCP":  # a connection, not a URL
                return Entry(f"{we.address}:{server.port}", via, tcp=True)
            if server.tls is not None and not server.tls.https_redirect:
                name = host or "localhost"
                return Entry(f"https://{name}:{server.port}{path}", via, resolve=we.address)
            return Entry(f"http://{we.address}:{server.port}{path}", via, host)
    return None


def _routed_path(config: MeshConfig, namespace: str, name: str) -> str:
    for vs in config.virtual_services:
        bound = {g if "/" in g else f"{vs.meta.namespace}/{g}" for g in vs.gateways}
        if f"{namespace}/{name}" not in bound:
            continue
        for route in vs.http:
            for match in route.match:
                if match.uri is not None and match.uri.kind in ("exact", "prefix"):
                    return match.uri.value if match.uri.value.startswith("/") else "/"
            if not route.match:
                return "/"
    return "/"


def _client_entry(config: MeshConfig, apps: list[AppPlan]) -> Entry | None:
    """No gateway, but a client: a workload with no app that no service selects (Istio's
    `sleep`). Requests go through its sidecar, so its VirtualServices apply: the entry
    is the first service that runs an app here, asked through that sidecar."""
    with_app = {a.workload.proxy_id for a in apps}
    client = next(
        (w for w in config.workload_entries
         if w.proxy_id not in with_app
         and not any(_selects(se, w) for se in config.service_entries)),
        None,
    )  # fmt: skip
    if client is None:
        return None
    called = {_host_of(url) for app in apps for url in app.calls}

    def rank(se: ServiceEntry) -> tuple[int, int, int]:
        """Prefer the head of a call chain (calls others, called by none), then any
        service nobody calls, then the rest; an ext_authz server (the sidecars call it,
        not the user) last."""
        backing = [a for a in apps if _selects(se, a.workload)]
        uncalled = se.hosts[0].split(".", 1)[0] not in called
        helper = all(a.app == "ext-authz" for a in backing)
        return (1 if helper else 0, 0 if uncalled else 1, 0 if any(a.calls for a in backing) else 1)

    runnable = [
        se for se in config.service_entries
        if se.hosts and se.ports and any(_selects(se, a.workload) for a in apps)
    ]  # fmt: skip
    for se in sorted(runnable, key=rank):
        port = se.ports[0]
        host = se.hosts[0]
        if se.meta.namespace == client.meta.namespace:
            host = host.split(".", 1)[0]  # the short name, as an app of its namespace says
        via = f"the sidecar of {client.proxy_id}, a client"
        if not naming.is_http(port.protocol):
            return Entry(f"{client.address}:{port.number}", via, tcp=True)
        proxy = f"{client.address}:{naming.OUTBOUND_HTTP_PORT}"
        return Entry(f"http://{host}:{port.number}/", via, proxy=proxy)
    return None


def _selects(se: ServiceEntry, we: WorkloadEntry) -> bool:
    return (
        se.workload_selector is not None
        and se.meta.namespace == we.meta.namespace
        and labels_match(se.workload_selector, we.labels)
    )


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
